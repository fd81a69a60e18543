"""The learned classifier: a two-stage linear cascade over hashed n-grams and embeddings.

Design
------
Every example and every incoming email becomes one feature row made of blocks:

1. hashed word 1–2-grams and character 3–5-grams (:mod:`postroom.classify.features`),
   weighted by inverse document frequency over the training examples, each block L2-normalized;
2. optionally a WordLlama embedding of the whole message (``fast_embedder``; off by default);
3. optionally an e5 embedding of the subject and the first words (``slow_embedder``; costly),
   centered on the training examples' mean, weight ``slow_weight``.

Two linear heads (one-vs-rest linear SVMs, liblinear, seeded) are trained on the same examples:
the *fast* head sees blocks 1–2, the *slow* head blocks 1–3. An email is scored by the fast head;
only if its confidence is below ``cascade_confidence`` is the e5 embedding computed and the slow
head asked. Most emails stop at the fast stage, so latency stays low, while short or unusual
emails — where a multilingual sentence embedding pays (intent-like texts, few examples, an
English example for a Dutch email) — get the slow stage. With ``slow_embedder=None`` the
classifier is a single fast stage.

Why these choices (measured on validation splits carved from the *train* splits, see
``benchmarks/bench_classify.py``): sparse n-grams alone match a tuned TF-IDF + LinearSVC on
long mail (20 Newsgroups, 0.911 vs 0.912); adding WordLlama to them *lowered* that to 0.902
(weight 0.3) and 0.867 (weight 1), so it is off. e5 lifts short intent texts (BANKING77: 0.892
fast stage, 0.923 always-slow, 0.914 with the cascade at 0.95, where 15% take the slow stage)
and few-shot accuracy, but on this 2-core machine it costs ~1.4 ms per token: ~130 ms for a
subject and the first 24 words of a 20 Newsgroups message. With few examples the fast stage is
unsure of most emails, so the cascade would embed most of them and miss the latency budget
(p50 ≤ 30 ms, ≥ 50 emails/s). Hence the **default is the fast stage alone**;
:meth:`ClassifierConfig.with_embeddings` turns the e5 cascade on for integrations with short,
intent-like mail or very few examples.

:meth:`ClassifierConfig.with_two_encoders` (``POSTROOM_CLASSIFIER_EMBEDDER=e5+minilm``) is
the strongest recipe for short, intent-like mail and few examples: both heads are multinomial
logistic regressions (``head="logistic"``), the fast stage adds WordLlama, and the slow stage
reads ``[e5 ‖ MiniLM]`` (weights 2 and 3) and blends its head's scores with a vote of the 10
nearest examples over those vectors (``knn_weight``; both z-scored per email). On BANKING77
it lifts 10-shot accuracy from 0.82 (e5 cascade) to about 0.87; see
``docs/decisions/0008-second-sentence-encoder.md`` and ``benchmarks/bench_classify.py``. The
vote is over the stored examples, so a correction counts in it at once, beside its
passive-aggressive step.

Confidence is calibrated: scores go through a softmax whose temperature is fitted on
out-of-fold scores of the training examples (3 folds, seeded, at most
:data:`CALIBRATION_EXAMPLES` examples), so a threshold of 0.8 means roughly "right 8 times in
10" for examples like the ones seen. With the nearest-example vote, each held-out score is blended
with the vote of the other folds' examples before the temperature is fitted.

Learning from a correction (:meth:`Classifier.learn`) stores the example and applies one
passive-aggressive (PA-I) step to each head: the corrected category's score is pushed to at
least +1 and every other one to at most -1 for that email, and similar emails move with it. A
category never seen before gets a new row; features never seen before get weight columns
(capacity doubles, so a step is ~10 ms, independent of the number of examples). An example of
the same message (``Example.key``), e.g. the decision being corrected, is replaced.

A person who takes the model's category off an email without choosing another says "none of
these": that is an example of the class :data:`NONE_OF_THESE` (an empty name, which no category
can have). It is learned like any correction — the PA step pushes every category's score for
that email to at most -1 — and joins every later fit as a class of its own, so similar emails
get no category (a :class:`Prediction` whose ``category`` is :data:`NONE_OF_THESE`) rather than
the rejected one. A one-vs-rest head has no other sound place for a "not X" example: a negative
for X alone would leave every other category free to claim the email. The class exists only
once such an example was learned, so a model without one predicts exactly as before, and it is
never one of :attr:`Classifier.categories`. Its new row starts at a bias of at most -1 (a new
category starts at the mean): with the mean, one "none of these" took an unrelated Sales email
of a small model from 0.99 to 0.70; from -1 it stays at 0.99–1.00 while a near-copy of the
rejected email goes to "none of these" (``docs/processing.md``).

**Open set.** Most mail in a real mailbox fits none of the categories. Each head keeps, per
category, the quantiles (:data:`FIT_LEVELS`) of the out-of-fold scores the category's own
examples got at the last fit. A prediction carries ``fit``, the share of its category's own
examples that scored lower than the email; below :attr:`ClassifierConfig.open_set_quantile`
the email *fits no category* (``Prediction.fits`` false) and the pipeline leaves it alone,
naming the nearest category in the activity view. ``category`` stays the nearest category,
so accuracy figures are unchanged. A category learned from a correction since the last fit,
and "none of these", have no quantiles (``fit`` None: the check does not apply). See
``docs/decisions/0010-open-set.md`` for the measured trade-off and what was not landed.

**Small categories.** Calibration folds hold only in-domain mail, so a model fitted on a few
examples per category is as sure of off-topic mail as of its own (0.91–1.00 on off-topic
mail with 4 examples per category, e5 recipe). The probabilities are mixed with uniform ones
by ``small_category_prior / (n + small_category_prior)``, ``n`` the median number of examples
per category at the last fit; the cascade and the conversation rule still compare the
unshrunk confidence (``Prediction.sureness``). The open-set check is what leaves such
off-topic mail alone.

:meth:`Classifier.observe` keeps a decision nobody corrected (origin ``decision``; at most
``max_decisions``, oldest dropped first) for the next retrain, without an update step and only
in categories with at least :data:`OBSERVE_MINIMUM` examples from people, so the model keeps up
with the mail it actually sees without teaching itself its own mistakes. The inverse document
frequencies stay those of the last full fit; :meth:`Classifier.needs_retrain` says when enough
has accumulated that a full :meth:`Classifier.retrain` (seconds; a background job) is worth it.

The features include one hashed token for the message's conversation (see
:func:`~postroom.classify.features.conversation_key`), weight ``conversation_weight``; on a
date-ordered validation split of the 20NG train set it lifted accuracy from 0.911 to 0.919.
Replies are also routed by :mod:`postroom.classify.conversations` before the model is asked.

Invariants
----------
* No text is kept. An :class:`Example` holds hashed features, embedding vectors, a category
  name (configuration) and an origin. :meth:`Classifier.to_state` holds those numbers, IDF
  weights and model parameters only; :func:`postroom.classify.state.dump_state` writes them as
  arrays without pickle.
* Deterministic: the same examples in the same order and the same config give identical
  parameters, predictions and state. Ties between categories go to the first in sorted order.
* Pure: no database, network or settings; embedders are loaded lazily once per process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, replace
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from scipy import sparse  # type: ignore[import-untyped]

from postroom.classify.config import ClassifierConfig
from postroom.classify.embed import (
    EMBEDDER_PARTS,
    SLOW_EMBEDDER_WORDS,
    load_embedder,
    one_blas_thread,
)
from postroom.classify.examples import (
    ORIGINS,
    STATE_FORMAT,
    Example,
    ExampleIndex,
    Origin,
)
from postroom.classify.features import (
    CONVERSATION_OFFSET,
    SPARSE_DIMENSION,
    WORD_BUCKETS,
    Float32Array,
    HashedFeatures,
    hash_messages,
    long_text,
    short_text,
    stack,
)
from postroom.classify.head import (
    NEAREST_LEVELS,
    Blend,
    LinearHead,
    fit_linear,
    fit_temperature,
    knn_vote,
    nearest_quantiles,
    project_columns,
    share_below,
    zscored,
)
from postroom.processing.decide import NONE_OF_THESE, Prediction, Stage
from postroom.processing.view import MessageView

OBSERVE_MINIMUM = 20
"""Examples labelled by people a category needs before the classifier learns from its own
uncorrected decisions in it. Measured (BANKING77, 10 examples per intent, the test split as
an uncorrected stream): learning every decision at confidence ≥ 0.9 *lowered* accuracy from
0.813 to 0.717 with a passive-aggressive step per decision, to 0.774 with a step capped at
0.1, and left it at 0.814 when decisions only joined the next retrain; the fast stage alone
went from 0.740 to 0.714 even then. On 20 Newsgroups (hundreds of examples per category) the
same decisions help. Hence: no update step for a decision, and only past this minimum."""


class Classifier:
    """Categorizes message views; learns from examples and corrections. See module docstring."""

    def __init__(self, config: ClassifierConfig | None = None) -> None:
        self.config = config or ClassifierConfig()
        self._examples: list[Example] = []
        self._index_cache: ExampleIndex | None = None
        self._idf_columns: npt.NDArray[np.int64] = np.zeros(0, np.int64)
        self._idf_values: Float32Array = np.zeros(0, np.float32)
        self._idf_default = 1.0
        self._fast_center: Float32Array | None = None
        self._slow_center: Float32Array | None = None
        self._fast: LinearHead | None = None
        self._slow: LinearHead | None = None
        self._memory: tuple[Float32Array, npt.NDArray[np.int64]] | None = None
        self._nearest: dict[str, Float32Array] = {}
        """Per category, quantiles (at :data:`NEAREST_LEVELS`) of its examples' similarity to
        their nearest other example at the last fit (:attr:`ClassifierConfig.nearest_quantile`;
        read only, replaced by a fit)."""
        self._examples_at_fit = 0
        self._learned_since_fit = 0
        self._median_at_fit = 0.0
        """Median examples per category at the last fit (the small-model shrinkage): like the
        IDF weights, it changes only with a fit, so a kept decision changes no prediction."""

    def copy(self) -> Classifier:
        """An independent classifier to change (learn, observe, fit) while others keep
        predicting with this one. Examples are immutable and shared; heads are copied."""
        twin = Classifier(self.config)
        twin._examples = list(self._examples)
        twin._index_cache = None
        twin._idf_columns, twin._idf_values = self._idf_columns, self._idf_values
        twin._idf_default = self._idf_default
        twin._fast_center, twin._slow_center = self._fast_center, self._slow_center
        twin._fast = None if self._fast is None else self._fast.copy()
        twin._slow = None if self._slow is None else self._slow.copy()
        twin._memory = self._memory
        twin._nearest = self._nearest
        twin._examples_at_fit = self._examples_at_fit
        twin._learned_since_fit = self._learned_since_fit
        twin._median_at_fit = self._median_at_fit
        return twin

    # ----------------------------------------------------------------- examples

    def make_examples(
        self, views: Sequence[MessageView], categories: Sequence[str], origin: Origin
    ) -> list[Example]:
        """Turn labelled views into :class:`Example` rows (the views are not kept)."""
        if len(views) != len(categories):
            raise ValueError("one category per view is needed")
        if origin not in ORIGINS:
            raise ValueError(f"unknown origin {origin!r}")
        features = hash_messages(views)
        fast = self._embed_fast(views)
        slow = self._embed_slow(views)
        return [
            Example(
                category=category,
                origin=origin,
                features=features[i],
                fast_embedding=None if fast is None else fast[i],
                slow_embedding=None if slow is None else slow[i],
            )
            for i, category in enumerate(categories)
        ]

    def make_example(
        self, view: MessageView, category: str, origin: Origin, *, key: int = 0
    ) -> Example:
        return replace(self.make_examples([view], [category], origin)[0], key=key)

    def _index(self) -> ExampleIndex:
        if self._index_cache is None:
            self._index_cache = ExampleIndex.of(self._examples)
        return self._index_cache

    def _append(self, example: Example) -> None:
        self._examples.append(example)
        self._memory = None
        if self._index_cache is not None:
            self._index_cache.add(example)

    def _replace_examples(self, examples: list[Example]) -> None:
        self._examples = examples
        self._index_cache = None
        self._memory = None

    @property
    def examples(self) -> tuple[Example, ...]:
        return tuple(self._examples)

    @property
    def categories(self) -> tuple[str, ...]:
        """The categories the model can give (not :data:`NONE_OF_THESE`)."""
        if self._fast is None:
            return ()
        return tuple(c for c in self._fast.classes if c != NONE_OF_THESE)

    def labelled_categories(self) -> tuple[str, ...]:
        """The categories with at least one example from people (typed, or a correction)."""
        return tuple(c for c in self.categories if self.labelled(c) > 0)

    # ----------------------------------------------------------------- training

    def fit(self, examples: Iterable[Example]) -> Classifier:
        """Train from scratch on ``examples`` (replacing any earlier ones)."""
        self._replace_examples(list(examples))
        self._check_embeddings(self._examples)
        self._fast = self._slow = None
        self._nearest = {}
        self._examples_at_fit = len(self._examples)
        self._learned_since_fit = 0
        self._median_at_fit = self._index().median_per_category()
        if not self._examples:
            self._idf_columns = np.zeros(0, np.int64)
            self._idf_values = np.zeros(0, np.float32)
            return self
        counts = stack([e.features for e in self._examples])
        columns, frequencies = np.unique(counts.indices, return_counts=True)
        documents = len(self._examples)
        self._idf_columns = columns.astype(np.int64)
        self._idf_values = (np.log((1 + documents) / (1 + frequencies)) + 1.0).astype(np.float32)
        self._idf_default = float(np.log(1 + documents) + 1.0)
        self._fast_center = self._slow_center = None
        if self.config.fast_embedder is not None:
            fast = cast(list[Float32Array], [e.fast_embedding for e in self._examples])
            self._fast_center = np.mean(np.vstack(fast), axis=0).astype(np.float32)
        if self.config.slow_embedder is not None:
            slow = cast(list[Float32Array], [e.slow_embedding for e in self._examples])
            self._slow_center = np.mean(np.vstack(slow), axis=0).astype(np.float32)

        classes = sorted({e.category for e in self._examples})
        labels = np.array([classes.index(e.category) for e in self._examples], np.int64)
        self._fast = self._fit_head(self._rows(self._examples, slow=False), labels, classes)
        if self._uses_slow_stage():
            self._slow = self._fit_head(
                self._rows(self._examples, slow=True), labels, classes, self._knn_blend(labels)
            )
            if self.config.nearest_quantile > 0:
                self._nearest = self._nearest_quantiles(labels, classes)
        return self

    def _nearest_quantiles(
        self, labels: npt.NDArray[np.int64], classes: list[str]
    ) -> dict[str, Float32Array]:
        keys = self._knn_rows(_matrix([e.slow_embedding for e in self._examples]))
        table = nearest_quantiles(keys, labels, len(classes), self.config.seed)
        return {
            category: table[row]
            for row, category in enumerate(classes)
            if category != NONE_OF_THESE and not np.isnan(table[row]).any()
        }

    def retrain(self) -> Classifier:
        """Full fit on the stored examples (after corrections have accumulated)."""
        return self.fit(self._examples)

    def reset(self, keep: Iterable[Origin] = ("user_example", "seed")) -> Classifier:
        """Forget learned corrections (by default); keep and refit on the configured examples."""
        kept = set(keep)
        return self.fit([e for e in self._examples if e.origin in kept])

    def learn(self, example: Example) -> None:
        """Add one labelled example (usually a correction) and update the model at once.

        An earlier example of the same message (``key``), e.g. the decision it corrects, is
        dropped first. An example of :data:`NONE_OF_THESE` teaches that such emails belong to
        none of the categories (a person took the model's category off)."""
        self._check_embeddings([example])
        if example.key and example.key in self._index().keys:
            self._replace_examples([e for e in self._examples if e.key != example.key])
        self._add(example)

    def observe(self, example: Example, *, minimum: int = OBSERVE_MINIMUM) -> bool:
        """Keep a decision nobody corrected (origin ``decision``) as an example for the next
        :meth:`retrain`; the model itself is not changed now.

        Refused (False) when that message is already known, or when the decided category has
        fewer than ``minimum`` examples labelled by people (typed examples and corrections):
        a model that has seen little is wrong too often, even when confident, to learn from
        itself (see :data:`OBSERVE_MINIMUM`)."""
        if example.origin != "decision":
            raise ValueError("observe() takes examples of origin 'decision'")
        self._check_embeddings([example])
        if self._fast is None or example.category not in self._fast.classes:
            return False
        if example.key and example.key in self._index().keys:
            return False
        if self.labelled(example.category) < minimum:
            return False
        self._append(example)
        self._learned_since_fit += 1
        if self._index().decisions > self.config.max_decisions:
            # The oldest tenth go at once, so that at the cap a decision costs no full scan.
            keep = self.config.max_decisions - self.config.max_decisions // 10
            decisions = [i for i, e in enumerate(self._examples) if e.origin == "decision"]
            drop = set(decisions[: len(decisions) - keep])
            self._replace_examples([e for i, e in enumerate(self._examples) if i not in drop])
        return True

    def labelled(self, category: str) -> int:
        """How many examples of ``category`` people gave (typed examples and corrections)."""
        return self._index().by_people[category]

    def _add(self, example: Example) -> None:
        was_on = len(self.labelled_categories()) >= 2
        self._append(example)
        self._learned_since_fit += 1
        if (
            not was_on
            or self._fast is None
            or len(set(self._fast.classes) | {example.category}) < 2
        ):
            # Until people gave examples of two categories the model is off (see
            # learning.service.load_model) and has few examples: a full fit costs little, and
            # the corrections kept meanwhile are all used when it turns on.
            self.fit(self._examples)
            return
        for head, slow in ((self._fast, False), (self._slow, True)):
            if head is None:
                continue
            if example.category not in head.classes:
                head.add_category(example.category)
            row = self._rows([example], slow=slow)
            head.passive_aggressive_step(row, example.category, self.config.correction_step)

    def needs_retrain(self) -> bool:
        """Whether enough was learned since the last fit that a full retrain is worth it."""
        threshold = max(
            self.config.retrain_minimum, self.config.retrain_fraction * self._examples_at_fit
        )
        return self._learned_since_fit >= threshold

    # --------------------------------------------------------------- prediction

    def predict(self, view: MessageView) -> Prediction:
        return self.predict_many([view])[0]

    def predict_many(self, views: Sequence[MessageView]) -> list[Prediction]:
        """Predict for several views; identical to calling :meth:`predict` on each."""
        if self._fast is None or not views:
            return [Prediction(category=None, confidence=0.0) for _ in views]
        features = hash_messages(views)
        fast = self._embed_fast(views)
        probes = [
            Example(
                category="",
                origin="seed",
                features=features[i],
                fast_embedding=None if fast is None else fast[i],
            )
            for i in range(len(views))
        ]
        return self._cascade(probes, lambda unsure: self._embed_slow([views[i] for i in unsure]))

    def predict_examples(self, examples: Sequence[Example]) -> list[Prediction]:
        """Predict for stored examples (features and embeddings, no text), as for their emails.

        Gives what :meth:`predict_many` gives for the original messages; used to evaluate a
        model on held-out examples or corrections without the emails.
        """
        self._check_embeddings(examples)
        if self._fast is None or not examples:
            return [Prediction(category=None, confidence=0.0) for _ in examples]

        def stored(unsure: list[int]) -> Float32Array | None:
            rows = [examples[i].slow_embedding for i in unsure]
            if any(row is None for row in rows):
                return None
            return np.vstack(cast(list[Float32Array], rows))

        return self._cascade(examples, stored)

    def _cascade(
        self,
        probes: Sequence[Example],
        slow_embeddings: Callable[[list[int]], Float32Array | None],
    ) -> list[Prediction]:
        """Fast head for all; slow head (with embeddings fetched on demand) for the unsure."""
        fast_head = self._fast
        assert fast_head is not None
        fast_scores = fast_head.scores(self._rows(probes, slow=False))
        # The cascade asks on the fitted confidence, before any small-category shrinkage:
        # the slow stage is for what the fast one cannot tell apart, not for small models.
        sure = fast_head.probabilities(fast_scores).max(axis=-1)
        out = [self._prediction(fast_head, row, "fast") for row in fast_scores]
        slow_head = self._slow
        unsure = [i for i, p in enumerate(sure) if p < self.config.cascade_confidence]
        # The nearest-example check needs every email's slow embedding, not only the unsure's.
        every: Float32Array | None = None
        if slow_head is not None and self._checks_nearest():
            every = slow_embeddings(list(range(len(probes))))
            assert every is not None
        if slow_head is not None and unsure:
            slow = every[unsure] if every is not None else slow_embeddings(unsure)
            assert slow is not None
            slow_probes = [replace(probes[i], slow_embedding=slow[k]) for k, i in enumerate(unsure)]
            slow_scores = slow_head.scores(self._rows(slow_probes, slow=True))
            if self.config.knn_weight:
                memory, labels = self._knn_memory()
                with one_blas_thread():  # (see there: e5 runs next)
                    slow_scores = self._blended(slow_scores, self._knn_rows(slow), memory, labels)
            for k, i in enumerate(unsure):
                out[i] = self._prediction(slow_head, slow_scores[k], "slow")
        if every is not None:
            memory, labels = self._knn_memory()
            keys = self._knn_rows(every)
            out = [self._with_nearest(p, keys[i], memory, labels) for i, p in enumerate(out)]
        return out

    def _checks_nearest(self) -> bool:
        return self.config.nearest_quantile > 0 and bool(self._nearest)

    def _with_nearest(
        self,
        prediction: Prediction,
        key: Float32Array,
        memory: Float32Array,
        labels: npt.NDArray[np.int64],
    ) -> Prediction:
        """``prediction`` with the nearest-example check (:attr:`ClassifierConfig.nearest_quantile`)
        applied: unchanged for a category without a bar (too few examples at the last fit,
        added since, or "none of these")."""
        category = prediction.category
        quantiles = self._nearest.get(category) if category else None
        if quantiles is None or category is None or self._slow is None:
            return prediction
        members: npt.NDArray[np.bool_] = labels == self._slow.classes.index(category)
        if not members.any():
            return prediction
        similarity = float(np.max(memory[members] @ key))
        nearest_fit = share_below(quantiles, NEAREST_LEVELS, similarity)
        if nearest_fit is None:
            return prediction
        bar = self.config.nearest_quantile
        return replace(
            prediction,
            fits=prediction.fits and nearest_fit >= bar,
            nearest_fit=nearest_fit,
            nearest_bar=bar,
        )

    def _prediction(self, head: LinearHead, scores: Float32Array, stage: Stage) -> Prediction:
        """Calibrated probabilities, shrunk toward uniform when the model has few examples per
        category (:attr:`ClassifierConfig.small_category_prior`), and whether the email fits
        the best category at all (:attr:`ClassifierConfig.open_set_quantile`)."""
        classes = head.classes
        probabilities = head.probabilities(scores)
        best = int(np.argmax(probabilities))
        sureness = float(probabilities[best])
        prior = self.config.small_category_prior
        if prior > 0:
            examples = self._median_at_fit
            weight = examples / (examples + prior)
            probabilities = (weight * probabilities + (1.0 - weight) / len(classes)).astype(
                np.float32
            )
        fit = None if classes[best] == NONE_OF_THESE else head.fit_of(best, float(scores[best]))
        return Prediction(
            category=classes[best],
            confidence=float(probabilities[best]),
            scores={c: float(p) for c, p in zip(classes, probabilities, strict=True)},
            stage=stage,
            fits=fit is None or fit >= self.config.open_set_quantile,
            fit=fit,
            fit_bar=self.config.open_set_quantile,
            sureness=sureness,
        )

    # --------------------------------------------------------------- internals

    def _uses_slow_stage(self) -> bool:
        return self.config.slow_embedder is not None

    def _embed_fast(self, views: Sequence[MessageView]) -> Float32Array | None:
        if self.config.fast_embedder is None:
            return None
        embedder = load_embedder(self.config.fast_embedder)
        return embedder.embed([long_text(v) for v in views])

    def _embed_slow(self, views: Sequence[MessageView]) -> Float32Array | None:
        if self.config.slow_embedder is None:
            return None
        embedder = load_embedder(self.config.slow_embedder)
        return embedder.embed([short_text(v, SLOW_EMBEDDER_WORDS) for v in views])

    def _check_embeddings(self, examples: Sequence[Example]) -> None:
        for example in examples:
            if (self.config.fast_embedder is None) != (example.fast_embedding is None) or (
                self.config.slow_embedder is None
            ) != (example.slow_embedding is None):
                raise ValueError(
                    "example embeddings do not match the classifier's config; "
                    "make examples with this classifier's make_examples()"
                )

    def _fit_head(
        self,
        rows: sparse.csr_matrix,
        labels: npt.NDArray[np.int64],
        classes: list[str],
        blend: Blend | None = None,
    ) -> LinearHead:
        columns = np.unique(rows.indices).astype(np.int64)
        projected = project_columns(rows, columns)
        config, count = self.config, len(classes)

        c = config.logistic_c if config.head == "logistic" else config.svm_c

        def fit(
            rows: sparse.csr_matrix, labels: npt.NDArray[np.int64]
        ) -> tuple[Float32Array, Float32Array]:
            return fit_linear(
                rows,
                labels,
                count,
                head=config.head,
                c=c,
                seed=config.seed,
                balanced=config.balanced,
            )

        weights, bias = fit(projected, labels)
        no_fit = classes.index(NONE_OF_THESE) if NONE_OF_THESE in classes else None
        temperature, quantiles = fit_temperature(
            projected, labels, count, fit, config.seed, blend, no_fit
        )
        return LinearHead(list(classes), columns, weights, bias, temperature, quantiles)

    def _knn_rows(self, slow: Float32Array) -> Float32Array:
        """Slow embeddings as nearest-neighbour keys: centered on the training mean, unit length."""
        rows = slow - self._slow_center if self._slow_center is not None else slow
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        out: Float32Array = (rows / np.maximum(norms, 1e-6)).astype(np.float32)
        return out

    def _knn_memory(self) -> tuple[Float32Array, npt.NDArray[np.int64]]:
        """Keys of every example and their categories' rows in the slow head; rebuilt after
        the examples change (and with them, in :meth:`_add`, the head's categories)."""
        if self._memory is None:
            assert self._slow is not None
            row_of = {category: i for i, category in enumerate(self._slow.classes)}
            vectors = _matrix([e.slow_embedding for e in self._examples])
            labels = np.array([row_of[e.category] for e in self._examples], np.int64)
            self._memory = (self._knn_rows(vectors), labels)
        return self._memory

    def _blended(
        self,
        scores: Float32Array,
        queries: Float32Array,
        memory: Float32Array,
        labels: npt.NDArray[np.int64],
    ) -> Float32Array:
        config = self.config
        votes = knn_vote(
            queries,
            memory,
            labels,
            scores.shape[1],
            config.knn_neighbours,
            config.knn_temperature,
        )
        out: Float32Array = (zscored(scores) + config.knn_weight * zscored(votes)).astype(
            np.float32
        )
        return out

    def _knn_blend(self, labels: npt.NDArray[np.int64]) -> Blend | None:
        """How out-of-fold scores are blended for calibration: the vote of the training
        fold's examples only."""
        if not self.config.knn_weight:
            return None
        keys = self._knn_rows(_matrix([e.slow_embedding for e in self._examples]))

        def blend(
            scores: Float32Array,
            training: npt.NDArray[np.bool_],
            held_out: npt.NDArray[np.bool_],
        ) -> Float32Array:
            return self._blended(scores, keys[held_out], keys[training], labels[training])

        return blend

    def _rows(self, examples: Sequence[Example], *, slow: bool) -> sparse.csr_matrix:
        """Feature rows: IDF-weighted, per-block normalized n-grams, then weighted embeddings."""
        counts = stack([e.features for e in examples])
        weighted = counts.astype(np.float32)
        idf = np.full(weighted.indices.size, self._idf_default, np.float32)
        if self._idf_columns.size:
            positions = np.searchsorted(self._idf_columns, weighted.indices)
            positions[positions == self._idf_columns.size] = 0
            known = self._idf_columns[positions] == weighted.indices
            idf[known] = self._idf_values[positions[known]]
        weighted.data = (weighted.data * idf).astype(np.float32)
        row_of = np.repeat(np.arange(len(examples)), np.diff(weighted.indptr))
        block = (weighted.indices >= WORD_BUCKETS).astype(np.int64) + (
            weighted.indices >= CONVERSATION_OFFSET
        )
        squares = weighted.data.astype(np.float64) ** 2
        norms = np.zeros((3, len(examples)), np.float64)
        for b in range(3):
            norms[b] = np.sqrt(np.bincount(row_of, squares * (block == b), minlength=len(examples)))
        scale = np.array([1 / np.sqrt(2.0), 1 / np.sqrt(2.0), self.config.conversation_weight])
        weighted.data = (
            weighted.data * scale[block] / np.maximum(norms[block, row_of], 1e-12)
        ).astype(np.float32)
        blocks: list[sparse.csr_matrix] = [weighted]
        config = self.config
        if config.fast_embedder is not None:
            fast = np.vstack(cast(list[Float32Array], [e.fast_embedding for e in examples]))
            parts = EMBEDDER_PARTS[config.fast_embedder]
            blocks.append(self._centered(fast, self._fast_center, (config.fast_weight,), parts))
        if slow and config.slow_embedder is not None:
            slow_rows = np.vstack(cast(list[Float32Array], [e.slow_embedding for e in examples]))
            parts = EMBEDDER_PARTS[config.slow_embedder]
            weights = (config.slow_weight, config.second_weight)
            blocks.append(self._centered(slow_rows, self._slow_center, weights, parts))
        rows = sparse.hstack(blocks, format="csr", dtype=np.float32)
        assert rows.shape[1] >= SPARSE_DIMENSION
        return rows

    @staticmethod
    def _centered(
        rows: Float32Array,
        center: Float32Array | None,
        weights: Sequence[float],
        parts: Sequence[int],
    ) -> sparse.csr_matrix:
        """Embeddings minus the training examples' mean, each part (one per encoder)
        re-normalized and weighted.

        Sentence embeddings of unrelated texts are far from orthogonal (e5 puts most pairs
        above 0.7 cosine); centering keeps a correction step from leaking into every email.
        """
        if center is not None:
            rows = rows - center
        pieces, start = [], 0
        for width, weight in zip(parts, weights, strict=False):
            piece = rows[:, start : start + width]
            norms = np.linalg.norm(piece, axis=1, keepdims=True)
            pieces.append(weight * piece / np.maximum(norms, 1e-6))
            start += width
        return sparse.csr_matrix(np.hstack(pieces).astype(np.float32))

    # -------------------------------------------------------------------- state

    def to_state(self) -> dict[str, Any]:
        """Everything needed to rebuild this classifier: arrays of numbers, category names, config.

        Keys map to numpy arrays or plain numbers/strings, so
        :func:`postroom.classify.state.dump_state` can write it without pickle.
        """
        examples = self._examples
        heads = [head for head in (self._fast, self._slow) if head is not None]
        names = sorted({e.category for e in examples}.union(*(h.classes for h in heads)))
        features = stack([e.features for e in examples])
        state: dict[str, Any] = {
            "format": STATE_FORMAT,
            "config": asdict(self.config),
            "category_names": names,
            "example_category": np.array([names.index(e.category) for e in examples], np.int32),
            "example_origin": np.array([ORIGINS.index(e.origin) for e in examples], np.int8),
            "example_key": np.array([e.key for e in examples], np.int64),
            "example_indptr": features.indptr.astype(np.int64),
            "example_indices": features.indices.astype(np.int32),
            "example_values": features.data.astype(np.float32),
            "idf_columns": self._idf_columns,
            "idf_values": self._idf_values,
            "idf_default": self._idf_default,
            "fast_center": self._fast_center,
            "slow_center": self._slow_center,
            "examples_at_fit": self._examples_at_fit,
            "learned_since_fit": self._learned_since_fit,
            "median_at_fit": self._median_at_fit,
        }
        if self.config.fast_embedder is not None:
            state["example_fast_embedding"] = _matrix([e.fast_embedding for e in examples])
        if self.config.slow_embedder is not None:
            state["example_slow_embedding"] = _matrix([e.slow_embedding for e in examples])
        for key, head in (("fast", self._fast), ("slow", self._slow)):
            if head is not None:
                state[f"{key}_classes"] = np.array([names.index(c) for c in head.classes], np.int32)
                state[f"{key}_columns"] = head.columns
                state[f"{key}_weights"] = head.used_weights()
                state[f"{key}_bias"] = head.bias
                state[f"{key}_temperature"] = head.temperature
                if head.fit_quantiles is not None:
                    state[f"{key}fit_quantiles"] = head.fit_quantiles
        if self._nearest:
            ordered = sorted(self._nearest)
            state["nearest_categories"] = np.array([names.index(c) for c in ordered], np.int32)
            state["nearest_quantiles"] = np.vstack([self._nearest[c] for c in ordered])
        return state

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Classifier:
        """Rebuild a classifier from :meth:`to_state` output, without refitting."""
        if int(state["format"]) != STATE_FORMAT:
            raise ValueError(f"unsupported classifier state format {state['format']!r}")
        classifier = cls(ClassifierConfig(**dict(state["config"])))
        names = [str(n) for n in state["category_names"]]
        indptr = np.asarray(state["example_indptr"], np.int64)
        indices = np.asarray(state["example_indices"], np.int32)
        values = np.asarray(state["example_values"], np.float32)
        fast = state.get("example_fast_embedding")
        slow = state.get("example_slow_embedding")
        origins = np.asarray(state["example_origin"])
        keys = np.asarray(state.get("example_key", np.zeros(len(origins), np.int64)), np.int64)
        for i, category in enumerate(np.asarray(state["example_category"])):
            start, end = indptr[i], indptr[i + 1]
            classifier._examples.append(
                Example(
                    category=names[int(category)],
                    origin=ORIGINS[int(origins[i])],
                    features=HashedFeatures(indices[start:end].copy(), values[start:end].copy()),
                    fast_embedding=None if fast is None else np.asarray(fast[i], np.float32),
                    slow_embedding=None if slow is None else np.asarray(slow[i], np.float32),
                    key=int(keys[i]),
                )
            )
        classifier._idf_columns = np.asarray(state["idf_columns"], np.int64)
        classifier._idf_values = np.asarray(state["idf_values"], np.float32)
        classifier._idf_default = float(state["idf_default"])
        for key in ("fast_center", "slow_center"):
            center = state.get(key)
            setattr(classifier, f"_{key}", None if center is None else np.array(center, np.float32))
        classifier._examples_at_fit = int(state["examples_at_fit"])
        classifier._learned_since_fit = int(state["learned_since_fit"])
        median = state.get("median_at_fit")
        classifier._median_at_fit = (
            float(median)
            if median is not None
            else classifier._index().median_per_category()  # (a state from before it was kept)
        )
        heads: dict[str, LinearHead] = {}
        for key in ("fast", "slow"):
            if f"{key}_classes" in state:
                heads[key] = LinearHead(
                    classes=[names[int(i)] for i in state[f"{key}_classes"]],
                    columns=np.asarray(state[f"{key}_columns"], np.int64),
                    weights=np.array(state[f"{key}_weights"], np.float32),
                    bias=np.array(state[f"{key}_bias"], np.float32),
                    temperature=float(state[f"{key}_temperature"]),
                    fit_quantiles=None
                    if state.get(f"{key}fit_quantiles") is None
                    else np.array(state[f"{key}fit_quantiles"], np.float32),
                )
        classifier._fast = heads.get("fast")
        classifier._slow = heads.get("slow")
        if state.get("nearest_categories") is not None:  # (none in a state from before)
            table = np.array(state["nearest_quantiles"], np.float32)
            classifier._nearest = {
                names[int(c)]: table[row]
                for row, c in enumerate(np.asarray(state["nearest_categories"]))
            }
        return classifier


def _matrix(rows: Sequence[Float32Array | None]) -> Float32Array:
    present = [r for r in rows if r is not None]
    if len(present) != len(rows):
        raise ValueError("every example needs the embedding its classifier is configured for")
    if not present:
        return np.zeros((0, 0), np.float32)
    return np.vstack(present).astype(np.float32)
