"""Rules (postroom.processing.rules): every field × operator, Unicode, dates, nesting, JSON."""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from postroom.processing.rules import (
    FIELD_KINDS,
    FIELDS,
    MAX_CONDITIONS,
    MAX_DEPTH,
    MAX_VALUE_LENGTH,
    OPERATORS,
    OPERATORS_BY_KIND,
    Condition,
    MessageFacts,
    RuleError,
    RuleGroup,
    normalise,
)
from postroom.processing.view import Address, MessageView

NOON = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)

VIEW = MessageView(
    id="AAMk-1",
    internet_message_id="<1@vendor.nl>",
    subject="Factuur 2024-031 — Hauptstraße",
    sender=Address("Jan de Vries", "Jan@Vendor.NL"),
    to=(Address("Alice Smith", "alice@contoso.com"), Address("", "finance@contoso.com")),
    cc=(),
    body_text="Beste Alice,\n\nIn de bijlage vindt u de financiële   rapportage.\n",
    has_attachments=True,
    importance="high",
    received=NOON,
    categories=("Important",),
)
WITH_CC = replace(VIEW, cc=(Address("Piet Bakker", "piet@contoso.com"),))
BARE = MessageView(id="AAMk-2", internet_message_id="<2@x>", subject="", sender=None)


def cond(field: str, operator: str, value: Any = None) -> Condition:
    return Condition(field, operator, value)  # type: ignore[arg-type]


# (field, operator, value, view, expected): positive and negative for every field × operator.
CASES: list[tuple[str, str, Any, MessageView, bool]] = [
    # From.Email
    ("From.Email", "EQUAL", "jan@vendor.nl", VIEW, True),
    ("From.Email", "EQUAL", "  JAN@VENDOR.NL ", VIEW, True),
    ("From.Email", "EQUAL", "jan@vendor", VIEW, False),
    ("From.Email", "NOT_EQUALS", "jan@vendor.nl", VIEW, False),
    ("From.Email", "NOT_EQUALS", "piet@vendor.nl", VIEW, True),
    ("From.Email", "CONTAINS", "@VENDOR.", VIEW, True),
    ("From.Email", "CONTAINS", "@fabrikam", VIEW, False),
    ("From.Email", "NOT_CONTAINS", "@fabrikam", VIEW, True),
    ("From.Email", "NOT_CONTAINS", "vendor", VIEW, False),
    ("From.Email", "STARTS_WITH", "jan@", VIEW, True),
    ("From.Email", "STARTS_WITH", "vendor", VIEW, False),
    ("From.Email", "ENDS_WITH", "@vendor.nl", VIEW, True),
    ("From.Email", "ENDS_WITH", ".com", VIEW, False),
    ("From.Email", "EXISTS", None, VIEW, True),
    ("From.Email", "EXISTS", None, BARE, False),
    ("From.Email", "DOES_NOT_EXIST", None, VIEW, False),
    ("From.Email", "DOES_NOT_EXIST", None, BARE, True),
    ("From.Email", "EQUAL", "jan@vendor.nl", BARE, False),
    ("From.Email", "NOT_EQUALS", "jan@vendor.nl", BARE, True),
    ("From.Email", "CONTAINS", "@", BARE, False),
    ("From.Email", "NOT_CONTAINS", "@", BARE, True),
    # From.Name
    ("From.Name", "EQUAL", "jan de vries", VIEW, True),
    ("From.Name", "EQUAL", "jan", VIEW, False),
    ("From.Name", "NOT_EQUALS", "JAN DE VRIES", VIEW, False),
    ("From.Name", "NOT_EQUALS", "Piet", VIEW, True),
    ("From.Name", "CONTAINS", "de vr", VIEW, True),
    ("From.Name", "CONTAINS", "bakker", VIEW, False),
    ("From.Name", "NOT_CONTAINS", "bakker", VIEW, True),
    ("From.Name", "NOT_CONTAINS", "DE", VIEW, False),
    ("From.Name", "STARTS_WITH", "jan ", VIEW, True),
    ("From.Name", "STARTS_WITH", "vries", VIEW, False),
    ("From.Name", "ENDS_WITH", "VRIES", VIEW, True),
    ("From.Name", "ENDS_WITH", "jan", VIEW, False),
    ("From.Name", "EXISTS", None, VIEW, True),
    ("From.Name", "EXISTS", None, replace(VIEW, sender=Address("", "x@y.z")), False),
    ("From.Name", "DOES_NOT_EXIST", None, VIEW, False),
    ("From.Name", "DOES_NOT_EXIST", None, BARE, True),
    # To: any recipient's address or name
    ("To", "EQUAL", "alice@contoso.com", VIEW, True),
    ("To", "EQUAL", "FINANCE@contoso.com", VIEW, True),
    ("To", "EQUAL", "alice smith", VIEW, True),
    ("To", "EQUAL", "bob@contoso.com", VIEW, False),
    ("To", "NOT_EQUALS", "finance@contoso.com", VIEW, False),
    ("To", "NOT_EQUALS", "bob@contoso.com", VIEW, True),
    ("To", "CONTAINS", "smith", VIEW, True),
    ("To", "CONTAINS", "bob", VIEW, False),
    ("To", "NOT_CONTAINS", "fabrikam", VIEW, True),
    ("To", "NOT_CONTAINS", "finance", VIEW, False),
    ("To", "STARTS_WITH", "fin", VIEW, True),
    ("To", "STARTS_WITH", "contoso", VIEW, False),
    ("To", "ENDS_WITH", "SMITH", VIEW, True),
    ("To", "ENDS_WITH", "@fabrikam.com", VIEW, False),
    ("To", "EXISTS", None, VIEW, True),
    ("To", "EXISTS", None, BARE, False),
    ("To", "DOES_NOT_EXIST", None, VIEW, False),
    ("To", "DOES_NOT_EXIST", None, BARE, True),
    # Cc: empty on VIEW, one recipient on WITH_CC
    ("Cc", "EQUAL", "piet@contoso.com", WITH_CC, True),
    ("Cc", "EQUAL", "piet@contoso.com", VIEW, False),
    ("Cc", "NOT_EQUALS", "piet bakker", WITH_CC, False),
    ("Cc", "NOT_EQUALS", "piet@contoso.com", VIEW, True),
    ("Cc", "CONTAINS", "bakker", WITH_CC, True),
    ("Cc", "CONTAINS", "alice", WITH_CC, False),
    ("Cc", "NOT_CONTAINS", "alice", WITH_CC, True),
    ("Cc", "NOT_CONTAINS", "contoso", WITH_CC, False),
    ("Cc", "NOT_CONTAINS", "contoso", VIEW, True),
    ("Cc", "STARTS_WITH", "piet", WITH_CC, True),
    ("Cc", "STARTS_WITH", "piet", VIEW, False),
    ("Cc", "ENDS_WITH", "contoso.com", WITH_CC, True),
    ("Cc", "ENDS_WITH", "contoso.nl", WITH_CC, False),
    ("Cc", "EXISTS", None, WITH_CC, True),
    ("Cc", "EXISTS", None, VIEW, False),
    ("Cc", "DOES_NOT_EXIST", None, WITH_CC, False),
    ("Cc", "DOES_NOT_EXIST", None, VIEW, True),
    # Subject
    ("Subject", "EQUAL", "factuur 2024-031 — hauptstrasse", VIEW, True),
    ("Subject", "EQUAL", "factuur", VIEW, False),
    ("Subject", "NOT_EQUALS", "factuur", VIEW, True),
    ("Subject", "NOT_EQUALS", "FACTUUR 2024-031 — HAUPTSTRASSE", VIEW, False),
    ("Subject", "CONTAINS", "2024-031", VIEW, True),
    ("Subject", "CONTAINS", "2024-032", VIEW, False),
    ("Subject", "NOT_CONTAINS", "offerte", VIEW, True),
    ("Subject", "NOT_CONTAINS", "FACTUUR", VIEW, False),
    ("Subject", "STARTS_WITH", "factuur", VIEW, True),
    ("Subject", "STARTS_WITH", "2024", VIEW, False),
    ("Subject", "ENDS_WITH", "straße", VIEW, True),
    ("Subject", "ENDS_WITH", "factuur", VIEW, False),
    ("Subject", "EXISTS", None, VIEW, True),
    ("Subject", "EXISTS", None, BARE, False),
    ("Subject", "EXISTS", None, replace(BARE, subject=" \t\u00a0"), False),
    ("Subject", "DOES_NOT_EXIST", None, VIEW, False),
    ("Subject", "DOES_NOT_EXIST", None, BARE, True),
    # Body
    ("Body", "EQUAL", "beste alice, in de bijlage vindt u de financiële rapportage.", VIEW, True),
    ("Body", "EQUAL", "beste alice", VIEW, False),
    ("Body", "NOT_EQUALS", "beste alice", VIEW, True),
    (
        "Body",
        "NOT_EQUALS",
        "Beste Alice,\nIn de bijlage vindt u de financiële rapportage.",
        VIEW,
        False,
    ),
    ("Body", "CONTAINS", "financiële rapportage", VIEW, True),
    ("Body", "CONTAINS", "jaarverslag", VIEW, False),
    ("Body", "NOT_CONTAINS", "jaarverslag", VIEW, True),
    ("Body", "NOT_CONTAINS", "bijlage", VIEW, False),
    ("Body", "STARTS_WITH", "beste", VIEW, True),
    ("Body", "STARTS_WITH", "bijlage", VIEW, False),
    ("Body", "ENDS_WITH", "rapportage.", VIEW, True),
    ("Body", "ENDS_WITH", "alice", VIEW, False),
    ("Body", "EXISTS", None, VIEW, True),
    ("Body", "EXISTS", None, BARE, False),
    ("Body", "DOES_NOT_EXIST", None, VIEW, False),
    ("Body", "DOES_NOT_EXIST", None, BARE, True),
    # HasAttachments
    ("HasAttachments", "EQUAL", True, VIEW, True),
    ("HasAttachments", "EQUAL", False, VIEW, False),
    ("HasAttachments", "EQUAL", False, BARE, True),
    ("HasAttachments", "EQUAL", "TRUE", VIEW, True),
    ("HasAttachments", "NOT_EQUALS", True, VIEW, False),
    ("HasAttachments", "NOT_EQUALS", True, BARE, True),
    ("HasAttachments", "NOT_EQUALS", "false", VIEW, True),
    # Importance
    ("Importance", "EQUAL", "high", VIEW, True),
    ("Importance", "EQUAL", "High", VIEW, True),
    ("Importance", "EQUAL", "low", VIEW, False),
    ("Importance", "EQUAL", "normal", BARE, True),
    ("Importance", "EQUAL", "high", replace(VIEW, importance="HIGH"), True),
    ("Importance", "NOT_EQUALS", "high", VIEW, False),
    ("Importance", "NOT_EQUALS", "normal", VIEW, True),
    # ReceivedDateTime (VIEW: 2024-03-01T12:00Z)
    ("ReceivedDateTime", "BEFORE", "2024-03-02", VIEW, True),
    ("ReceivedDateTime", "BEFORE", "2024-03-01", VIEW, False),
    ("ReceivedDateTime", "AFTER", "2024-02-29", VIEW, True),
    ("ReceivedDateTime", "AFTER", "2024-03-01", VIEW, False),
    ("ReceivedDateTime", "BEFORE", "2024-03-01T12:00", VIEW, False),
    ("ReceivedDateTime", "BEFORE", "2024-03-01T12:00:00.000001", VIEW, True),
    ("ReceivedDateTime", "AFTER", "2024-03-01T12:00Z", VIEW, False),
    ("ReceivedDateTime", "AFTER", "2024-03-01T11:59:59", VIEW, True),
    ("ReceivedDateTime", "BEFORE", "2024-03-01T13:30+01:00", VIEW, True),
    ("ReceivedDateTime", "BEFORE", "2024-03-01T12:30+01:00", VIEW, False),
    ("ReceivedDateTime", "AFTER", "2024-03-01T12:30+01:00", VIEW, True),
    ("ReceivedDateTime", "AFTER", "2024-03-01T07:30-05:00", VIEW, False),
    ("ReceivedDateTime", "BEFORE", "2030-01-01", BARE, False),
    ("ReceivedDateTime", "AFTER", "2000-01-01", BARE, False),
    ("ReceivedDateTime", "EXISTS", None, VIEW, True),
    ("ReceivedDateTime", "EXISTS", None, BARE, False),
    ("ReceivedDateTime", "DOES_NOT_EXIST", None, VIEW, False),
    ("ReceivedDateTime", "DOES_NOT_EXIST", None, BARE, True),
    # a naive received time is UTC, too
    (
        "ReceivedDateTime",
        "BEFORE",
        "2024-03-01T12:00:01Z",
        replace(VIEW, received=NOON.replace(tzinfo=None)),
        True,
    ),
    (
        "ReceivedDateTime",
        "AFTER",
        "2024-03-01T11:59:59Z",
        replace(VIEW, received=NOON.replace(tzinfo=None)),
        True,
    ),
]


@pytest.mark.parametrize(("field", "operator", "value", "view", "expected"), CASES)
def test_condition(
    field: str, operator: str, value: Any, view: MessageView, expected: bool
) -> None:
    condition = cond(field, operator, value)
    assert condition.matches(view) is expected
    assert condition.matches(MessageFacts(view)) is expected
    assert RuleGroup("all", (condition,)).matches(view) is expected


def test_cases_cover_every_field_and_valid_operator_both_ways() -> None:
    seen = {(f, o, e) for f, o, _, _, e in CASES}
    for field in FIELDS:
        for operator in OPERATORS_BY_KIND[FIELD_KINDS[field]]:
            assert (field, operator, True) in seen, (field, operator)
            assert (field, operator, False) in seen, (field, operator)


UNICODE: list[tuple[str, str, str, bool]] = [
    # (subject, operator, value, expected)
    ("Adres: Hauptstraße 5", "CONTAINS", "STRASSE", True),
    ("HAUPTSTRASSE 5", "CONTAINS", "straße", True),
    ("Hauptstraße", "EQUAL", "hauptstrase", False),
    ("Ĳsselmeer vaart", "STARTS_WITH", "ijssel", True),
    ("IJsselmeer", "STARTS_WITH", "ĳssel", True),
    ("De financiële rapportage", "CONTAINS", "financiele", True),
    ("De financiele rapportage", "CONTAINS", "FINANCIËLE", True),
    ("Coördinatie overleg", "EQUAL", "coordinatie overleg", True),
    ("één factuur", "STARTS_WITH", "EEN", True),
    ("cafe\u0301", "EQUAL", "café", True),  # decomposed vs precomposed
    ("ＦＡＣＴＵＵＲ ２０２４", "EQUAL", "factuur 2024", True),  # full-width
    ("Factuur\u00a02024", "CONTAINS", "factuur 2024", True),  # no-break space
    ("Factuur  \t 2024", "EQUAL", "factuur 2024", True),
    ("İstanbul office", "STARTS_WITH", "istanbul", True),
    ("Ölçek", "CONTAINS", "olcek", True),
    ("Réunion", "NOT_CONTAINS", "reunion", False),
    ("Rechnung", "CONTAINS", "rechnüng", True),
    ("Rekening", "CONTAINS", "factuur", False),
    ("Ελληνικά", "EQUAL", "ΕΛΛΗΝΙΚΆ", True),
    ("請求書 2024", "STARTS_WITH", "請求書", True),
]


@pytest.mark.parametrize(("subject", "operator", "value", "expected"), UNICODE)
def test_unicode_comparisons(subject: str, operator: str, value: str, expected: bool) -> None:
    assert cond("Subject", operator, value).matches(replace(VIEW, subject=subject)) is expected


def test_normalise_is_idempotent_and_folds_case_width_accents_and_space() -> None:
    samples = [s for s, *_ in UNICODE] + [v for _, _, v, _ in UNICODE] + [VIEW.body_text]
    for text in samples:
        once = normalise(text)
        assert normalise(once) == once
        assert normalise(text.upper()) == normalise(text.lower()) or "ß" in text or "İ" in text
    assert normalise("  Straße\u2003ﬁle  ") == "strasse file"


@pytest.mark.parametrize(
    ("received", "operator", "value", "expected"),
    [
        (datetime(2024, 2, 29, 23, 59, 59, 999999, UTC), "BEFORE", "2024-03-01", True),
        (datetime(2024, 3, 1, 0, 0, tzinfo=UTC), "BEFORE", "2024-03-01", False),
        (datetime(2024, 3, 1, 23, 59, 59, 999999, UTC), "AFTER", "2024-03-01", False),
        (datetime(2024, 3, 2, 0, 0, tzinfo=UTC), "AFTER", "2024-03-01", True),
        (datetime(2024, 3, 1, 0, 0, tzinfo=UTC), "AFTER", "2024-02-29", True),
        # received in Amsterdam just after midnight is still 29 February in UTC
        (
            datetime(2024, 3, 1, 0, 30, tzinfo=UTC) - timedelta(hours=1),
            "BEFORE",
            "2024-03-01",
            True,
        ),
        (datetime(2024, 3, 1, 12, tzinfo=UTC), "BEFORE", "2024-03-01T12:00:00+00:00", False),
        (datetime(2024, 3, 1, 12, tzinfo=UTC), "AFTER", "2024-03-01T12:00:00+00:00", False),
        (datetime(2024, 3, 1, 12, tzinfo=UTC), "AFTER", "2024-03-01T11:59:59.999999", True),
    ],
)
def test_date_boundaries(received: datetime, operator: str, value: str, expected: bool) -> None:
    view = replace(VIEW, received=received)
    assert cond("ReceivedDateTime", operator, value).matches(view) is expected


def test_naive_values_are_utc_whatever_the_machine_clock_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert cond("ReceivedDateTime", "AFTER", "2024-03-01T11:59").matches(VIEW)
        assert not cond("ReceivedDateTime", "AFTER", "2024-03-01T12:00").matches(VIEW)
        assert cond("ReceivedDateTime", "BEFORE", "2024-03-01T12:01").matches(VIEW)
    finally:
        monkeypatch.undo()
        time.tzset()


T = cond("Subject", "EXISTS")
F = cond("Subject", "DOES_NOT_EXIST")


@pytest.mark.parametrize(
    ("group", "expected"),
    [
        (RuleGroup("all", (T, T)), True),
        (RuleGroup("all", (T, F)), False),
        (RuleGroup("any", (F, T)), True),
        (RuleGroup("any", (F, F)), False),
        (RuleGroup("any", (RuleGroup("all", (T, F)), F)), False),
        (RuleGroup("any", (RuleGroup("all", (T, T)), F)), True),
        (RuleGroup("all", (T, RuleGroup("any", (F, RuleGroup("all", (T, T)))))), True),
        (RuleGroup("all", (T, RuleGroup("any", (F, RuleGroup("all", (T, F)))))), False),
        (RuleGroup("all", ()), False),
        (RuleGroup("any", ()), False),
        (RuleGroup("any", (RuleGroup("all", ()), T)), True),
        (RuleGroup("all", (RuleGroup("any", ()), T)), False),
    ],
)
def test_groups(group: RuleGroup, expected: bool) -> None:
    assert group.matches(VIEW) is expected


def test_a_realistic_rule_from_json() -> None:
    rule = RuleGroup.from_json(
        {
            "mode": "all",
            "items": [
                {"field": "From.Email", "operator": "ENDS_WITH", "value": "@vendor.nl"},
                {
                    "mode": "any",
                    "items": [
                        {"field": "Subject", "operator": "CONTAINS", "value": "factuur"},
                        {"field": "Subject", "operator": "CONTAINS", "value": "invoice"},
                    ],
                },
                {"field": "HasAttachments", "operator": "EQUAL", "value": True},
            ],
        }
    )
    assert rule.matches(VIEW)
    assert not rule.matches(replace(VIEW, has_attachments=False))
    assert not rule.matches(replace(VIEW, subject="Offerte"))
    assert rule.matches(replace(VIEW, subject="Your INVOICE"))
    assert rule.fields == {"From.Email", "Subject", "HasAttachments"}


def _brute_views() -> list[MessageView]:
    senders = [None, Address("Jan", "jan@vendor.nl"), Address("", "JAN@VENDOR.NL")]
    subjects = ["", "Factuur", "factuur 12", "Straße"]
    lists = [
        (),
        (Address("Alice", "alice@contoso.com"),),
        (Address("", "x@y.z"), Address("Factuur", "f@contoso.com")),
    ]
    received = [None, NOON]
    return [
        MessageView(
            id="b",
            internet_message_id="b",
            subject=s,
            sender=f,
            to=to,
            cc=to,
            received=r,
            has_attachments=bool(i % 2),
            importance=("low", "high")[i % 2],
        )
        for i, (s, f, to, r) in enumerate(itertools.product(subjects, senders, lists, received))
    ]


def test_brute_force_negations_and_group_laws() -> None:
    """Over every small view: negative operators negate their positive twins exactly, an
    ``any`` of a condition and its opposite always matches, an ``all`` of them never does."""
    values = ["factuur", "jan@vendor.nl", "STRASSE", "contoso", "f"]
    opposite = {"EQUAL": "NOT_EQUALS", "CONTAINS": "NOT_CONTAINS", "EXISTS": "DOES_NOT_EXIST"}
    checked = 0
    for view in _brute_views():
        for field in ("From.Email", "From.Name", "To", "Cc", "Subject"):
            for positive, negative in opposite.items():
                for value in values if positive != "EXISTS" else [None]:
                    yes, no = cond(field, positive, value), cond(field, negative, value)
                    assert yes.matches(view) is not no.matches(view)
                    assert RuleGroup("any", (yes, no)).matches(view)
                    assert not RuleGroup("all", (yes, no)).matches(view)
                    nested = RuleGroup("all", (yes, RuleGroup("all", (yes,))))
                    assert nested.matches(view) is yes.matches(view)
                    checked += 1
        for operator, other in (("BEFORE", "AFTER"), ("EXISTS", "DOES_NOT_EXIST")):
            value = "2024-03-01T12:00" if operator == "BEFORE" else None
            a, b = cond("ReceivedDateTime", operator, value), cond("ReceivedDateTime", other, value)
            assert not (a.matches(view) and b.matches(view))
        for bool_value in (True, False):
            e = cond("HasAttachments", "EQUAL", bool_value)
            assert e.matches(view) is not cond("HasAttachments", "NOT_EQUALS", bool_value).matches(
                view
            )
    assert checked > 1000


# ----- JSON ---------------------------------------------------------------------------------

CANONICAL: dict[str, Any] = {
    "mode": "any",
    "items": [
        {"field": "From.Email", "operator": "EQUAL", "value": "support@tekst.com"},
        {"field": "Cc", "operator": "EXISTS"},
        {
            "mode": "all",
            "items": [
                {"field": "ReceivedDateTime", "operator": "AFTER", "value": "2024-03-01"},
                {"field": "Importance", "operator": "NOT_EQUALS", "value": "low"},
                {"field": "HasAttachments", "operator": "EQUAL", "value": False},
                {"mode": "any", "items": []},
            ],
        },
    ],
}


def test_json_round_trip() -> None:
    rule = RuleGroup.from_json(json.loads(json.dumps(CANONICAL)))
    assert rule.to_json() == CANONICAL
    assert RuleGroup.from_json(rule.to_json()) == rule
    assert json.loads(json.dumps(rule.to_json())) == CANONICAL


def test_json_is_lenient_about_spelling_and_canonicalises() -> None:
    rule = RuleGroup.from_json(
        {
            "mode": " ANY ",
            "items": [
                {"field": "subject", "operator": "contains", "value": "  Factuur "},
                {"field": "from.email", "operator": "EQUALS", "value": "a@b.c"},
                {"field": "To", "operator": "not_equal", "value": "x@y.z"},
                {"field": "HasAttachments", "operator": "EQUAL", "value": "True"},
                {"field": "Importance", "operator": "EQUAL", "value": "HIGH"},
                {"field": "Body", "operator": "EXISTS", "value": ""},
            ],
        }
    )
    assert rule.to_json() == {
        "mode": "any",
        "items": [
            {"field": "Subject", "operator": "CONTAINS", "value": "Factuur"},
            {"field": "From.Email", "operator": "EQUAL", "value": "a@b.c"},
            {"field": "To", "operator": "NOT_EQUALS", "value": "x@y.z"},
            {"field": "HasAttachments", "operator": "EQUAL", "value": True},
            {"field": "Importance", "operator": "EQUAL", "value": "high"},
            {"field": "Body", "operator": "EXISTS"},
        ],
    }


def _one(condition: dict[str, Any]) -> dict[str, Any]:
    return {"mode": "all", "items": [condition]}


def _nested(depth: int) -> dict[str, Any]:
    rule: dict[str, Any] = _one({"field": "Subject", "operator": "EXISTS"})
    for _ in range(depth - 1):
        rule = {"mode": "all", "items": [rule]}
    return rule


def _many(count: int) -> dict[str, Any]:
    """``count`` conditions spread over a top group and a nested one."""
    half = count // 2
    items: list[Any] = [{"field": "Subject", "operator": "EXISTS"}] * half
    nested = {"mode": "any", "items": [{"field": "Body", "operator": "EXISTS"}] * (count - half)}
    return {"mode": "all", "items": [*items, nested]}


LONG = "x" * (MAX_VALUE_LENGTH + 1)

BAD: list[tuple[Any, str]] = [
    ([], "the rule must be an object"),
    ("subject contains invoice", "the rule must be an object"),
    (None, "the rule must be an object"),
    ({"mode": "some", "items": []}, "mode must be all or any"),
    ({"items": []}, "mode must be all or any"),
    ({"mode": "all", "items": "Subject"}, "items must be a list"),
    ({"mode": "all", "items": [42]}, "item 1 is neither a condition"),
    ({"mode": "all", "items": [{"value": "x"}]}, "item 1 is neither a condition"),
    (_one({"field": "Sender", "operator": "EQUAL", "value": "x"}), "unknown field 'Sender'"),
    (_one({"field": "Subject", "operator": "MATCHES", "value": "x"}), "unknown operator"),
    (
        _one({"field": "Subject", "operator": "BEFORE", "value": "2024-01-01"}),
        "BEFORE cannot be used with Subject",
    ),
    (
        _one({"field": "ReceivedDateTime", "operator": "CONTAINS", "value": "2024"}),
        "CONTAINS cannot be used with ReceivedDateTime",
    ),
    (
        _one({"field": "HasAttachments", "operator": "EXISTS"}),
        "EXISTS cannot be used with HasAttachments",
    ),
    (
        _one({"field": "Importance", "operator": "CONTAINS", "value": "hi"}),
        "CONTAINS cannot be used with Importance",
    ),
    (_one({"field": "Subject", "operator": 3, "value": "x"}), "needs a field and an operator"),
    (_one({"field": "Subject", "value": "x"}), "needs a field and an operator"),
    (
        _one({"field": "ReceivedDateTime", "operator": "BEFORE", "value": "yesterday"}),
        "'yesterday' is not a date",
    ),
    (
        _one({"field": "ReceivedDateTime", "operator": "AFTER", "value": "2024-13-01"}),
        "is not a date",
    ),
    (_one({"field": "ReceivedDateTime", "operator": "AFTER", "value": 20240101}), "must be text"),
    (_one({"field": "Subject", "operator": "CONTAINS"}), "Subject CONTAINS needs a value"),
    (_one({"field": "Subject", "operator": "CONTAINS", "value": None}), "needs a value"),
    (_one({"field": "Subject", "operator": "EQUAL", "value": "   "}), "needs a value"),
    (_one({"field": "Subject", "operator": "EQUAL", "value": "\u0301"}), "needs a value"),
    (_one({"field": "ReceivedDateTime", "operator": "BEFORE", "value": ""}), "needs a value"),
    (_one({"field": "Subject", "operator": "EXISTS", "value": "x"}), "takes no value"),
    (_one({"field": "Subject", "operator": "CONTAINS", "value": 12}), "must be text"),
    (_one({"field": "Subject", "operator": "CONTAINS", "value": ["a"]}), "must be text"),
    (_one({"field": "Subject", "operator": "CONTAINS", "value": LONG}), "longer than 1000"),
    (_one({"field": "HasAttachments", "operator": "EQUAL", "value": "maybe"}), "true or false"),
    (_one({"field": "HasAttachments", "operator": "EQUAL", "value": 1}), "true or false"),
    (
        _one({"field": "Importance", "operator": "EQUAL", "value": "urgent"}),
        "Importance must be one of low, normal, high",
    ),
    (_many(MAX_CONDITIONS + 1), f"51 conditions; at most {MAX_CONDITIONS}"),
    (_nested(MAX_DEPTH + 1), f"nested more than {MAX_DEPTH} deep"),
]


@pytest.mark.parametrize(("data", "problem"), BAD)
def test_rule_errors(data: Any, problem: str) -> None:
    with pytest.raises(RuleError) as caught:
        RuleGroup.from_json(data)
    assert any(problem in p for p in caught.value.problems), caught.value.problems


def test_limits_are_inclusive() -> None:
    assert RuleGroup.from_json(_many(MAX_CONDITIONS)).condition_count == MAX_CONDITIONS
    assert RuleGroup.from_json(_nested(MAX_DEPTH)).depth == MAX_DEPTH
    at_limit = "x" * MAX_VALUE_LENGTH
    rule = RuleGroup.from_json(_one({"field": "Body", "operator": "CONTAINS", "value": at_limit}))
    assert rule.matches(replace(VIEW, body_text="a" + at_limit.upper()))


def test_all_problems_are_reported_at_once_with_their_place() -> None:
    with pytest.raises(RuleError) as caught:
        RuleGroup.from_json(
            {
                "mode": "all",
                "items": [
                    {"field": "Subject", "operator": "CONTAINS", "value": "ok"},
                    {"field": "Sender", "operator": "EQUAL", "value": "x"},
                    {"mode": "any", "items": [{"field": "Subject", "operator": "BEFORE"}]},
                ],
            }
        )
    assert caught.value.problems == [
        "condition 2: unknown field 'Sender'; use one of From.Email, From.Name, To, Cc, Subject, "
        "Body, HasAttachments, Importance, ReceivedDateTime",
        "condition 3.1: BEFORE cannot be used with Subject; use one of EQUAL, NOT_EQUALS, "
        "CONTAINS, NOT_CONTAINS, STARTS_WITH, ENDS_WITH, EXISTS, DOES_NOT_EXIST",
    ]
    assert str(caught.value).startswith("condition 2: unknown field")


def test_absurdly_deep_json_is_one_problem_not_a_crash() -> None:
    with pytest.raises(RuleError) as caught:
        RuleGroup.from_json(_nested(500))
    assert caught.value.problems == [f"groups are nested more than {MAX_DEPTH} deep"]


def test_a_rejected_value_is_not_echoed_back() -> None:
    secret = "confidential-" + "y" * MAX_VALUE_LENGTH
    with pytest.raises(RuleError) as caught:
        RuleGroup.from_json(_one({"field": "Body", "operator": "CONTAINS", "value": secret}))
    assert secret not in str(caught.value)


def test_building_in_code_is_validated_too() -> None:
    with pytest.raises(RuleError, match="unknown field"):
        cond("Sender", "EQUAL", "x")
    with pytest.raises(RuleError, match="cannot be used"):
        cond("Importance", "BEFORE", "2024-01-01")
    with pytest.raises(RuleError, match="needs a value"):
        cond("Subject", "CONTAINS")
    with pytest.raises(RuleError, match="mode"):
        RuleGroup("either", ())  # type: ignore[arg-type]
    with pytest.raises(RuleError, match="nested more than"):
        group = RuleGroup("all", (T,))
        for _ in range(MAX_DEPTH):
            group = RuleGroup("all", (group,))
    with pytest.raises(RuleError, match="at most"):
        RuleGroup("any", tuple([T] * 30) + (RuleGroup("all", tuple([F] * 21)),))
    assert cond("HasAttachments", "EQUAL", "false").value is False
    assert cond("Subject", "EXISTS", "").value is None


def test_every_operator_name_is_known_to_some_field() -> None:
    used = {op for ops in OPERATORS_BY_KIND.values() for op in ops}
    assert used == set(OPERATORS)


def test_conditions_are_values() -> None:
    a = cond("Subject", "CONTAINS", " factuur ")
    b = cond("Subject", "CONTAINS", "factuur")
    assert a == b and hash(a) == hash(b)
    assert {RuleGroup("all", (a,)), RuleGroup("all", (b,))} == {RuleGroup("all", (a,))}
