"""How a rule match and the model's prediction become one decision about an email.

Predictable on purpose, so a person can say why an email got its category:

1. A matching rule wins, always (``source="rule"``, confidence 1.0).
2. Otherwise the model decides when its calibrated confidence is at or above the
   integration's threshold (``source="model"``). When it is that sure the email belongs to
   none of the categories (:data:`~postroom.classify.model.NONE_OF_THESE`, learned from a
   person who took a category off a similar email), the email gets nothing
   (``source="model"``, ``category=None``).
3. Otherwise the email gets the configured "Needs review" category (``source="needs_review"``)
   or, when none is configured, nothing (``source="none"``). In both cases it is **not** moved
   or forwarded: ``allow_actions`` is false, and only a category may be added.

The decision records who made it and the model's confidence (also when the model lost), which
is what the activity view and the model summary show. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from postroom.classify.model import NONE_OF_THESE, Prediction

DecisionSource = Literal["rule", "model", "needs_review", "none"]


@dataclass(frozen=True, slots=True)
class Decision:
    category: str | None
    source: DecisionSource
    confidence: float
    allow_actions: bool
    """Whether folder moves and forwards configured for ``category`` may run."""


def combine(
    rule_match: str | None,
    prediction: Prediction | None,
    threshold: float,
    needs_review_category: str | None,
) -> Decision:
    """Decide from the category of the first matching rule (if any) and the model's prediction."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be between 0 and 1, got {threshold!r}")
    if rule_match is not None:
        return Decision(category=rule_match, source="rule", confidence=1.0, allow_actions=True)
    confidence = prediction.confidence if prediction is not None else 0.0
    if prediction is not None and prediction.category is not None and confidence >= threshold:
        return Decision(
            category=prediction.category or None,  # (NONE_OF_THESE: no category)
            source="model",
            confidence=confidence,
            allow_actions=prediction.category != NONE_OF_THESE,
        )
    if needs_review_category:
        return Decision(
            category=needs_review_category,
            source="needs_review",
            confidence=confidence,
            allow_actions=False,
        )
    return Decision(category=None, source="none", confidence=confidence, allow_actions=False)
