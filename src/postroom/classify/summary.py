"""The model summary shown per integration: examples, corrections and learned decisions per
category, recent accuracy (overall and per category the model decided), confusions.

Accuracy is *agreement with people*: the pipeline records an :class:`Outcome` for each model
decision once it is settled — the category a person moved it to (a correction;
:data:`~postroom.processing.decide.NONE_OF_THESE` when they took the category off and chose none)
or the model's own category when nobody changed it. Recent accuracy is the share of agreeing
outcomes among the last ``window``; the confusion summary counts the disagreeing
(predicted, chosen) pairs. Per category (:func:`category_accuracy`) the same outcomes are
grouped by what the model said, so the per-category figures add up to the overall one; a
category with fewer than :data:`TOO_FEW` decisions has no percentage ("too few to tell").
Pure and text-free: categories are configuration, outcomes hold no message data.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from postroom.classify.examples import Example
from postroom.processing.decide import NONE_OF_THESE


@dataclass(frozen=True, slots=True)
class Outcome:
    predicted: str | None
    chosen: str

    @property
    def agreed(self) -> bool:
        return self.predicted == self.chosen


@dataclass(frozen=True, slots=True)
class CategoryCounts:
    category: str
    examples: int
    """Examples a person typed or seeded (``user_example`` and ``seed``)."""
    corrections: int
    decisions: int = 0
    """Decisions nobody corrected, learned as examples (``decision``)."""


@dataclass(frozen=True, slots=True)
class Confusion:
    predicted: str | None
    chosen: str
    count: int


TOO_FEW = 5
"""A category the model decided fewer times than this gets no percentage: too few to tell."""


@dataclass(frozen=True, slots=True)
class CategoryAccuracy:
    """How often people kept what the model said for one category (:func:`category_accuracy`)."""

    category: str | None
    decided: int
    """The model's decisions for this category in the window."""
    kept: int
    """... of which nobody changed (or a person chose this category again)."""
    to_none: int = 0
    """... of which a person took the category off and chose none ("none of these")."""

    @property
    def corrected(self) -> int:
        """Decisions a person changed, to another category or to none of these."""
        return self.decided - self.kept

    @property
    def accuracy(self) -> float | None:
        """``kept / decided``; ``None`` with fewer than :data:`TOO_FEW` decisions."""
        return self.kept / self.decided if self.decided >= TOO_FEW else None


def category_accuracy(
    pairs: Mapping[tuple[str | None, str], int],
) -> tuple[CategoryAccuracy, ...]:
    """Per category the model said, from outcome counts keyed by (predicted, chosen): most
    decisions first, then by name."""
    decided: Counter[str | None] = Counter()
    kept: Counter[str | None] = Counter()
    to_none: Counter[str | None] = Counter()
    for (predicted, chosen), count in pairs.items():
        if count <= 0:
            continue
        decided[predicted] += count
        if predicted == chosen:
            kept[predicted] += count
        elif chosen == NONE_OF_THESE:
            to_none[predicted] += count
    ranked = sorted(decided, key=lambda name: (-decided[name], name is None, str(name).casefold()))
    return tuple(CategoryAccuracy(n, decided[n], kept[n], to_none[n]) for n in ranked)


@dataclass(frozen=True, slots=True)
class ModelSummary:
    categories: tuple[CategoryCounts, ...]
    recent_outcomes: int
    recent_accuracy: float | None
    """``None`` until at least one outcome was recorded."""
    confusions: tuple[Confusion, ...]
    by_category: tuple[CategoryAccuracy, ...] = ()
    """:func:`category_accuracy` of the same recent outcomes."""
    outcome_counts: tuple[Confusion, ...] = ()
    """Every (predicted, chosen) pair of the recent outcomes, the agreeing ones too (the
    confusion matrix)."""
    window: int = 0
    """How many of the latest outcomes "recent" means."""

    @property
    def total_examples(self) -> int:
        return sum(c.examples + c.corrections + c.decisions for c in self.categories)


def summarize(
    examples: Iterable[Example],
    outcomes: Sequence[Outcome],
    *,
    categories: Iterable[str] = (),
    window: int = 200,
    top_confusions: int = 5,
) -> ModelSummary:
    """Summarize a classifier's examples and its last ``window`` outcomes (oldest first)."""
    configured: Counter[str] = Counter()
    corrected: Counter[str] = Counter()
    decided: Counter[str] = Counter()
    by_origin = {"correction": corrected, "decision": decided}
    for example in examples:
        by_origin.get(example.origin, configured)[example.category] += 1
    names = sorted(set(categories) | set(configured) | set(corrected) | set(decided))
    if NONE_OF_THESE in names:  # (last: it is no category, see Outcome)
        names = [*names[1:], NONE_OF_THESE]
    recent = list(outcomes[-window:]) if window > 0 else []
    accuracy = sum(o.agreed for o in recent) / len(recent) if recent else None
    every = Counter((o.predicted, o.chosen) for o in recent)
    pairs = Counter({(p, c): n for (p, c), n in every.items() if p != c})
    ranked = sorted(pairs.items(), key=lambda item: (-item[1], str(item[0][0]), item[0][1]))
    return ModelSummary(
        categories=tuple(CategoryCounts(n, configured[n], corrected[n], decided[n]) for n in names),
        recent_outcomes=len(recent),
        recent_accuracy=accuracy,
        confusions=tuple(Confusion(p, c, n) for (p, c), n in ranked[:top_confusions]),
        by_category=category_accuracy(every),
        outcome_counts=tuple(
            Confusion(p, c, n)
            for (p, c), n in sorted(every.items(), key=lambda i: (str(i[0][0]), i[0][1]))
        ),
        window=window,
    )
