"""Long-tailed mailboxes: a few big folders and many small ones.

A real mailbox has a couple of folders with hundreds of emails and a dozen with 4 to 30; a
model tuned on balanced data may lose to a plain baseline there. Each data set's mail (train
and test split together) is grouped by folder (newsgroup, intent); a seeded permutation gives
the folders ranks 1..K, and rank ``r`` keeps ``round(LARGEST / r**s)`` emails for training,
``s`` such that the smallest keeps :data:`SMALLEST` (a Zipf curve). The rest of those folders'
mail is the test set. Three seeded draws (0, 1, 2); figures are their means.

* 20 Newsgroups: 20 folders, 500 down to 4 (~940 emails a folder, so at least ~440 are left
  to test even the largest).
* BANKING77: 77 folders; an intent has only 75-227 texts, so the curve starts at
  :data:`TRAIN_SHARE_CAP` of the median intent (116 instead of 500), no intent gives more
  than that share of its texts, and the smallest keeps 4.

``…_5shot_…``: every folder keeps 5 emails (seeded), the rest is the test set.

Keys (``classify.longtail_{20ng,banking77}_`` and ``classify.longtail_{20ng,banking77}_5shot_``):
``accuracy`` and ``macro_f1`` of the product's default recipe (``ClassifierConfig()``, its
category whatever the confidence), and ``baseline_accuracy``, ``baseline_macro_f1`` of TF-IDF
word 1–2-grams + LinearSVC(C=0.5) (:func:`benchmarks.bench_classify.baseline_accuracy`'s
model) on the same training and test mail, in the same run. Target: the product at least
2 points above the baseline in both. ``unweighted_accuracy`` / ``unweighted_macro_f1``: the
same recipe without class weights (``balanced=False``, the default before issue 17).

Run alone: ``python -m benchmarks.bench_longtail`` (or ``20ng`` / ``banking77``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from benchmarks.bench_classify import (
    BANKING77,
    TWENTY_NEWSGROUPS,
    Labelled,
    load_20ng,
    load_banking77,
    log,
    make_examples,
)
from postroom.classify import Classifier, ClassifierConfig, Example
from postroom.classify.features import long_text

DRAWS = (0, 1, 2)
LARGEST = 500
SMALLEST = 4
TRAIN_SHARE_CAP = 0.7
"""At most this share of a folder's mail is used for training (the rest is tested)."""
FIVE = 5


def zipf_sizes(available: Sequence[int], rng: np.random.Generator) -> list[int]:
    """Training size per folder (same order as ``available``): a seeded rank each, sizes on a
    Zipf curve from :data:`LARGEST` down to :data:`SMALLEST`; where folders are too small for
    that (BANKING77), the curve starts at :data:`TRAIN_SHARE_CAP` of the median folder, and
    no folder gives more than that share of its own mail."""
    count = len(available)
    largest = min(LARGEST, int(TRAIN_SHARE_CAP * float(np.median(available))))
    exponent = np.log(largest / SMALLEST) / np.log(count)
    ranks = rng.permutation(count) + 1
    return [
        max(SMALLEST, min(round(largest / rank**exponent), int(TRAIN_SHARE_CAP * size)))
        for rank, size in zip(ranks, available, strict=True)
    ]


def split(
    items: Sequence[Labelled], sizes: dict[str, int], rng: np.random.Generator
) -> tuple[list[int], list[int]]:
    """(training indices, test indices): ``sizes[folder]`` seeded picks per folder."""
    by_folder: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        by_folder.setdefault(item.category, []).append(index)
    train: list[int] = []
    test: list[int] = []
    for folder in sorted(by_folder):
        members = rng.permutation(by_folder[folder])
        train += sorted(members[: sizes[folder]].tolist())
        test += sorted(members[sizes[folder] :].tolist())
    return train, test


def macro_f1(truth: Sequence[str], predicted: Sequence[str | None]) -> float:
    from sklearn.metrics import f1_score

    labels = sorted(set(truth))
    shown = [p if p is not None else "" for p in predicted]
    return float(f1_score(list(truth), shown, labels=labels, average="macro", zero_division=0))


def baseline_predictions(train: Sequence[Labelled], test: Sequence[Labelled]) -> list[str]:
    """TF-IDF word 1–2-grams, sublinear tf, LinearSVC(C=0.5): the baseline of the issue."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.svm import LinearSVC

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    rows = vectorizer.fit_transform([long_text(item.view) for item in train])
    model = LinearSVC(C=0.5, random_state=0).fit(rows, [item.category for item in train])
    return [str(c) for c in model.predict(vectorizer.transform([long_text(i.view) for i in test]))]


def figures(
    items: Sequence[Labelled],
    examples: Sequence[Example],
    train: list[int],
    test: list[int],
    config: ClassifierConfig,
) -> dict[str, float]:
    truth = [items[i].category for i in test]
    out: dict[str, float] = {}
    for prefix, variant in (("", config), ("unweighted_", replace(config, balanced=False))):
        classifier = Classifier(variant).fit([examples[i] for i in train])
        predicted = [p.category for p in classifier.predict_examples([examples[i] for i in test])]
        out[f"{prefix}accuracy"] = float(
            np.mean([p == t for p, t in zip(predicted, truth, strict=True)])
        )
        out[f"{prefix}macro_f1"] = macro_f1(truth, predicted)
    baseline = baseline_predictions([items[i] for i in train], [items[i] for i in test])
    out["baseline_accuracy"] = float(
        np.mean([p == t for p, t in zip(baseline, truth, strict=True)])
    )
    out["baseline_macro_f1"] = macro_f1(truth, baseline)
    return out


def run(
    name: str, items: list[Labelled], config: ClassifierConfig | None = None
) -> dict[str, float]:
    """Mean figures over :data:`DRAWS` for the Zipf and the 5-per-folder variants."""
    config = config or ClassifierConfig()
    examples = make_examples(Classifier(config), items)
    folders = sorted({item.category for item in items})
    available = [sum(item.category == folder for item in items) for folder in folders]
    out: dict[str, list[float]] = {}
    for draw in DRAWS:
        rng = np.random.default_rng(draw)
        sizes = dict(zip(folders, zipf_sizes(available, rng), strict=True))
        for variant, chosen in (("", sizes), ("_5shot", dict.fromkeys(folders, FIVE))):
            train, test = split(items, chosen, rng)
            found = figures(items, examples, train, test, replace(config, seed=draw))
            log(f"{name}{variant} draw {draw}: {len(train)} train, {len(test)} test: {found}")
            for key, value in found.items():
                out.setdefault(f"{name}{variant}_{key}", []).append(value)
    return {key: float(np.mean(values)) for key, values in out.items()}


def main(parts: Sequence[str] = ("20ng", "banking77")) -> dict[str, float]:
    from benchmarks.cache import install_embedding_cache, memoized
    from benchmarks.results_file import merge_results

    results: dict[str, float] = {}
    started = time.perf_counter()
    install_embedding_cache()
    for name, load, data in (
        ("20ng", load_20ng, TWENTY_NEWSGROUPS),
        ("banking77", load_banking77, BANKING77),
    ):
        if name not in parts:
            continue

        def part(load: Any = load, name: str = name) -> dict[str, float]:
            train, test = load()
            return {f"classify.longtail_{k}": v for k, v in run(name, [*train, *test]).items()}

        results.update(memoized(f"longtail-{name}", [data], part))
        merge_results(results)
    results["classify.longtail_part_seconds"] = time.perf_counter() - started
    merge_results(results)
    return results


if __name__ == "__main__":
    for key, value in sorted(main(sys.argv[1:] or ("20ng", "banking77")).items()):
        print(f"{key} = {value:.4f}")
    sys.exit(0)
