"""``$search`` on messages: the KQL subset clients use and Graph's restrictions (issue 16,
item 6)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.graph.mailtools import auth, error_of
from tests.helpers import Org


@pytest.fixture
def mailbox(org: Org) -> Org:
    now = datetime.now(UTC)
    org.deliver(
        org.alice,
        subject="Invoice 4711",
        body="Please pay the invoice",
        sender="billing@fabrikam.test",
        received=now - timedelta(hours=3),
    )
    org.deliver(
        org.alice,
        subject="Lunch on Friday",
        body="Pizza or sushi?",
        sender="bob@contoso.test",
        received=now - timedelta(hours=2),
    )
    org.deliver(
        org.alice,
        subject="Reminder",
        body="The invoice is overdue",
        sender="billing@fabrikam.test",
        received=now - timedelta(hours=1),
        folder="archive",
    )
    return org


def _search(http: httpx.Client, org: Org, value: str, url: str = "/v1.0/me/messages") -> list[str]:
    response = http.get(url, params={"$search": value}, headers=auth(org.token(org.alice)))
    assert response.status_code == 200, response.text
    return [m["subject"] for m in response.json()["value"]]


@pytest.mark.parametrize(
    ("value", "subjects"),
    [
        ('"invoice"', ["Reminder", "Invoice 4711"]),  # subject or body, newest sent first
        ('"INVOI"', ["Reminder", "Invoice 4711"]),  # prefix, case-insensitive
        ('"pizza"', ["Lunch on Friday"]),
        ('"from:billing@fabrikam.test"', ["Reminder", "Invoice 4711"]),
        ('"subject:invoice"', ["Invoice 4711"]),
        ('"body:overdue"', ["Reminder"]),
        ('"invoice overdue"', ["Reminder"]),  # words are ANDed
        ('"pizza OR overdue"', ["Reminder", "Lunch on Friday"]),
        ('"invoice NOT subject:reminder"', ["Invoice 4711"]),
        ('"subject:\\"on friday\\""', ["Lunch on Friday"]),
        ("invoice", ["Reminder", "Invoice 4711"]),  # unquoted is accepted too
        ('"nothing-matches-this"', []),
    ],
)
def test_search_kql_subset(
    http: httpx.Client, mailbox: Org, value: str, subjects: list[str]
) -> None:
    assert _search(http, mailbox, value) == subjects


def test_search_in_one_folder_and_count(http: httpx.Client, mailbox: Org) -> None:
    assert _search(http, mailbox, '"invoice"', "/v1.0/me/mailFolders/inbox/messages") == [
        "Invoice 4711"
    ]
    count = http.get(
        "/v1.0/me/messages/$count",
        params={"$search": '"invoice"'},
        headers=auth(mailbox.token(mailbox.alice)),
    )
    assert count.status_code == 200 and count.text == "2"


@pytest.mark.parametrize(
    "extra",
    [
        {"$filter": "isRead eq false"},
        {"$orderby": "receivedDateTime desc"},
        {"$skip": "1"},
    ],
)
def test_search_cannot_be_combined(http: httpx.Client, mailbox: Org, extra: dict[str, str]) -> None:
    response = http.get(
        "/v1.0/me/messages",
        params={"$search": '"invoice"', **extra},
        headers=auth(mailbox.token(mailbox.alice)),
    )
    assert response.status_code == 400
    assert error_of(response)["code"] == "ErrorInvalidUrlQuery"


@pytest.mark.parametrize("value", ['""', '"(invoice"', '"subject:\\"open"', '"OR"', "x" * 5000])
def test_bad_searches_are_400(http: httpx.Client, mailbox: Org, value: str) -> None:
    response = http.get(
        "/v1.0/me/messages", params={"$search": value}, headers=auth(mailbox.token(mailbox.alice))
    )
    assert response.status_code == 400, value
    assert error_of(response)["code"] == "ErrorInvalidUrlQuery"


def test_search_pages_with_skiptoken(http: httpx.Client, mailbox: Org) -> None:
    token = mailbox.token(mailbox.alice)
    first = http.get(
        "/v1.0/me/messages", params={"$search": '"invoice"', "$top": "1"}, headers=auth(token)
    ).json()
    assert [m["subject"] for m in first["value"]] == ["Reminder"]
    second = http.get(first["@odata.nextLink"], headers=auth(token)).json()
    assert [m["subject"] for m in second["value"]] == ["Invoice 4711"]
