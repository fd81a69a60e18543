"""decide() (postroom.processing.decide): rules first, then the model, then "Needs review"."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import pytest

from postroom.processing.decide import Prediction, decide
from postroom.processing.plan import CategoryConfig, Forward, Plan
from postroom.processing.rules import RuleGroup
from postroom.processing.view import Address, MessageView

# Distinctive content, so a test can prove none of it leaks into the plan's reasons.
VIEW = MessageView(
    id="AAMk-42",
    internet_message_id="<42@vendor.nl>",
    subject="Factuur Q7Z-SECRET-SUBJECT",
    sender=Address("Zoë Geheim", "zoe.geheim@vendor.nl"),
    to=(Address("Alice", "alice@contoso.com"),),
    body_text="BODY-SECRET-TEXT",
    received=datetime(2024, 3, 1, 12, tzinfo=UTC),
    categories=("Important",),
)
CONTENT = ("Q7Z", "SECRET", "Zoë", "zoe.geheim", "vendor.nl", "alice", "BODY")


def rules(field_name: str, operator: str, value: str) -> RuleGroup:
    return RuleGroup.from_json(
        {"mode": "all", "items": [{"field": field_name, "operator": operator, "value": value}]}
    )


INVOICES = CategoryConfig(
    name="Invoices",
    folder="Finance/Invoices",
    forward_to=("boekhouding@contoso.com",),
    forward_comment="Ter verwerking",
    rules=rules("Subject", "CONTAINS", "factuur"),
)
SUPPLIERS = CategoryConfig(
    name="Suppliers",
    folder="Suppliers",
    rules=rules("From.Email", "ENDS_WITH", "@vendor.nl"),
)
NEWSLETTERS = CategoryConfig(
    name="Newsletters", folder="Newsletters", forward_to=("archive@contoso.com",)
)
CATEGORIES = (INVOICES, SUPPLIERS, NEWSLETTERS)
UNMATCHED = replace(VIEW, subject="Hallo", sender=Address("Bob", "bob@example.com"))


@dataclass
class FakeClassifier:
    answer: Prediction | None
    calls: list[str] = field(default_factory=list)

    def predict(self, view: MessageView) -> Prediction | None:
        self.calls.append(view.id)
        return self.answer


def model(category: str, confidence: float) -> FakeClassifier:
    return FakeClassifier(Prediction(category, confidence))


def test_first_matching_category_in_configured_order_wins() -> None:
    plan = decide(VIEW, CATEGORIES)  # matches both Invoices and Suppliers
    assert (plan.category, plan.decided_by, plan.confidence) == ("Invoices", "rule", 1.0)
    assert plan.reasons == ("rule:Invoices",)
    plan = decide(VIEW, (SUPPLIERS, INVOICES, NEWSLETTERS))
    assert (plan.category, plan.folder, plan.forward) == ("Suppliers", "Suppliers", None)


def test_a_rule_plan_labels_files_and_forwards() -> None:
    assert decide(VIEW, CATEGORIES) == Plan(
        category="Invoices",
        add_categories=("Invoices",),
        folder="Finance/Invoices",
        forward=Forward(("boekhouding@contoso.com",), "Ter verwerking"),
        decided_by="rule",
        confidence=1.0,
    )


def test_a_rule_beats_a_confident_model_which_is_not_even_asked() -> None:
    classifier = model("Newsletters", 0.99)
    plan = decide(VIEW, CATEGORIES, classifier=classifier)
    assert (plan.category, plan.decided_by) == ("Invoices", "rule")
    assert classifier.calls == []


@pytest.mark.parametrize("confidence", [0.6, 0.82, 1.0])
def test_model_decides_at_or_above_the_threshold(confidence: float) -> None:
    classifier = model("Newsletters", confidence)
    plan = decide(UNMATCHED, CATEGORIES, classifier=classifier)
    assert plan == Plan(
        category="Newsletters",
        add_categories=("Newsletters",),
        folder="Newsletters",
        forward=Forward(("archive@contoso.com",)),
        decided_by="model",
        confidence=confidence,
    )
    assert classifier.calls == [UNMATCHED.id]


def test_model_reason_shows_confidence_and_threshold() -> None:
    plan = decide(UNMATCHED, CATEGORIES, classifier=model("Newsletters", 0.8234))
    assert plan.reasons == ("model:Newsletters:0.82>=0.60",)
    plan = decide(UNMATCHED, CATEGORIES, classifier=model("Newsletters", 0.91), threshold=0.9)
    assert plan.reasons == ("model:Newsletters:0.91>=0.90",)


@pytest.mark.parametrize(
    ("confidence", "reason"),
    [(0.41, "model:0.41<0.60"), (0.599, "model:0.599<0.600"), (0.0, "model:0.00<0.60")],
)
def test_below_the_threshold_only_needs_review_is_added(confidence: float, reason: str) -> None:
    plan = decide(UNMATCHED, CATEGORIES, classifier=model("Invoices", confidence))
    assert plan == Plan(
        category="Needs review",
        add_categories=("Needs review",),
        folder=None,
        forward=None,
        decided_by="needs_review",
        confidence=confidence,
    )
    assert plan.reasons == (reason, "needs_review:Needs review")


def test_custom_needs_review_name_and_threshold() -> None:
    plan = decide(
        UNMATCHED,
        CATEGORIES,
        classifier=model("Invoices", 0.85),
        threshold=0.9,
        needs_review="Te beoordelen",
    )
    assert (plan.category, plan.add_categories) == ("Te beoordelen", ("Te beoordelen",))


def test_below_the_threshold_without_needs_review_is_an_empty_plan() -> None:
    plan = decide(UNMATCHED, CATEGORIES, classifier=model("Invoices", 0.3), needs_review=None)
    assert plan.empty
    assert (plan.category, plan.decided_by, plan.confidence) == (None, "none", 0.3)
    assert plan.reasons == ("model:0.30<0.60", "needs_review:off")


def test_a_model_without_an_answer_or_with_an_unknown_category_is_unsure() -> None:
    plan = decide(UNMATCHED, CATEGORIES, classifier=FakeClassifier(None))
    assert (plan.decided_by, plan.add_categories, plan.confidence) == (
        "needs_review",
        ("Needs review",),
        None,
    )
    assert plan.reasons[0] == "model:none"
    plan = decide(UNMATCHED, CATEGORIES, classifier=model("Deleted category", 0.97))
    assert (plan.decided_by, plan.folder, plan.forward) == ("needs_review", None, None)
    assert plan.reasons[0] == "model:unknown-category"
    untrained = FakeClassifier(Prediction(None, 0.0))  # (a model before any training)
    plan = decide(UNMATCHED, CATEGORIES, classifier=untrained, needs_review=None)
    assert (plan.decided_by, plan.category, plan.reasons[0]) == ("none", None, "model:none")


def test_the_model_may_name_a_category_in_other_case() -> None:
    plan = decide(UNMATCHED, CATEGORIES, classifier=model("NEWSLETTERS", 0.9))
    assert (plan.category, plan.folder) == ("Newsletters", "Newsletters")


def test_no_rule_and_no_classifier_is_an_empty_plan() -> None:
    plan = decide(UNMATCHED, CATEGORIES)
    assert plan == Plan(category=None, decided_by="none")
    assert plan.empty and plan.confidence is None
    assert decide(VIEW, ()).empty
    assert decide(VIEW, (NEWSLETTERS,)).decided_by == "none"  # rules=None: model only


def test_forward_is_suppressed_with_minimal_permissions() -> None:
    plan = decide(VIEW, CATEGORIES, allow_forward=False)
    assert plan.forward is None
    assert (plan.add_categories, plan.folder) == (("Invoices",), "Finance/Invoices")
    assert plan.reasons == ("rule:Invoices", "forward:suppressed:permissions")
    plan = decide(UNMATCHED, CATEGORIES, classifier=model("Newsletters", 0.9), allow_forward=False)
    assert plan.forward is None and plan.folder == "Newsletters"


def test_historical_mail_is_not_forwarded_unless_opted_in() -> None:
    plan = decide(VIEW, CATEGORIES, historical=True)
    assert plan.forward is None and plan.folder == "Finance/Invoices"
    assert plan.reasons == ("rule:Invoices", "forward:suppressed:historical")
    plan = decide(VIEW, CATEGORIES, historical=True, forward_historical=True)
    assert plan.forward == Forward(("boekhouding@contoso.com",), "Ter verwerking")
    plan = decide(VIEW, CATEGORIES, historical=False, forward_historical=True)
    assert plan.forward is not None
    plan = decide(VIEW, CATEGORIES, historical=True, forward_historical=True, allow_forward=False)
    assert plan.forward is None
    plan = decide(UNMATCHED, CATEGORIES, classifier=model("Newsletters", 0.9), historical=True)
    assert plan.forward is None and plan.decided_by == "model"


def test_no_forward_without_addresses_and_addresses_are_cleaned() -> None:
    blank = replace(INVOICES, forward_to=("", "  "))
    plan = decide(VIEW, (blank,))
    assert plan.forward is None and plan.reasons == ("rule:Invoices",)
    messy = replace(INVOICES, forward_to=(" a@contoso.com", "", "A@contoso.com", "b@contoso.com"))
    forward = decide(VIEW, (messy,)).forward
    assert forward is not None and forward.to == ("a@contoso.com", "b@contoso.com")


def test_no_folder_leaves_the_message_where_it_is() -> None:
    assert decide(VIEW, (replace(INVOICES, folder=None),)).folder is None
    assert decide(VIEW, (replace(INVOICES, folder="  "),)).folder is None


def test_the_plan_only_adds_and_never_repeats_a_category() -> None:
    plan = decide(VIEW, CATEGORIES)
    assert plan.add_categories == ("Invoices",)  # the user's "Important" stays untouched
    assert "Important" not in plan.add_categories
    tagged = replace(VIEW, categories=("Important", " invoices"))
    plan = decide(tagged, CATEGORIES)
    assert plan.add_categories == ()
    assert (plan.category, plan.folder) == ("Invoices", "Finance/Invoices")
    reviewed = replace(UNMATCHED, categories=("NEEDS REVIEW",))
    plan = decide(reviewed, CATEGORIES, classifier=model("Invoices", 0.1))
    assert plan.decided_by == "needs_review" and plan.add_categories == ()


@pytest.mark.parametrize("threshold", [-0.01, 1.01, float("nan")])
def test_threshold_outside_zero_to_one_is_refused(threshold: float) -> None:
    with pytest.raises(ValueError, match="threshold"):
        decide(VIEW, CATEGORIES, threshold=threshold)


def test_unicode_rules_drive_decisions() -> None:
    adres = CategoryConfig(name="Adres", rules=rules("Subject", "CONTAINS", "STRASSE"))
    assert decide(replace(VIEW, subject="Neue Hauptstraße"), (adres,)).category == "Adres"
    assert decide(replace(VIEW, subject="Neue Hauptweg"), (adres,)).category is None


def _all_plans() -> list[tuple[dict[str, object], Plan]]:
    """Every combination of rule outcome, model answer, needs-review and forwarding flags."""
    views = {"rule-match": VIEW, "no-match": UNMATCHED}
    models: dict[str, FakeClassifier | None] = {
        "off": None,
        "silent": FakeClassifier(None),
        "unsure": model("Newsletters", 0.2),
        "sure": model("Newsletters", 0.95),
        "stranger": model("Elsewhere", 0.95),
    }
    plans = []
    for (vname, view), (mname, clf), review, allow, hist, fwd_hist, own in itertools.product(
        views.items(),
        models.items(),
        ("Needs review", None),
        (True, False),
        (True, False),
        (True, False),
        ((), ("Invoices", "Newsletters", "Needs review")),
    ):
        view = replace(view, categories=own)
        args: dict[str, object] = dict(
            view=vname,
            model=mname,
            review=review,
            allow=allow,
            hist=hist,
            fwd_hist=fwd_hist,
            own=own,
        )
        plan = decide(
            view,
            CATEGORIES,
            classifier=clf,
            needs_review=review,
            allow_forward=allow,
            historical=hist,
            forward_historical=fwd_hist,
        )
        assert plan == decide(
            view,
            CATEGORIES,
            classifier=clf,
            needs_review=review,
            allow_forward=allow,
            historical=hist,
            forward_historical=fwd_hist,
        )
        plans.append((args, plan))
    return plans


def test_brute_force_invariants() -> None:
    plans = _all_plans()
    assert len(plans) == 2 * 5 * 2 * 2 * 2 * 2 * 2
    for args, plan in plans:
        ruled = args["view"] == "rule-match"
        sure = args["model"] == "sure"
        assert (plan.decided_by == "rule") is ruled, args
        assert (plan.decided_by == "model") is (not ruled and sure), args
        if plan.forward is not None:
            assert plan.decided_by in ("rule", "model"), args
            assert args["allow"] and (not args["hist"] or args["fwd_hist"]), args
            assert plan.forward.to, args
        elif plan.decided_by in ("rule", "model") and args["allow"]:
            assert args["hist"] and not args["fwd_hist"], args
        if plan.folder is not None:
            assert plan.decided_by in ("rule", "model"), args
        if plan.decided_by in ("needs_review", "none"):
            assert plan.folder is None and plan.forward is None, args
        assert set(plan.add_categories) <= {plan.category}, args
        own = args["own"]
        assert isinstance(own, tuple)
        assert plan.add_categories == (
            () if plan.category is None or plan.category in own else (plan.category,)
        ), args
        if plan.decided_by == "none":
            assert plan.empty and plan.category is None, args
        assert plan.reasons, args
        for reason in plan.reasons:
            assert not any(bit.lower() in reason.lower() for bit in CONTENT), (reason, args)
        assert plan.to_json()  # serialisable for the ledger
        assert Plan.from_json(plan.to_json()) == plan


def test_a_plan_says_why_in_configuration_and_numbers_never_in_mail_content() -> None:
    """The activity view's "why": the rule's conditions that matched, or the categories the
    model weighed next - never a subject, sender or body (the ledger keeps the plan)."""
    from postroom.processing.rules import RuleGroup

    plan = decide(VIEW, CATEGORIES)
    assert plan.why == (("rule", "Subject", "CONTAINS", "factuur"),)
    nested = CategoryConfig(
        name="Nested",
        rules=RuleGroup.from_json(
            {
                "mode": "any",
                "items": [
                    {"field": "Subject", "operator": "CONTAINS", "value": "nothing like it"},
                    {
                        "mode": "all",
                        "items": [
                            {"field": "From.Email", "operator": "ENDS_WITH", "value": "vendor.nl"},
                            {"field": "Subject", "operator": "NOT_CONTAINS", "value": "offer"},
                        ],
                    },
                ],
            }
        ),
    )
    assert decide(VIEW, (nested,)).why == (
        ("rule", "From.Email", "ENDS_WITH", "vendor.nl"),
        ("rule", "Subject", "NOT_CONTAINS", "offer"),
    )
    scores = {"Newsletters": 0.7, "Invoices": 0.2, "Suppliers": 0.06, "Other": 0.04}
    classifier = FakeClassifier(Prediction("Newsletters", 0.7, scores=scores))
    plan = decide(UNMATCHED, CATEGORIES, classifier=classifier)
    assert plan.why == (("next", "Invoices", "0.20"), ("next", "Suppliers", "0.06"))
    stored = Plan.from_json(plan.to_json())
    assert stored.why == plan.why
    text = repr(plan.to_json()) + repr(decide(VIEW, CATEGORIES).to_json())
    for secret in ("Q7Z-SECRET-SUBJECT", "BODY-SECRET-TEXT", "Geheim", "zoe.geheim"):
        assert secret not in text
