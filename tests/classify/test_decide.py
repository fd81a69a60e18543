"""Rules and the model combine predictably (postroom.classify.decide)."""

from __future__ import annotations

import pytest

from postroom.classify import Prediction, combine

CONFIDENT = Prediction(category="Invoices", confidence=0.93, scores={"Invoices": 0.93})
UNSURE = Prediction(category="Invoices", confidence=0.41, scores={"Invoices": 0.41})


def test_matching_rule_wins_over_a_confident_model() -> None:
    decision = combine("Complaints", CONFIDENT, threshold=0.5, needs_review_category="Review")
    assert (decision.category, decision.source, decision.allow_actions) == (
        "Complaints",
        "rule",
        True,
    )
    assert decision.confidence == 1.0


def test_model_decides_at_or_above_threshold() -> None:
    decision = combine(None, CONFIDENT, threshold=0.93, needs_review_category="Review")
    assert (decision.category, decision.source, decision.allow_actions) == (
        "Invoices",
        "model",
        True,
    )
    assert decision.confidence == pytest.approx(0.93)


def test_below_threshold_goes_to_needs_review_without_actions() -> None:
    decision = combine(None, UNSURE, threshold=0.6, needs_review_category="Needs review")
    assert decision.category == "Needs review"
    assert decision.source == "needs_review"
    assert decision.allow_actions is False
    assert decision.confidence == pytest.approx(0.41)


def test_below_threshold_with_nothing_configured_gets_no_category() -> None:
    decision = combine(None, UNSURE, threshold=0.6, needs_review_category=None)
    assert decision.category is None
    assert decision.source == "none"
    assert decision.allow_actions is False


def test_untrained_model_is_treated_as_unsure() -> None:
    empty = Prediction(category=None, confidence=0.0)
    assert combine(None, empty, 0.0, "Review").source == "needs_review"
    assert combine(None, None, 0.5, None).source == "none"


@pytest.mark.parametrize("threshold", [-0.1, 1.5])
def test_threshold_outside_zero_to_one_is_refused(threshold: float) -> None:
    with pytest.raises(ValueError):
        combine(None, CONFIDENT, threshold, None)
