"""JSON batching over HTTPS (graph.md 3.9)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.graph.mailtools import auth, error_of
from tests.helpers import Org


def _batch(http: httpx.Client, token: str, requests: list[dict[str, Any]]) -> httpx.Response:
    return http.post("/v1.0/$batch", json={"requests": requests}, headers=auth(token))


def _by_id(response: httpx.Response) -> dict[str, dict[str, Any]]:
    assert response.status_code == 200, response.text
    return {r["id"]: r for r in response.json()["responses"]}


def test_mixed_batch_answers_each_item(http: httpx.Client, org: Org) -> None:
    msg = org.deliver(org.alice)
    token = org.token(org.alice)
    response = _batch(
        http,
        token,
        [
            {"id": "1", "method": "GET", "url": f"/me/messages/{msg.rest_id}?$select=subject"},
            {
                "id": "2",
                "method": "PATCH",
                "url": f"me/messages/{msg.rest_id}",
                "headers": {"Content-Type": "application/json"},
                "body": {"categories": ["Batch"]},
            },
            {"id": "3", "method": "GET", "url": f"/v1.0/users/{org.alice.id}/mailFolders/inbox"},
            {"id": "4", "method": "GET", "url": f"/me/messages/AAMkAD{'z' * 50}="},
            {"id": "5", "method": "GET", "url": "/me/bogus"},
        ],
    )
    results = _by_id(response)
    assert [r["id"] for r in response.json()["responses"]] == ["1", "2", "3", "4", "5"]
    assert results["1"]["status"] == 200
    assert results["1"]["body"]["subject"] == msg.subject
    assert results["1"]["headers"]["Content-Type"].startswith("application/json")
    assert results["2"]["status"] == 200 and msg.categories == ["Batch"]
    assert results["3"]["body"]["displayName"] == "Inbox"
    assert results["4"]["status"] == 404
    assert results["4"]["body"]["error"]["code"] == "ErrorItemNotFound"
    assert results["5"]["status"] == 400
    logged = [r for r in org.state.request_log if r.in_batch and r.mailbox_id == org.alice.id]
    assert len(logged) >= 4


def test_depends_on_sequences_and_fails_dependents(http: httpx.Client, org: Org) -> None:
    msg = org.deliver(org.alice)
    token = org.token(org.alice)
    json_headers = {"Content-Type": "application/json"}
    response = _batch(
        http,
        token,
        [
            {
                "id": "move",
                "method": "POST",
                "url": f"/me/messages/{msg.immutable_id}/move",
                "headers": json_headers,
                "body": {"DestinationId": "archive"},
            },
            {
                "id": "read",
                "method": "GET",
                "url": f"/me/mailFolders/archive/messages/{msg.immutable_id}",
                "dependsOn": ["move"],
            },
            {
                "id": "bad",
                "method": "POST",
                "url": f"/me/messages/{msg.immutable_id}/move",
                "headers": json_headers,
                "body": {"DestinationId": "nowhere at all"},
                "dependsOn": ["read"],
            },
            {"id": "after-bad", "method": "GET", "url": "/me/messages", "dependsOn": ["bad"]},
        ],
    )
    results = _by_id(response)
    assert results["move"]["status"] == 201
    assert results["read"]["status"] == 200
    assert results["bad"]["status"] == 400
    assert results["after-bad"]["status"] == 424
    assert results["after-bad"]["body"]["error"]["code"] == "FailedDependency"


def test_parallel_items_on_one_mailbox_hit_the_concurrency_limit(
    http: httpx.Client, org: Org
) -> None:
    org.deliver(org.alice)
    token = org.token(org.alice)
    parallel = [{"id": str(i), "method": "GET", "url": "/me/messages"} for i in range(6)]
    results = _by_id(_batch(http, token, parallel))
    statuses = sorted(r["status"] for r in results.values())
    assert statuses == [200, 200, 200, 200, 429, 429]
    throttled = [r for r in results.values() if r["status"] == 429]
    for item in throttled:
        assert item["body"]["error"]["code"] == "ApplicationThrottled"
        assert "MailboxConcurrency" in item["body"]["error"]["message"]
        assert float(item["headers"]["Retry-After"]) > 0
    # the same six requests in sequence all succeed
    chained = [
        {"id": str(i), "method": "GET", "url": "/me/messages"}
        | ({"dependsOn": [str(i - 1)]} if i else {})
        for i in range(6)
    ]
    assert {r["status"] for r in _by_id(_batch(http, token, chained)).values()} == {200}
    # items on different mailboxes do not share the limit
    spread = [
        {"id": f"{u}{i}", "method": "GET", "url": f"/users/{org.users[u].id}/messages"}
        for u in ("alice", "bob")
        for i in range(3)
    ]
    results = _by_id(_batch(http, org.app_token(), spread))
    assert {r["status"] for r in results.values()} == {200}
    assert org.state.throttle.in_flight((org.app.client_id, org.alice.id)) == 0


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"requests": []}, "Invalid batch payload format."),
        ({"reqs": []}, "Invalid batch payload format."),
        (
            {"requests": [{"id": str(i), "method": "GET", "url": "/me"} for i in range(21)]},
            "exceeds the maximum of 20",
        ),
        (
            {
                "requests": [
                    {"id": "a", "method": "GET", "url": "/me"},
                    {"id": "A", "method": "GET", "url": "/me"},
                ]
            },
            "duplicated",
        ),
        (
            {"requests": [{"id": "1", "method": "PATCH", "url": "/me/messages/x", "body": {}}]},
            "Write request id : 1 does not contain Content-Type header or body.",
        ),
        (
            {"requests": [{"id": "1", "method": "GET", "url": "/me", "dependsOn": ["9"]}]},
            "depends on unknown request",
        ),
        (
            {
                "requests": [
                    {"id": "1", "method": "GET", "url": "/me", "dependsOn": ["2"]},
                    {"id": "2", "method": "GET", "url": "/me", "dependsOn": ["1"]},
                ]
            },
            "cycle",
        ),
        ({"requests": [{"id": "1", "url": "/me"}]}, "Invalid batch payload format."),
    ],
)
def test_invalid_batches_are_400(
    http: httpx.Client, org: Org, payload: dict[str, Any], fragment: str
) -> None:
    response = http.post("/v1.0/$batch", json=payload, headers=auth(org.token(org.alice)))
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "BadRequest" and fragment in error["message"]


def test_twenty_items_are_allowed(http: httpx.Client, org: Org) -> None:
    requests = [
        {"id": str(i), "method": "GET", "url": "/me"} | ({"dependsOn": [str(i - 1)]} if i else {})
        for i in range(20)
    ]
    results = _by_id(_batch(http, org.token(org.alice), requests))
    assert len(results) == 20 and {r["status"] for r in results.values()} == {200}


def test_batch_authentication_and_item_urls(http: httpx.Client, org: Org) -> None:
    unauthenticated = http.post(
        "/v1.0/$batch", json={"requests": [{"id": "1", "method": "GET", "url": "/me"}]}
    )
    assert unauthenticated.status_code == 401
    malformed = http.post(
        "/v1.0/$batch",
        content=b"{nope",
        headers=auth(org.token(org.alice), **{"Content-Type": "application/json"}),
    )
    assert malformed.status_code == 400
    results = _by_id(
        _batch(
            http,
            org.token(org.alice),
            [
                {"id": "abs", "method": "GET", "url": "https://graph.microsoft.com/v1.0/me"},
                {"id": "beta", "method": "GET", "url": "/beta/me"},
                {"id": "nested", "method": "POST", "url": "/$batch"},
                {"id": "me", "method": "GET", "url": "me"},
            ],
        )
    )
    assert results["abs"]["status"] == 400
    assert results["beta"]["status"] == 400
    assert results["nested"]["status"] == 400
    assert results["me"]["status"] == 200
    assert results["me"]["body"]["id"] == org.alice.id


def test_batch_item_permissions_are_checked(http: httpx.Client, org: Org) -> None:
    msg = org.deliver(org.alice)
    results = _by_id(
        _batch(
            http,
            org.token(org.alice, ["Mail.Read"]),
            [
                {"id": "read", "method": "GET", "url": f"/me/messages/{msg.rest_id}"},
                {"id": "delete", "method": "DELETE", "url": f"/me/messages/{msg.rest_id}"},
            ],
        )
    )
    assert results["read"]["status"] == 200
    assert results["delete"]["status"] == 403
    assert results["delete"]["body"]["error"]["code"] == "ErrorAccessDenied"
    assert msg.folder_id == org.alice.mailbox.folder("inbox").id  # type: ignore[union-attr]
