"""Delta query per folder over HTTPS (graph.md 3.8)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from m365sim.store import LogEntry, Recipient
from tests.graph.mailtools import IMMUTABLE, auth, error_of
from tests.helpers import Org

T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
DELTA = "/v1.0/me/mailFolders/inbox/messages/delta"


def _sync(
    http: httpx.Client, url: str, headers: dict[str, str]
) -> tuple[list[dict[str, Any]], str, int]:
    """Follow nextLinks to the deltaLink: (all items, deltaLink, pages)."""
    items: list[dict[str, Any]] = []
    pages = 0
    next_url: str | None = url
    while next_url:
        response = http.get(next_url, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["@odata.context"].endswith("/$metadata#Collection(message)")
        items += body["value"]
        pages += 1
        if "@odata.deltaLink" in body:
            assert "@odata.nextLink" not in body
            assert "$deltatoken=" in body["@odata.deltaLink"]
            return items, body["@odata.deltaLink"], pages
        next_url = body["@odata.nextLink"]
        assert "/messages/delta?$skiptoken=" in next_url
    raise AssertionError("no deltaLink")


def _deliver(org: Org, count: int) -> list[str]:
    msgs = [
        org.deliver(org.alice, subject=f"Mail {i}", received=T0 + timedelta(hours=i))
        for i in range(count)
    ]
    return [m.rest_id for m in msgs]


def test_initial_sync_pages_then_delta_link(http: httpx.Client, org: Org) -> None:
    ids = _deliver(org, 5)
    headers = auth(org.token(org.alice), Prefer="odata.maxpagesize=2")
    first = http.get(DELTA, headers=headers)
    assert first.headers["Preference-Applied"] == "odata.maxpagesize=2"
    assert list(first.json()) == ["@odata.context", "@odata.nextLink", "value"]
    items, delta_link, pages = _sync(http, DELTA, headers)
    assert pages == 3
    assert [i["id"] for i in items] == list(reversed(ids))  # newest first
    assert all(i["@odata.type"] == "#microsoft.graph.message" for i in items)
    assert all(i["@odata.etag"].startswith('W/"') for i in items)
    # nothing changed: an empty page with a new deltaLink
    again = http.get(delta_link, headers=headers).json()
    assert again["value"] == [] and "@odata.deltaLink" in again


def test_incremental_round_reports_new_updated_moved_and_deleted(
    http: httpx.Client, org: Org
) -> None:
    ids = _deliver(org, 4)
    token = org.token(org.alice)
    headers = auth(token)
    _, delta_link, _ = _sync(http, DELTA, headers)
    moved_id, categorized_id, deleted_id, untouched_id = ids
    moved = http.post(
        f"/v1.0/me/messages/{moved_id}/move", json={"DestinationId": "archive"}, headers=headers
    )
    assert moved.status_code == 201
    patched = http.patch(
        f"/v1.0/me/messages/{categorized_id}", json={"categories": ["Invoices"]}, headers=headers
    )
    assert patched.status_code == 200
    http.patch(f"/v1.0/me/messages/{categorized_id}", json={"isRead": True}, headers=headers)
    assert http.delete(f"/v1.0/me/messages/{deleted_id}", headers=headers).status_code == 204
    new = org.deliver(org.alice, subject="New")
    items, next_link, _ = _sync(http, delta_link, headers)
    by_id = {i["id"]: i for i in items}
    assert set(by_id) == {moved_id, categorized_id, deleted_id, new.rest_id}
    assert untouched_id not in by_id
    for gone in (moved_id, deleted_id):
        assert by_id[gone] == {
            "@odata.type": "#microsoft.graph.message",
            "id": gone,
            "@removed": {"reason": "deleted"},
        }
    updated = by_id[categorized_id]
    assert updated["categories"] == ["Invoices"] and updated["isRead"] is True
    assert by_id[new.rest_id]["subject"] == "New"
    # the archive's own delta sees the moved message arrive
    archive_items, _, _ = _sync(http, "/v1.0/me/mailFolders/archive/messages/delta", headers)
    assert [i["id"] for i in archive_items] == [moved.json()["id"]]
    # and the next round is empty
    assert http.get(next_link, headers=headers).json()["value"] == []


def test_immutable_ids_in_delta(http: httpx.Client, org: Org) -> None:
    msg = org.deliver(org.alice)
    headers = auth(org.token(org.alice), **IMMUTABLE)
    items, delta_link, _ = _sync(http, DELTA, headers)
    assert [i["id"] for i in items] == [msg.immutable_id]
    http.post(
        f"/v1.0/me/messages/{msg.immutable_id}/move",
        json={"DestinationId": "archive"},
        headers=headers,
    )
    items, _, _ = _sync(http, delta_link, headers)
    assert items == [
        {
            "@odata.type": "#microsoft.graph.message",
            "id": msg.immutable_id,
            "@removed": {"reason": "deleted"},
        }
    ]


def test_select_is_baked_into_the_links(http: httpx.Client, org: Org) -> None:
    _deliver(org, 3)
    headers = auth(org.token(org.alice), Prefer="odata.maxpagesize=1")
    items, delta_link, pages = _sync(http, f"{DELTA}?$select=subject,isRead", headers)
    assert pages == 3
    assert all(set(i) == {"@odata.type", "@odata.etag", "id", "subject", "isRead"} for i in items)
    assert "$select" not in delta_link
    org.deliver(org.alice, subject="later")
    later, _, _ = _sync(http, delta_link, headers)
    assert set(later[0]) == {"@odata.type", "@odata.etag", "id", "subject", "isRead"}


def test_filter_received_and_cap(http: httpx.Client, org: Org) -> None:
    _deliver(org, 6)
    headers = auth(org.token(org.alice))
    url = f"{DELTA}?$filter=receivedDateTime ge 2024-05-01T10:00:00Z&$orderby=receivedDateTime desc"
    items, _, _ = _sync(http, url, headers)
    assert [i["subject"] for i in items] == ["Mail 5", "Mail 4", "Mail 3", "Mail 2"]
    gt, _, _ = _sync(http, f"{DELTA}?$filter=receivedDateTime gt 2024-05-01T12:00:00Z", headers)
    assert [i["subject"] for i in gt] == ["Mail 5"]
    org.state.config.delta_filter_cap = 3
    capped, _, _ = _sync(http, f"{DELTA}?$filter=receivedDateTime ge 2024-01-01", headers)
    assert len(capped) == 3


@pytest.mark.parametrize(
    "query",
    [
        "$filter=isRead eq false",
        "$filter=receivedDateTime le 2024-01-01T00:00:00Z",
        "$orderby=receivedDateTime asc",
        "$orderby=subject",
        "$skip=2",
        "$search=%22x%22",
    ],
)
def test_unsupported_delta_options(http: httpx.Client, org: Org, query: str) -> None:
    response = http.get(f"{DELTA}?{query}", headers=auth(org.token(org.alice)))
    assert response.status_code == 400
    assert error_of(response)["code"] == "ErrorInvalidUrlQuery"


def _gone(response: httpx.Response) -> None:
    assert response.status_code == 410, response.text
    error = error_of(response)
    assert error["code"] == "SyncStateNotFound"
    assert error["message"].startswith("The sync state generation is not found;")


def test_invalid_tokens_are_gone(http: httpx.Client, org: Org) -> None:
    _deliver(org, 1)
    headers = auth(org.token(org.alice))
    _, delta_link, _ = _sync(http, DELTA, headers)
    _gone(http.get(f"{DELTA}?$deltatoken=garbage!!", headers=headers))
    _gone(http.get(f"{DELTA}?$skiptoken=eyJhIjoxfQ", headers=headers))
    token = delta_link.split("$deltatoken=")[1]
    _gone(
        http.get(
            f"/v1.0/me/mailFolders/archive/messages/delta?$deltatoken={token}", headers=headers
        )
    )
    # another mailbox cannot use it either
    _gone(
        http.get(
            f"/v1.0/users/{org.bob.id}/mailFolders/inbox/messages/delta?$deltatoken={token}",
            headers=auth(org.app_token()),
        )
    )
    both = http.get(f"{DELTA}?$deltatoken={token}&$skiptoken={token}", headers=headers)
    assert both.status_code == 400


def test_sync_state_reset_control_endpoint(http: httpx.Client, org: Org) -> None:
    _deliver(org, 2)
    headers = auth(org.token(org.alice))
    _, delta_link, _ = _sync(http, DELTA, headers)
    reset = http.post(f"/_emulator/mailboxes/{org.alice.user_principal_name}/sync-state/reset")
    assert reset.status_code == 200
    assert reset.json() == {"userId": org.alice.id, "syncStateEpoch": 1}
    _gone(http.get(delta_link, headers=headers))
    # a fresh initial sync works again
    items, _, _ = _sync(http, DELTA, headers)
    assert len(items) == 2
    missing = http.post("/_emulator/mailboxes/nobody@nowhere.test/sync-state/reset")
    assert missing.status_code == 404 and "error" in missing.json()


def test_expired_token(http: httpx.Client, org: Org) -> None:
    _deliver(org, 1)
    headers = auth(org.token(org.alice))
    _, delta_link, _ = _sync(http, DELTA, headers)
    assert http.get(delta_link, headers=headers).status_code == 200
    org.state.config.delta_token_lifetime_days = -1  # everything issued so far is too old
    _gone(http.get(delta_link, headers=headers))


def test_delta_needs_read_permission(http: httpx.Client, org: Org) -> None:
    response = http.get(DELTA, headers=auth(org.token(org.alice, ["User.Read"])))
    assert response.status_code == 403


class _CountingEntries(list[LogEntry]):
    """A folder log that counts how many entries a request touches."""

    touched = 0

    def __getitem__(self, index: Any) -> Any:
        _CountingEntries.touched += 1
        return super().__getitem__(index)


def test_a_page_costs_the_page_not_the_folder(http: httpx.Client, org: Org) -> None:
    """10,000 messages: the first page and an incremental page touch O(page) log entries."""
    store = org.state.store
    mailbox = org.alice.mailbox
    inbox = mailbox.folder("inbox")
    assert inbox is not None
    sender = Recipient("Bulk", "bulk@fabrikam.test")
    with store.lock:
        for i in range(10_000):
            msg = store.new_message(mailbox, inbox, subject=f"Bulk {i}", body="x", sender=sender)
            store.insert_message(org.tenant, mailbox, msg)
        log = mailbox.logs[inbox.id]
        log.entries = _CountingEntries(log.entries)
    headers = auth(org.token(org.alice), Prefer="odata.maxpagesize=50")
    _CountingEntries.touched = 0
    first = http.get(f"{DELTA}?$select=subject", headers=headers).json()
    assert len(first["value"]) == 50
    assert _CountingEntries.touched < 200  # 50 entries + a binary search, not 10,000
    # the rest of the initial sync, then an incremental page with three changes
    rest = auth(org.token(org.alice), Prefer="odata.maxpagesize=1000")
    items, delta_link, _ = _sync(http, first["@odata.nextLink"], rest)
    assert len(items) == 10_000 - 50
    for i in range(3):
        org.deliver(org.alice, subject=f"Late {i}")
    _CountingEntries.touched = 0
    late = http.get(delta_link, headers=headers).json()
    assert [i["subject"] for i in late["value"]] == ["Late 0", "Late 1", "Late 2"]
    assert _CountingEntries.touched < 100
