"""The model summary shown per integration: examples, corrections and learned decisions per
category, recent accuracy, confusions.

Accuracy is *agreement with people*: the pipeline records an :class:`Outcome` for each model
decision once it is settled — the category a person moved it to (a correction;
:data:`~postroom.processing.decide.NONE_OF_THESE` when they took the category off and chose none)
or the model's own category when nobody changed it. Recent accuracy is the share of agreeing
outcomes among the last ``window``; the confusion summary counts the disagreeing
(predicted, chosen) pairs. Pure and text-free: categories are configuration, outcomes hold
no message data.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
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


@dataclass(frozen=True, slots=True)
class ModelSummary:
    categories: tuple[CategoryCounts, ...]
    recent_outcomes: int
    recent_accuracy: float | None
    """``None`` until at least one outcome was recorded."""
    confusions: tuple[Confusion, ...]

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
    pairs = Counter((o.predicted, o.chosen) for o in recent if not o.agreed)
    ranked = sorted(pairs.items(), key=lambda item: (-item[1], str(item[0][0]), item[0][1]))
    return ModelSummary(
        categories=tuple(CategoryCounts(n, configured[n], corrected[n], decided[n]) for n in names),
        recent_outcomes=len(recent),
        recent_accuracy=accuracy,
        confusions=tuple(Confusion(p, c, n) for (p, c), n in ranked[:top_confusions]),
    )
