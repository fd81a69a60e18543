"""Benchmark of the learned classifier (``postroom.classify``) on 20 Newsgroups and BANKING77.

Data is read in place from ``shared/data`` (never copied into the repository):

* ``20news-bydate.tar.gz`` — RFC 822 messages; the classifier sees what the pipeline gives it:
  subject, sender name and address, body (other headers such as Organization are dropped).
  The bydate split is by time (train older than test). The messages carry no Date header, so
  "date order" inside the test split is approximated by article number (chronological within
  a newsgroup), interleaving groups at the same relative pace.
* ``banking77/`` — short customer-service intents, ``text,category``; each text is the body
  of a view with no subject or sender.

Figures (keys ``classify.*``). "Default" is ``ClassifierConfig()``: the fast stage alone
(hashed word and character n-grams, linear SVM); "cascade" is
``ClassifierConfig.with_two_encoders()`` (``POSTROOM_CLASSIFIER_EMBEDDER=e5+minilm``), which
asks e5 and MiniLM, with a vote of the nearest examples, when its fast stage (logistic
regression over n-grams and WordLlama) is unsure.

* ``20ng_accuracy`` — default, trained on the whole train split, then the test split streamed
  in date order as the product handles it (:func:`stream` without corrections): conversation
  memory (empty at first, as in the product; filled by the model's own decisions), then the
  model; decisions at or above :data:`LEARN_CONFIDENCE` are learned as nobody corrects them
  (no test label is used).
  ``20ng_frozen_accuracy`` — the same model, not learning, on the whole test split at once.
  (The cascade is not measured here: e5 needs ~130 ms per message on 2 cores, ~40 minutes for
  the 18,846 messages.)
* ``20ng_baseline_accuracy`` — TF-IDF word 1–2-grams, sublinear tf, LinearSVC(C=0.5) on the
  same text (subject, sender, body), in the same run.
* ``banking77_accuracy`` / ``banking77_baseline_accuracy`` — cascade, full train set, vs the
  same baseline. Each intent's name is its category's description (see :func:`descriptions`),
  as the product trains on what a person types in the editor;
  ``banking77_no_description_accuracy`` — the same without descriptions.
* ``banking77_10shot_accuracy`` — cascade, 10 examples per intent and the descriptions, mean
  of 5 seeded draws; ``banking77_10shot_no_description_accuracy`` the same draws without.
* ``20ng_online_accuracy`` — default, starting from 5 examples per newsgroup (seeded draw
  from the train split), then the test split in date order through :func:`stream` with
  corrections: each mistake is corrected with :meth:`Classifier.learn`, confident decisions
  left standing are learned with :meth:`Classifier.observe`, and :meth:`Classifier.retrain`
  runs whenever :meth:`Classifier.needs_retrain` says so (as the fold job would).
  Cumulative accuracy of the stream.
* ``p50_ms`` / ``mps`` — default: one email at a time through :meth:`Classifier.predict`,
  feature extraction included, with the online model at the end of its run, on the first
  1,000 test emails; ``p50_fast_ms`` the same with the 20NG model trained on all 11,314.
  ``p50_cascade_ms`` / ``mps_cascade`` — cascade, the full BANKING77 model, 500 test texts;
  ``p50_cascade_10shot_ms`` / ``mps_cascade_10shot`` the same for the first 10-shot model (300
  texts); ``cascade_slow_share`` / ``cascade_10shot_slow_share`` the share of test texts the
  full / first 10-shot model sends to the encoders. ``mps_cascade`` and ``mps_cascade_10shot``
  are guessed a delta page (50) at a time with :meth:`Classifier.predict_many`, as the product
  guesses a sync page (``learning.service.PagePredictions``); ``…_one_by_one`` is the same
  model one email at a time (the baseline, and what a real-time page of one email costs).
  All timings run on the real encoders, never on the benchmark's embedding cache.
* ``update_ms`` — median time of a correction in the online run: making the example
  (hashing) and :meth:`Classifier.learn`. ``state_save_ms`` — what the product adds to
  each correction: :func:`dump_state` of the model at the end of the online run
  (``state_examples`` examples, ``state_mb`` megabytes; the database write not counted):
  since the update log, only a retrain or fold (a background job) writes it.
  ``correction_path_ms`` — what a correction costs the product now: copy of the cached model,
  example, learning step and the bytes of its update row (``update_row_kb``), see
  :func:`correction_path`.

Nothing here was tuned on a test split. Run alone: ``python -m benchmarks.bench_classify``
(or with ``20ng`` or ``banking77`` for one part).
"""

from __future__ import annotations

import csv
import email
import email.policy
import sys
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path

import numpy as np

from postroom.classify import (
    Classifier,
    ClassifierConfig,
    ConversationMemory,
    Example,
    dump_state,
    example_state,
    from_conversation,
)
from postroom.classify.features import long_text
from postroom.processing.view import Address, MessageView

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if not DATA.exists():
    DATA = Path("/work/shared/data")
TWENTY_NEWSGROUPS = DATA / "20news-bydate.tar.gz"
BANKING77 = DATA / "banking77"
SEED = 0
LEARN_CONFIDENCE = 0.9
"""``POSTROOM_LEARN_CONFIDENCE``'s default: decisions this sure are learned unless corrected."""


@dataclass(frozen=True)
class Labelled:
    view: MessageView
    category: str
    order: float = 0.0


def _text(value: object) -> str:
    return str(value or "")


def load_20ng() -> tuple[list[Labelled], list[Labelled]]:
    """(train, test) in article order per group; test interleaved by relative date."""
    rows: dict[str, dict[str, list[tuple[int, MessageView]]]] = {"train": {}, "test": {}}
    with tarfile.open(TWENTY_NEWSGROUPS) as archive:
        for member in archive:
            if not member.isfile():
                continue
            split_name, group, article = member.name.split("/")
            handle = archive.extractfile(member)
            assert handle is not None
            message = email.message_from_bytes(handle.read(), policy=email.policy.compat32)
            name, address = parseaddr(_text(message.get("From")))
            payload = message.get_payload()
            view = MessageView(
                subject=_text(message.get("Subject")),
                sender=Address(name, address),
                body_text=payload if isinstance(payload, str) else str(payload),
            )
            split = "train" if split_name.endswith("train") else "test"
            rows[split].setdefault(group, []).append((int(article), view))
    out: dict[str, list[Labelled]] = {}
    for split, groups in rows.items():
        items: list[Labelled] = []
        for group in sorted(groups):
            ordered = sorted(groups[group], key=lambda pair: pair[0])
            for rank, (_, view) in enumerate(ordered):
                items.append(Labelled(view, group, (rank + 0.5) / len(ordered)))
        out[split] = sorted(items, key=lambda item: (item.order, item.category))
    return out["train"], out["test"]


def load_banking77() -> tuple[list[Labelled], list[Labelled]]:
    def read(name: str) -> list[Labelled]:
        with (BANKING77 / name).open(encoding="utf-8", newline="") as handle:
            return [
                Labelled(MessageView(body_text=row["text"]), row["category"])
                for row in csv.DictReader(handle)
            ]

    return read("train.csv"), read("test.csv")


def baseline_accuracy(train: list[Labelled], test: list[Labelled]) -> float:
    """TF-IDF word 1–2-grams, sublinear tf, LinearSVC(C=0.5) on the view's text."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.svm import LinearSVC

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    train_rows = vectorizer.fit_transform([long_text(item.view) for item in train])
    model = LinearSVC(C=0.5, random_state=SEED).fit(train_rows, [i.category for i in train])
    predicted = model.predict(vectorizer.transform([long_text(item.view) for item in test]))
    return float(np.mean(predicted == np.array([item.category for item in test])))


def accuracy(classifier: Classifier, test: list[Labelled], batch: int = 256) -> float:
    right = 0
    for start in range(0, len(test), batch):
        chunk = test[start : start + batch]
        predictions = classifier.predict_many([item.view for item in chunk])
        pairs = zip(predictions, chunk, strict=True)
        right += sum(p.category == item.category for p, item in pairs)
    return right / len(test)


def make_examples(classifier: Classifier, items: list[Labelled], batch: int = 256) -> list[Example]:
    examples: list[Example] = []
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        examples += classifier.make_examples(
            [i.view for i in chunk], [i.category for i in chunk], "user_example"
        )
    return examples


def few_shot(items: list[Labelled], per_category: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    by_category: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        by_category.setdefault(item.category, []).append(index)
    chosen: list[int] = []
    for category in sorted(by_category):
        members = by_category[category]
        chosen += sorted(rng.choice(members, size=per_category, replace=False).tolist())
    return chosen


PAGE = 50
"""Emails per delta page (``GraphClient.delta``'s ``page_size``): the product guesses a page's
emails in one :meth:`Classifier.predict_many` (``learning.service.PagePredictions``)."""


def latency(classifier: Classifier, items: list[Labelled]) -> tuple[float, float]:
    """(p50 ms, messages per second) predicting one message at a time, on the real encoders
    (a cached vector would skip the encoders' work)."""
    from benchmarks.cache import real_encoders

    timings: list[float] = []
    with real_encoders():
        classifier.predict(items[0].view)  # (loads the encoders)
        started = time.perf_counter()
        for item in items:
            begin = time.perf_counter()
            classifier.predict(item.view)
            timings.append(time.perf_counter() - begin)
        elapsed = time.perf_counter() - started
    return float(np.median(timings) * 1000), len(items) / elapsed


def paged(classifier: Classifier, items: list[Labelled]) -> float:
    """Messages per second guessed a delta page (:data:`PAGE`) at a time, as a sync page is,
    on the real encoders."""
    from benchmarks.cache import real_encoders

    with real_encoders():
        classifier.predict(items[0].view)
        started = time.perf_counter()
        for first in range(0, len(items), PAGE):
            classifier.predict_many([item.view for item in items[first : first + PAGE]])
        elapsed = time.perf_counter() - started
    return len(items) / elapsed


def log(message: str) -> None:
    print(f"   [{time.strftime('%H:%M:%S')}] {message}", flush=True)


def stream(
    classifier: Classifier,
    memory: ConversationMemory,
    items: list[Labelled],
    *,
    corrections: bool,
    progress: str,
) -> tuple[float, list[float]]:
    """Messages one at a time in date order, as the product handles them: conversation memory
    first (a conversation a person corrected is always followed, one the model filed only when
    the model is unsure), then the model; a decision at or above :data:`LEARN_CONFIDENCE` that
    nobody corrects is learned (:meth:`Classifier.observe`), and with ``corrections`` every
    mistake is corrected (:meth:`Classifier.learn`) as a person would in Outlook. Retrains
    when the classifier says so (the product's fold job). Returns (cumulative accuracy,
    correction times in seconds)."""
    right, retrains = 0, 0
    updates: list[float] = []
    for seen, item in enumerate(items, start=1):
        prediction = from_conversation(
            classifier.predict(item.view), memory.recall(item.view), known=classifier.categories
        )
        final, corrected = prediction.category, False
        right += prediction.category == item.category
        if corrections and prediction.category != item.category:
            begin = time.perf_counter()
            classifier.learn(
                classifier.make_example(item.view, item.category, "correction", key=seen)
            )
            updates.append(time.perf_counter() - begin)
            final, corrected = item.category, True
        elif final is not None and prediction.confidence >= LEARN_CONFIDENCE:
            # Left standing: learned as decided (without corrections, mistakes included).
            classifier.observe(classifier.make_example(item.view, final, "decision", key=seen))
        if final is not None:
            memory.remember(item.view, final, by_person=corrected)
        if classifier.needs_retrain():
            classifier.retrain()
            retrains += 1
        if seen % 1000 == 0:
            log(f"{progress}: {seen} seen, accuracy {right / seen:.4f}, {retrains} retrains")
    return right / len(items), updates


def run_20ng(results: dict[str, float]) -> tuple[list[Labelled], list[Labelled]]:
    train, test = load_20ng()
    log(f"20NG: {len(train)} train, {len(test)} test messages")
    results["classify.20ng_baseline_accuracy"] = baseline_accuracy(train, test)
    log(f"20NG baseline {results['classify.20ng_baseline_accuracy']:.4f}")
    classifier = Classifier(ClassifierConfig(seed=SEED))
    classifier.fit(make_examples(classifier, train))
    log("20NG model trained")
    results["classify.20ng_frozen_accuracy"] = accuracy(classifier, test)
    log(f"20NG frozen model {results['classify.20ng_frozen_accuracy']:.4f}")
    results["classify.p50_fast_ms"], _ = latency(classifier, test[:1000])
    results["classify.20ng_accuracy"], _ = stream(
        classifier, ConversationMemory(), test, corrections=False, progress="20NG as deployed"
    )
    log(f"20NG as deployed {results['classify.20ng_accuracy']:.4f}")
    return train, test


def run_unconfigured(
    results: dict[str, float], train: list[Labelled], test: list[Labelled]
) -> None:
    """Mail that belongs to none of the categories: a mailbox configured for 10 of the 20
    newsgroups (a seeded half) also receives the other 10. What a person wants is that such
    mail stays below the threshold (needs review) while configured mail is filed right.

    ``unconfigured_filed_share_{5shot,full}`` — share of the other groups' test mail that the
    model files anyway (confidence ≥ :data:`~postroom.learning.models.DEFAULT_THRESHOLD`);
    ``configured_filed_right_share_{5shot,full}`` — share of the configured groups' mail filed
    into its own category at that threshold. No product behaviour depends on these yet; they
    are the baseline for a "none of these" signal."""
    from postroom.learning.models import DEFAULT_THRESHOLD

    groups = sorted({item.category for item in train})
    configured = set(np.random.default_rng(SEED).permutation(groups)[: len(groups) // 2])
    known = [item for item in train if item.category in configured]
    inside = [item for item in test if item.category in configured]
    outside = [item for item in test if item.category not in configured]
    for name, chosen in (("5shot", [known[i] for i in few_shot(known, 5, SEED)]), ("full", known)):
        classifier = Classifier(ClassifierConfig(seed=SEED))
        classifier.fit(make_examples(classifier, chosen))
        filed_right = filed_outside = 0
        for items, is_inside in ((inside, True), (outside, False)):
            for start in range(0, len(items), 256):
                chunk = items[start : start + 256]
                for p, item in zip(
                    classifier.predict_many([i.view for i in chunk]), chunk, strict=True
                ):
                    if p.confidence < DEFAULT_THRESHOLD:
                        continue
                    if is_inside:
                        filed_right += p.category == item.category
                    else:
                        filed_outside += 1
        results[f"classify.configured_filed_right_share_{name}"] = filed_right / len(inside)
        results[f"classify.unconfigured_filed_share_{name}"] = filed_outside / len(outside)
        log(
            f"20NG half configured ({name}): {filed_right / len(inside):.3f} of configured mail "
            f"filed right, {filed_outside / len(outside):.3f} of other mail filed anyway"
        )


def descriptions(classifier: Classifier, categories: list[str]) -> list[Example]:
    """Each intent's name as its category description (``card_arrival`` → "card arrival"),
    as a person would describe the category in the editor: origin ``seed``, as in the product
    (:func:`postroom.learning.service.train_from_examples`)."""
    views = [MessageView(body_text=name.replace("_", " ")) for name in categories]
    return classifier.make_examples(views, categories, "seed")


def run_banking77(results: dict[str, float]) -> None:
    train, test = load_banking77()
    results["classify.banking77_baseline_accuracy"] = baseline_accuracy(train, test)
    log(f"BANKING77 baseline {results['classify.banking77_baseline_accuracy']:.4f}")
    classifier = Classifier(ClassifierConfig.with_two_encoders(seed=SEED))
    examples = make_examples(classifier, train)
    described = descriptions(classifier, sorted({item.category for item in train}))
    # The test texts are embedded once and reused by the five few-shot models below
    # (predict_examples runs the same cascade as predict on the stored vectors).
    test_examples = make_examples(classifier, test)
    truth = [item.category for item in test]
    log("BANKING77 examples made")

    def accuracy_on_test(model: Classifier) -> float:
        predictions = model.predict_examples(test_examples)
        return float(np.mean([p.category == c for p, c in zip(predictions, truth, strict=True)]))

    classifier.fit([*examples, *described])
    results["classify.banking77_accuracy"] = accuracy_on_test(classifier)
    slow = [p.stage == "slow" for p in classifier.predict_examples(test_examples)]
    results["classify.cascade_slow_share"] = float(np.mean(slow))
    log(f"BANKING77 accuracy {results['classify.banking77_accuracy']:.4f}")
    p50, per_second = latency(classifier, test[:500])
    results["classify.p50_cascade_ms"], results["classify.mps_cascade_one_by_one"] = p50, per_second
    results["classify.mps_cascade"] = paged(classifier, test[:500])
    log(
        f"BANKING77 cascade {results['classify.mps_cascade']:.1f}/s by page, "
        f"{per_second:.1f}/s one by one"
    )
    results["classify.banking77_no_description_accuracy"] = accuracy_on_test(
        classifier.fit(examples)
    )
    shots, bare = [], []
    for draw in range(5):
        chosen = [examples[i] for i in few_shot(train, 10, seed=SEED + draw)]
        shots.append(accuracy_on_test(classifier.fit([*chosen, *described])))
        bare.append(accuracy_on_test(classifier.fit(chosen)))
        log(f"BANKING77 10-shot draw {draw}: {shots[-1]:.4f} ({bare[-1]:.4f} without descriptions)")
        if draw == 0:  # few examples: the fast stage is unsure more often, the encoders run more
            model = classifier.fit([*chosen, *described])
            p50, per_second = latency(model, test[:300])
            results["classify.p50_cascade_10shot_ms"] = p50
            results["classify.mps_cascade_10shot_one_by_one"] = per_second
            results["classify.mps_cascade_10shot"] = paged(model, test[:300])
            log(
                f"BANKING77 10-shot cascade {results['classify.mps_cascade_10shot']:.1f}/s by "
                f"page, {per_second:.1f}/s one by one"
            )
            slow = [p.stage == "slow" for p in model.predict_examples(test_examples)]
            results["classify.cascade_10shot_slow_share"] = float(np.mean(slow))
    results["classify.banking77_10shot_accuracy"] = float(np.mean(shots))
    results["classify.banking77_10shot_no_description_accuracy"] = float(np.mean(bare))


def run_online(results: dict[str, float], train: list[Labelled], test: list[Labelled]) -> None:
    classifier = Classifier(ClassifierConfig(seed=SEED))
    start = [train[i] for i in few_shot(train, 5, seed=SEED)]
    classifier.fit(make_examples(classifier, start))
    accuracy_, updates = stream(
        classifier, ConversationMemory(), test, corrections=True, progress="online"
    )
    results["classify.20ng_online_accuracy"] = accuracy_
    results["classify.update_ms"] = float(np.median(updates) * 1000)
    results["classify.p50_ms"], results["classify.mps"] = latency(classifier, test[:1000])
    # What the product adds to a correction: writing the state (the row itself not counted).
    timings = []
    for _ in range(3):
        begin = time.perf_counter()
        blob = dump_state(classifier.to_state())
        timings.append(time.perf_counter() - begin)
    results["classify.state_save_ms"] = float(np.median(timings) * 1000)
    results["classify.state_mb"] = len(blob) / 1e6
    results["classify.state_examples"] = float(len(classifier.examples))
    correction_path(results, classifier, test)


def correction_path(
    results: dict[str, float], classifier: Classifier, items: list[Labelled]
) -> None:
    """What a correction costs the product since the state is a snapshot plus an update log
    (``learning.service.record_correction``): a private copy of the cached model, the example
    and its learning step, and the example's bytes for the one update row (the database
    write not counted). A worker holding the previous version does the same to catch up."""
    categories = sorted(classifier.categories)
    timings, sizes = [], []
    for n, item in enumerate(items[:25]):
        chosen = next(c for c in categories if c != item.category)
        begin = time.perf_counter()
        twin = classifier.copy()
        example = twin.make_example(item.view, chosen, "correction", key=n + 1)
        twin.learn(example)
        row = dump_state(example_state(example))
        timings.append(time.perf_counter() - begin)
        sizes.append(len(row))
    results["classify.correction_path_ms"] = float(np.median(timings) * 1000)
    results["classify.update_row_kb"] = float(np.mean(sizes) / 1000)


def main(parts: Sequence[str] = ("20ng", "banking77")) -> dict[str, float]:
    """Every part by default; ``python -m benchmarks.bench_classify banking77`` runs one
    (``20ng`` is the 20 Newsgroups part: accuracy, unconfigured mail, online learning)."""
    from benchmarks.cache import install_embedding_cache, memoized
    from benchmarks.results_file import merge_results

    install_embedding_cache()
    results: dict[str, float] = {}
    started = time.perf_counter()
    if "20ng" in parts:

        def twenty() -> dict[str, float]:
            found: dict[str, float] = {}
            train, test = run_20ng(found)
            merge_results(found)  # after each step, so a stopped run still leaves its figures
            run_unconfigured(found, train, test)
            merge_results(found)
            run_online(found, train, test)
            return found

        begin = time.perf_counter()
        results.update(memoized("classify-20ng", [TWENTY_NEWSGROUPS], twenty))
        results["classify.20ng_part_seconds"] = time.perf_counter() - begin
        merge_results(results)
    if "banking77" in parts:

        def banking() -> dict[str, float]:
            found: dict[str, float] = {}
            run_banking77(found)
            return found

        begin = time.perf_counter()
        results.update(memoized("classify-banking77", [BANKING77], banking))
        results["classify.banking77_part_seconds"] = time.perf_counter() - begin
    if set(parts) >= {"20ng", "banking77"}:
        results["classify.bench_seconds"] = time.perf_counter() - started
    merge_results(results)
    return results


if __name__ == "__main__":
    for key, value in sorted(main(sys.argv[1:] or ("20ng", "banking77")).items()):
        print(f"{key} = {value:.4f}")
    sys.exit(0)
