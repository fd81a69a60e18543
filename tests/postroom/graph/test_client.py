"""GraphClient against m365sim over real HTTPS: ids, budget, retries, auth, the guard."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from m365sim.state import EmulatorState
from postroom.graph import AuthFailed, DeletionRefused, GraphClient, TransientError
from postroom.graph.budget import MailboxBudget
from tests.helpers import Org


class StaticToken:
    """Hands out tokens from a list: the next one on each forced refresh."""

    def __init__(self, *tokens: str) -> None:
        self.tokens = list(tokens)
        self.calls: list[bool] = []

    async def __call__(self, *, force_refresh: bool = False) -> str:
        self.calls.append(force_refresh)
        if force_refresh and len(self.tokens) > 1:
            self.tokens.pop(0)
        return self.tokens[0]


def run(
    graph_url: str,
    ssl_context: ssl.SSLContext,
    token: StaticToken,
    app_id: str,
    body: Callable[[GraphClient], Coroutine[Any, Any, Any]],
) -> Any:
    async def main() -> Any:
        async with GraphClient(
            base_url=graph_url,
            token=token,
            app_id=app_id,
            verify=ssl_context,
            budget=MailboxBudget(),
            max_backoff=0.05,
        ) as client:
            return await body(client)

    return asyncio.run(main())


def _requests_to(sim: EmulatorState, fragment: str) -> list[Any]:
    return [r for r in sim.request_log if fragment in r.path]


def test_me_and_users(graph_url: str, ssl_context: ssl.SSLContext, org: Org) -> None:
    me = run(
        graph_url,
        ssl_context,
        StaticToken(org.token(org.alice)),
        org.app.client_id,
        lambda c: c.me(),
    )
    assert me["id"] == org.alice.id
    users = run(
        graph_url, ssl_context, StaticToken(org.app_token()), org.app.client_id, lambda c: c.users()
    )
    assert {u["id"] for u in users} >= {org.alice.id, org.bob.id, org.shared.id}


def test_guard_refuses_before_any_request_leaves(
    graph_url: str, ssl_context: ssl.SSLContext, org: Org, sim: EmulatorState
) -> None:
    msg = org.deliver(org.alice, subject="keep me")
    token = StaticToken(org.app_token())

    async def attempt(client: GraphClient) -> None:
        with pytest.raises(DeletionRefused):
            await client.request(
                "DELETE", f"/users/{org.alice.id}/messages/{msg.immutable_id}", mailbox=org.alice.id
            )
        with pytest.raises(DeletionRefused):
            await client.request(
                "POST",
                f"/users/{org.alice.id}/messages/{msg.immutable_id}/permanentDelete",
                mailbox=org.alice.id,
            )
        with pytest.raises(DeletionRefused):
            await client.move(org.alice.id, msg.immutable_id, "deleteditems")

    run(graph_url, ssl_context, token, org.app.client_id, attempt)
    assert token.calls == []  # not even a token was fetched for the refused requests
    assert _requests_to(sim, msg.immutable_id) == []
    assert msg.immutable_id in org.alice.mailbox.messages
    assert sim.store.deletions == [] or all(
        d.mailbox_id != org.alice.id for d in sim.store.deletions
    )


def test_guard_refuses_a_move_into_deleted_items_by_folder_id(
    graph_url: str, ssl_context: ssl.SSLContext, org: Org, sim: EmulatorState
) -> None:
    msg = org.deliver(org.alice, subject="keep me too")
    deleted_id = org.alice.mailbox.well_known["deleteditems"]

    async def attempt(client: GraphClient) -> None:
        with pytest.raises(DeletionRefused):
            await client.move(org.alice.id, msg.immutable_id, deleted_id)

    run(graph_url, ssl_context, StaticToken(org.app_token()), org.app.client_id, attempt)
    assert _requests_to(sim, f"{msg.immutable_id}/move") == []
    assert msg.folder_id == org.alice.mailbox.well_known["inbox"]


def test_a_401_refreshes_once_then_succeeds(
    graph_url: str, ssl_context: ssl.SSLContext, org: Org
) -> None:
    token = StaticToken("expired-garbage", org.token(org.alice))
    me = run(graph_url, ssl_context, token, org.app.client_id, lambda c: c.me())
    assert me["id"] == org.alice.id
    assert token.calls == [False, True]


def test_a_persistent_401_is_a_status_not_a_retry_storm(
    graph_url: str, ssl_context: ssl.SSLContext, org: Org, sim: EmulatorState
) -> None:
    token = StaticToken("garbage-1", "garbage-2")
    before = len(sim.request_log)
    with pytest.raises(AuthFailed):
        run(graph_url, ssl_context, token, org.app.client_id, lambda c: c.me())
    assert len(sim.request_log) - before == 2


def test_throttling_is_a_delay_never_an_error(
    graph_url: str, ssl_context: ssl.SSLContext, org: Org, sim: EmulatorState
) -> None:
    sim.config.mailbox_requests_per_window = 3
    sim.config.mailbox_window_seconds = 1.0
    sim.config.throttle_retry_after = 0.3
    msg = org.deliver(org.bob, subject="throttle me")

    async def many(client: GraphClient) -> list[Any]:
        return [await client.message(org.bob.id, msg.immutable_id) for _ in range(6)]

    results = run(graph_url, ssl_context, StaticToken(org.app_token()), org.app.client_id, many)
    assert all(r["id"] == msg.immutable_id for r in results)
    assert sim.throttle.throttled.get((org.app.client_id, org.bob.id), 0) >= 1


def test_transient_errors_retry_idempotent_requests_only(
    graph_url: str, ssl_context: ssl.SSLContext, org: Org, sim: EmulatorState
) -> None:
    msg = org.deliver(org.alice, subject="flaky")
    sim.faults.add(
        {"path": f"/messages/{msg.immutable_id}$", "method": "GET", "status": 500, "count": 2}
    )
    got = run(
        graph_url,
        ssl_context,
        StaticToken(org.app_token()),
        org.app.client_id,
        lambda c: c.message(org.alice.id, msg.immutable_id),
    )
    assert got["id"] == msg.immutable_id

    sim.faults.add({"path": "/createForward$", "status": 503, "count": 1})

    async def forward(client: GraphClient) -> None:
        with pytest.raises(TransientError):
            await client.create_forward(org.alice.id, msg.immutable_id, to=["x@fabrikam.test"])

    run(graph_url, ssl_context, StaticToken(org.app_token()), org.app.client_id, forward)
    assert len(_requests_to(sim, f"{msg.immutable_id}/createForward")) == 1


def test_ids_are_immutable_across_moves(
    graph_url: str, ssl_context: ssl.SSLContext, org: Org
) -> None:
    msg = org.deliver(org.alice, subject="move me")

    async def move(client: GraphClient) -> tuple[dict[str, Any], dict[str, Any]]:
        folder = await client.create_folder(org.alice.id, "Invoices")
        moved = await client.move(org.alice.id, msg.immutable_id, folder["id"])
        return folder, moved

    folder, moved = run(
        graph_url, ssl_context, StaticToken(org.app_token()), org.app.client_id, move
    )
    assert moved["id"] == msg.immutable_id
    assert moved["parentFolderId"] == folder["id"]


def test_a_throttled_anchor_in_the_batch_is_asked_again_not_an_error(
    graph_url: str, ssl_context: ssl.SSLContext, org: Org, sim: EmulatorState
) -> None:
    # Two of the three anchor GETs fit the window; the third is throttled inside the $batch.
    sim.config.mailbox_requests_per_window = 2
    sim.config.mailbox_window_seconds = 1.0
    sim.config.throttle_retry_after = 0.3
    known = org.alice.mailbox.well_known
    before = len(_requests_to(sim, "$batch"))

    async def anchors(client: GraphClient) -> Any:
        return await client.mailbox_anchors(org.alice.id)

    got = run(graph_url, ssl_context, StaticToken(org.app_token()), org.app.client_id, anchors)
    assert got.root == known["msgfolderroot"]
    assert got.protected == {known["deleteditems"], known["recoverableitemsdeletions"]}
    assert sim.throttle.throttled.get((org.app.client_id, org.alice.id), 0) >= 1
    # one more $batch: the throttled item asked again
    assert len(_requests_to(sim, "$batch")) - before == 2
