"""How a classifier is built: :class:`ClassifierConfig` and its recipes (part of a model's
state)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from postroom.classify.embed import (
    EmbedderName,
)

Head = Literal["svm", "logistic"]
Recipe = Literal["none", "e5", "e5+minilm"]
"""What ``POSTROOM_CLASSIFIER_EMBEDDER`` chooses (:meth:`ClassifierConfig.recipe`)."""
OpenSet = Literal["score", "nearest"]
"""What ``POSTROOM_CLASSIFIER_OPEN_SET`` chooses: the score quantile (every recipe) or the
nearest example (``e5+minilm`` only: it needs the encoders for every email)."""
TWO_ENCODER_CASCADE = 0.9
"""Fast-stage confidence at which :meth:`ClassifierConfig.with_two_encoders` skips the
encoders. Chosen on a validation split of the BANKING77 train set (the highest threshold
within ~0.1 point of always asking the encoders): full data 0.9304 vs 0.9309 always-slow with
16 % slow; 10 shots 0.8475 vs 0.8487 with 43–50 % slow (0.95: 20 % / 53 % slow, 0.8: 11 % /
33 % slow but 0.4 point lower at 10 shots)."""

TWO_ENCODER_NEAREST = 0.02
"""The nearest-example bar of ``recipe("e5+minilm", open_set="nearest")``, which replaces the
score quantile there. Chosen on a validation split of the BANKING77 train set, 40 of 77
intents configured, 3 draws (``docs/research/open-set/banking77_pair_nearest.py``): configured
mail filed right 0.926 vs 0.938 without any check, other intents' mail filed 0.467 vs 0.641;
the score quantile 0.05 gave 0.926 / 0.545 (decision 0016)."""


@dataclass(frozen=True, slots=True)
class ClassifierConfig:
    """How a classifier is built. Part of its state; changing it needs a :meth:`retrain`."""

    fast_embedder: EmbedderName | None = None
    slow_embedder: EmbedderName | None = None
    """``"e5"`` turns the cascade on (see :meth:`with_embeddings`)."""
    cascade_confidence: float = 0.95
    """Fast-stage confidence at or above which the slow stage is skipped."""
    fast_weight: float = 1.0
    slow_weight: float = 2.0
    conversation_weight: float = 0.5
    """Weight of the conversation token beside the (unit-weight) n-gram blocks."""
    svm_c: float = 0.5
    """Inverse regularization of the linear SVMs (the usual value for TF-IDF text)."""
    head: Head = "svm"
    """Linear heads: one-vs-rest SVMs, or a multinomial logistic regression (``logistic_c``)."""
    logistic_c: float = 10.0
    balanced: bool = True
    """Weigh each category's examples inversely to its size in the heads' fit (scikit-learn's
    ``class_weight="balanced"``): a mailbox has a few big folders and many small ones, and an
    unweighted head leaves the small ones to the big. Validation draws of Zipf-sized 20NG
    folders (500 down to 4, train split; ``docs/research/longtail_validate.py``): accuracy on
    the rest of those folders 0.175 → 0.391, and on a Zipf-sized test set like a 70/30 split
    of a real mailbox 0.733 → 0.862 (TF-IDF + LinearSVC baseline 0.697). Off for
    :meth:`with_two_encoders`, whose weights were chosen unweighted on BANKING77."""
    second_weight: float = 3.0
    """Weight of the second half of a pair slow embedder (``e5+minilm``: MiniLM)."""
    knn_weight: float = 0.0
    """Slow stage only: weight of a nearest-neighbour vote over the examples' slow embeddings
    blended into the head's scores (0: off). Both are z-scored per email first, so the vote
    counts the same whatever the head's scale; a correction joins the vote at once."""
    knn_neighbours: int = 10
    knn_temperature: float = 0.05
    correction_step: float = 4.0
    """Cap of a passive-aggressive step (PA-I ``C``); large enough that a correction sticks."""
    retrain_fraction: float = 0.05
    """:meth:`Classifier.needs_retrain` once this share of the examples was learned since the
    last fit (or ``retrain_minimum`` examples). 20NG read in date order with nobody correcting
    (confident decisions learned): cumulative 0.906 after 7,000 messages with 0.05, 0.901 with
    0.2 (0.897 at the end of the stream, as learning nothing)."""
    retrain_minimum: int = 20
    max_decisions: int = 10_000
    """Decisions nobody corrected (origin ``decision``) kept as examples; the oldest go first."""
    seed: int = 0
    open_set_quantile: float = 0.05
    """Open set: an email whose best category scores lower than this share of that category's
    own examples did (out of fold, see :data:`FIT_LEVELS`) *fits no category*
    (``Prediction.fits`` false; 0 turns the check off). Chosen on validation splits carved
    from the 20 Newsgroups train split, see ``docs/decisions/0010-open-set.md``."""
    nearest_quantile: float = 0.0
    """Second open-set check, for recipes with a slow (sentence-encoder) stage: an email also
    fits no category when its chosen category's most similar example is less similar to it
    than this share of that category's own examples are to theirs (``Prediction.nearest_fit``;
    0 turns it off). It needs the slow encoders for every email, not only the unsure ones, so
    it is off unless chosen (:meth:`recipe` with ``open_set="nearest"``, ``e5+minilm`` only).
    See ``docs/decisions/0016-nearest-example.md``."""
    small_category_prior: float = 2.0
    """Confidence shrinks toward "unsure" for a model with few examples per category: the
    probabilities are mixed with uniform ones by ``prior / (n + prior)``, ``n`` the median
    number of examples of its categories at the last fit (4: a third; 50: 4 %). Calibration
    folds only ever hold in-domain mail, so a model fitted on a handful of examples is as
    sure of off-topic mail as of its own. Model-wide, not per category: a category or "none
    of these" that a single correction created must still decide the next similar email."""

    def same_embeddings(self, other: ClassifierConfig) -> bool:
        """Whether examples made under ``other`` can be trained on under this configuration
        (the other fields only shape the model, not the examples)."""
        return (self.fast_embedder, self.slow_embedder) == (
            other.fast_embedder,
            other.slow_embedder,
        )

    @classmethod
    def with_embeddings(cls, **overrides: Any) -> ClassifierConfig:
        """The cascade: fast n-gram stage, then e5 for the emails the fast stage is unsure of."""
        return cls(**{"slow_embedder": "e5", **overrides})

    @classmethod
    def with_two_encoders(cls, **overrides: Any) -> ClassifierConfig:
        """The strongest recipe, for short intent-like mail and few examples (BANKING77).

        Fast stage: logistic regression over n-grams and WordLlama. Slow stage, for the
        emails the fast stage is unsure of: logistic regression over n-grams, WordLlama,
        2·e5 and 3·MiniLM, blended with a 10-nearest-neighbour vote over ``[e5 ‖ MiniLM]``.
        Open set: the score quantile, as every recipe; :meth:`recipe` with
        ``open_set="nearest"`` takes the nearest example instead (decision 0016).
        Weights and ``C`` were chosen on a validation split of the BANKING77 train set
        (``docs/research/banking77/``), the cascade threshold with this classifier's own
        calibrated confidence (``benchmarks/bench_classify.py``)."""
        return cls(
            **{
                "fast_embedder": "wordllama",
                "slow_embedder": "e5+minilm",
                "head": "logistic",
                "slow_weight": 2.0,
                "second_weight": 3.0,
                "knn_weight": 0.5,
                "cascade_confidence": TWO_ENCODER_CASCADE,
                "balanced": False,
                **overrides,
            }
        )

    @classmethod
    def recipe(
        cls, name: Recipe, open_set: OpenSet = "score", **overrides: Any
    ) -> ClassifierConfig:
        """The configuration ``POSTROOM_CLASSIFIER_EMBEDDER=name`` (and
        ``POSTROOM_CLASSIFIER_OPEN_SET=open_set``) stand for."""
        if open_set == "nearest":
            if name != "e5+minilm":
                raise ValueError(
                    "the nearest-example open-set check needs the e5+minilm recipe "
                    f"(POSTROOM_CLASSIFIER_EMBEDDER=e5+minilm), not {name!r}"
                )
            overrides = {
                "nearest_quantile": TWO_ENCODER_NEAREST,
                "open_set_quantile": 0.0,
                **overrides,
            }
        elif open_set != "score":
            raise ValueError(f"unknown open-set check {open_set!r}: 'score' or 'nearest'")
        if name == "e5":
            return cls.with_embeddings(**overrides)
        if name == "e5+minilm":
            return cls.with_two_encoders(**overrides)
        return cls(**overrides)
