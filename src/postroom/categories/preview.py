"""The "test against a recent email": which category the rules in the form would give, and why.

:func:`explain` is pure; the recent emails are read (GET only) from Graph for the page being
rendered and reach only the template, never the database (invariant 2).
"""

from __future__ import annotations

from dataclasses import dataclass

from postroom.categories.form import describe, describe_condition
from postroom.processing.decide import decide
from postroom.processing.plan import CategoryConfig, Plan
from postroom.processing.rules import (
    RuleGroup,
)
from postroom.processing.view import MessageView


# ---------------------------------------------------------------------- the test, pure
@dataclass(frozen=True)
class Verdict:
    """One category's answer in the test: ``matched`` / ``no match`` / ``no rules`` /
    ``not tried`` (an earlier category matched first)."""

    name: str
    outcome: str
    edited: bool
    conditions: tuple[tuple[str, bool], ...] = ()


@dataclass(frozen=True)
class PreviewResult:
    subject: str
    sender: str
    plan: Plan
    verdicts: tuple[Verdict, ...]


def explain(
    view: MessageView,
    configs: list[CategoryConfig],
    edited_index: int,
    *,
    allow_forward: bool,
) -> PreviewResult:
    """What Postroom would do with this message, and each category's part in it. Pure."""
    plan = decide(view, configs, allow_forward=allow_forward, needs_review=None)
    verdicts = []
    decided = False
    for index, config in enumerate(configs):
        rows: tuple[tuple[str, bool], ...] = ()
        if config.rules is not None:
            rows = tuple(
                (
                    f"({describe(item)})"
                    if isinstance(item, RuleGroup)
                    else describe_condition(item),
                    item.matches(view),
                )
                for item in config.rules.items
            )
        if decided:
            outcome = "not tried"
        elif config.rules is None:
            outcome = "no rules"
        elif config.rules.matches(view):
            outcome, decided = "matched", True
        else:
            outcome = "no match"
        verdicts.append(Verdict(config.name, outcome, index == edited_index, rows))
    sender = ""
    if view.sender is not None:
        sender = view.sender.name or view.sender.address
        if view.sender.name and view.sender.address:
            sender = f"{view.sender.name} <{view.sender.address}>"
    return PreviewResult(view.subject, sender, plan, tuple(verdicts))
