"""``decide``: one message, the integration's categories, optionally a classifier → a :class:`Plan`.

The order of precedence is fixed, so a person can always say why an email got its category:

1. **Rules.** The first category, in configured order, whose rules match wins
   (``decided_by="rule"``, confidence 1.0). Later categories are not consulted.
2. **The classifier**, when one is given: its category is used when its confidence is at or
   above ``threshold`` *and* it names a configured category (``decided_by="model"``). A
   prediction of none of the categories (``none_of_these``: a person took the category off
   similar mail), that sure, leaves the message alone (``decided_by="model"``, no category).
   So does a prediction that *fits no category* (``fits`` false: the email is less like the
   nearest category than nearly all of that category's own examples; see
   ``docs/decisions/0010-open-set.md``), however sure the model is between the categories.
3. **Needs review.** Otherwise, when a classifier was asked, the message only gets the
   ``needs_review`` category: no folder, no forward (``decided_by="needs_review"``). With
   ``needs_review=None``, or without a classifier, the plan is empty (``decided_by="none"``).

A plan only ever *adds* a category: the user's own categories stay, and a category the
message already has (compared case-insensitively, as Outlook does) is not added again.
A forward is planned only when the category has addresses, the integration may send mail
(``allow_forward``; false with minimal permissions) and, for historical (backfilled) mail,
only when the user opted in with ``forward_historical``.

``Plan.reasons`` are short machine-readable strings for the activity view (``rule:Invoices``,
``model:Invoices:0.82>=0.60``, ``via:conversation``, ``model:0.41<0.60``,
``model:fits-none:Invoices:0.03<0.10`` (nearest category, and the share of its own examples
this email is more like, below the integration's bar), ``model:fits-none-nearest:Invoices:
0.01<0.02`` (the same from the nearest example, with sentence encoders),
``forward:suppressed:historical``). They name configured categories and numbers, never message
content (invariant 2). They are stored with the plan.

Pure and deterministic: no I/O, no logging, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

from postroom.processing.plan import CategoryConfig, DecidedBy, Forward, Plan
from postroom.processing.rules import MessageFacts
from postroom.processing.view import MessageView

NONE_OF_THESE = ""
"""The class of emails that belong to none of the categories (a person took the category the
model gave off a similar email): never a category's name (names are not empty)."""

Stage = Literal["fast", "slow", "conversation", "empty"]
"""Which part of the classifier answered (``conversation``: where the conversation went)."""


@dataclass(frozen=True, slots=True)
class Prediction:
    """A classifier's answer: its best category, the calibrated probability (0–1), all of them.

    ``category`` is None before any training, and :data:`NONE_OF_THESE` when the model thinks
    the email belongs to none of the categories (only after a person said so of a similar one).
    """

    category: str | None
    confidence: float
    scores: Mapping[str, float] = field(default_factory=dict)
    stage: Stage = "empty"
    fits: bool = True
    """False when the email is less like ``category`` than nearly all of its own examples
    (``fit`` below ``fit_bar``): it fits no category, and ``category`` is only the nearest."""
    fit: float | None = None
    """Share of ``category``'s own examples (scored out of fold at the last fit) that scored
    lower than this email, 0–1; None when not known (no fit yet, a category added since)."""
    fit_bar: float = 0.0
    """The share below which an email fits no category (the classifier's setting)."""
    nearest_fit: float | None = None
    """Second open-set check (recipes with sentence encoders): the share of ``category``'s own
    examples whose most similar other example is less similar to them than ``category``'s
    most similar example is to this email, 0–1; None when not checked."""
    nearest_bar: float = 0.0
    """The share below which ``nearest_fit`` says the email fits no category."""
    sureness: float | None = None
    """The calibrated confidence before the small-category shrinkage: what the model's own
    comparisons use (the cascade, a conversation's earlier model decision), since both sides
    of those come from the same model. None: the same as ``confidence``."""

    @property
    def none_of_these(self) -> bool:
        """The email belongs to none of the categories (``category`` names none)."""
        return self.category == NONE_OF_THESE

    @property
    def via(self) -> str | None:
        """How the classifier got there when it is worth showing (``"conversation"``)."""
        return "conversation" if self.stage == "conversation" else None


class Classifier(Protocol):
    """Anything that predicts a category; ``None`` when it has nothing to say."""

    def predict(self, view: MessageView) -> Prediction | None: ...


def decide(
    view: MessageView,
    categories: Sequence[CategoryConfig],
    *,
    classifier: Classifier | None = None,
    threshold: float = 0.6,
    needs_review: str | None = "Needs review",
    allow_forward: bool = True,
    historical: bool = False,
    forward_historical: bool = False,
) -> Plan:
    """The plan for one message (see the module docstring for the order of precedence)."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be between 0 and 1, got {threshold!r}")
    facts = MessageFacts(view)
    for category in categories:
        if category.rules is not None and category.rules.matches(facts):
            plan = _plan(
                view,
                category,
                decided_by="rule",
                confidence=1.0,
                reasons=(f"rule:{category.name}",),
                forward_allowed=allow_forward,
                historical=historical and not forward_historical,
            )
            conditions = category.rules.matched(facts)[:5]
            return replace(
                plan,
                why=tuple(
                    ("rule", c.field, c.operator, "" if c.value is None else str(c.value)[:200])
                    for c in conditions
                ),
            )
    if classifier is None:
        return Plan(category=None, decided_by="none", reasons=("rule:none", "model:off"))

    prediction = classifier.predict(view)
    if prediction is not None and prediction.category is None:
        prediction = None  # (an untrained model has nothing to say)
    confidence = prediction.confidence if prediction is not None else None
    if prediction is None:
        why = "model:none"
    else:
        chosen = _configured(categories, prediction.category)
        shown = _number(prediction.confidence, threshold)
        if chosen is not None and not prediction.fits and prediction.via is None:
            return Plan(
                category=None,
                decided_by="model",
                confidence=prediction.confidence,
                reasons=(_fits_none_reason(prediction, chosen.name),),
            )
        if chosen is not None and prediction.confidence >= threshold:
            plan = _plan(
                view,
                chosen,
                decided_by="model",
                confidence=prediction.confidence,
                reasons=(f"model:{chosen.name}:{shown[0]}>={shown[1]}",)
                + ((f"via:{prediction.via}",) if prediction.via else ()),
                forward_allowed=allow_forward,
                historical=historical and not forward_historical,
            )
            return replace(plan, why=_weighed_next(prediction, chosen.name))
        if prediction.none_of_these and prediction.confidence >= threshold:
            return Plan(
                category=None,
                decided_by="model",
                confidence=prediction.confidence,
                reasons=(f"model:none-of-these:{shown[0]}>={shown[1]}",),
            )
        if chosen is None and not prediction.none_of_these:
            why = "model:unknown-category"
        else:
            why = f"model:{shown[0]}<{shown[1]}"

    if needs_review is None:
        return Plan(
            category=None,
            decided_by="none",
            confidence=confidence,
            reasons=(why, "needs_review:off"),
        )
    return Plan(
        category=needs_review,
        add_categories=_added(view, needs_review),
        decided_by="needs_review",
        confidence=confidence,
        reasons=(why, f"needs_review:{needs_review}"),
    )


def _plan(
    view: MessageView,
    category: CategoryConfig,
    *,
    decided_by: DecidedBy,
    confidence: float,
    reasons: tuple[str, ...],
    forward_allowed: bool,
    historical: bool,
) -> Plan:
    forward = None
    recipients = _recipients(category.forward_to)
    if recipients:
        if not forward_allowed:
            reasons += ("forward:suppressed:permissions",)
        elif historical:
            reasons += ("forward:suppressed:historical",)
        else:
            forward = Forward(recipients, category.forward_comment)
    return Plan(
        category=category.name,
        add_categories=_added(view, category.name),
        folder=(category.folder or "").strip() or None,
        forward=forward,
        decided_by=decided_by,
        confidence=confidence,
        reasons=reasons,
    )


def _weighed_next(prediction: Prediction, chosen: str) -> tuple[tuple[str, ...], ...]:
    """The two categories the model scored next after ``chosen``, with their probability."""
    others = sorted(
        (
            (score, name)
            for name, score in prediction.scores.items()
            if name not in (chosen, NONE_OF_THESE) and score > 0.0
        ),
        reverse=True,
    )[:2]
    return tuple(("next", name[:255], f"{score:.2f}") for score, name in others)


def _added(view: MessageView, name: str) -> tuple[str, ...]:
    """``(name,)`` unless the message already carries it (the user's own categories stay)."""
    key = name.strip().casefold()
    present = any(existing.strip().casefold() == key for existing in view.categories)
    return () if present else (name,)


def _configured(categories: Sequence[CategoryConfig], name: str | None) -> CategoryConfig | None:
    """The configured category a prediction names: exact name first, then case-insensitive."""
    if not name:
        return None
    for category in categories:
        if category.name == name:
            return category
    key = name.strip().casefold()
    for category in categories:
        if category.name.strip().casefold() == key:
            return category
    return None


def _recipients(addresses: Sequence[str]) -> tuple[str, ...]:
    """Forward addresses without blanks and duplicates, in configured order."""
    seen: set[str] = set()
    kept = []
    for address in addresses:
        address = address.strip()
        if address and address.casefold() not in seen:
            seen.add(address.casefold())
            kept.append(address)
    return tuple(kept)


def _number(confidence: float, threshold: float) -> tuple[str, str]:
    """Confidence and threshold as text, with enough digits that their order stays visible
    (0.599 below 0.6 is ``0.599<0.600``, never ``0.60<0.60``)."""
    for digits in range(2, 7):
        shown = f"{confidence:.{digits}f}", f"{threshold:.{digits}f}"
        if shown[0] != shown[1] or confidence == threshold:
            return shown
    return shown


def _fits_none_reason(prediction: Prediction, name: str) -> str:
    """Which open-set check said no: the score's (``fits-none``) or, when that one passed,
    the nearest example's (``fits-none-nearest``)."""
    score_passed = prediction.fit is None or prediction.fit >= prediction.fit_bar
    if (
        score_passed
        and prediction.nearest_fit is not None
        and prediction.nearest_fit < prediction.nearest_bar
    ):
        near = _number(prediction.nearest_fit, prediction.nearest_bar)
        return f"model:fits-none-nearest:{name}:{near[0]}<{near[1]}"
    fit = _number(prediction.fit or 0.0, prediction.fit_bar)
    return f"model:fits-none:{name}:{fit[0]}<{fit[1]}"


def fits_none_words(reasons: Sequence[str]) -> str | None:
    """What the activity view says of a message that fit no category, from its plan's
    reasons (``model:fits-none:Invoices:0.03<0.10``): "fits no category: nearest is Invoices,
    more like it than 3 % of its examples (at least 10 % needed)"; for the nearest-example
    check (``model:fits-none-nearest:Invoices:0.01<0.02``): "fits no category: nearest is
    Invoices, as close to one of its examples as only 1 % of them are to another (at least
    2 % needed)"; None for any other plan."""
    for reason in reasons:
        nearest = reason.startswith("model:fits-none-nearest:")
        if not nearest and not reason.startswith("model:fits-none:"):
            continue
        prefix = "model:fits-none-nearest:" if nearest else "model:fits-none:"
        name, _, numbers = reason.removeprefix(prefix).rpartition(":")
        fit, _, bar = numbers.partition("<")
        try:
            shown = f"{float(fit):.0%}", f"{float(bar):.0%}"
        except ValueError:
            return "fits no category"
        if nearest:
            return (
                f"fits no category: nearest is {name}, as close to one of its examples as "
                f"only {shown[0]} of them are to another (at least {shown[1]} needed)"
            )
        return (
            f"fits no category: nearest is {name}, more like it than {shown[0]} of its "
            f"examples (at least {shown[1]} needed)"
        )
    return None
