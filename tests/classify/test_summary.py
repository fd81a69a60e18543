"""The model summary: examples and corrections per category, accuracy, confusions."""

from __future__ import annotations

import numpy as np

from postroom.classify import Example, HashedFeatures, Outcome, summarize

NO_FEATURES = HashedFeatures(np.zeros(0, np.int32), np.zeros(0, np.float32))


def example(category: str, origin: str) -> Example:
    return Example(category=category, origin=origin, features=NO_FEATURES)  # type: ignore[arg-type]


def test_summary_counts_examples_corrections_accuracy_and_confusions() -> None:
    examples = [example("Invoices", "user_example")] * 5 + [example("Delivery", "seed")] * 3
    examples += [example("Delivery", "correction")] * 2 + [example("Complaints", "correction")]
    examples += [example("Invoices", "decision")] * 4
    outcomes = [Outcome("Invoices", "Invoices")] * 6 + [Outcome("Invoices", "Delivery")] * 3
    outcomes += [Outcome(None, "Complaints")]
    summary = summarize(examples, outcomes, categories=["Invoices", "Delivery", "Spam"])

    counts = {c.category: (c.examples, c.corrections, c.decisions) for c in summary.categories}
    assert counts == {
        "Complaints": (0, 1, 0),
        "Delivery": (3, 2, 0),
        "Invoices": (5, 0, 4),
        "Spam": (0, 0, 0),
    }
    assert summary.total_examples == 15
    assert summary.recent_outcomes == 10
    assert summary.recent_accuracy == 0.6
    assert [(c.predicted, c.chosen, c.count) for c in summary.confusions] == [
        ("Invoices", "Delivery", 3),
        (None, "Complaints", 1),
    ]


def test_recent_accuracy_uses_the_window_and_is_none_without_outcomes() -> None:
    outcomes = [Outcome("A", "B")] * 10 + [Outcome("A", "A")] * 4
    assert summarize([], outcomes, window=4).recent_accuracy == 1.0
    assert summarize([], [], window=4).recent_accuracy is None
