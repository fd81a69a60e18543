"""Issue 12: the Graph client's guard decides never-delete by folder identity, whatever the
configuration or the caller says. Against m365sim over HTTPS."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from m365sim.state import EmulatorState
from m365sim.store import Folder
from postroom.graph import DeletionRefused, GraphClient
from postroom.graph.ancestry import FolderAncestry
from postroom.graph.budget import MailboxBudget
from postroom.graph.guard import folder_destinations
from tests.helpers import Org


class Token:
    def __init__(self, token: str) -> None:
        self.token = token

    async def __call__(self, *, force_refresh: bool = False) -> str:
        return self.token


def run(
    graph_url: str,
    ssl_context: ssl.SSLContext,
    org: Org,
    body: Callable[[GraphClient], Coroutine[Any, Any, Any]],
    *,
    folders: FolderAncestry | None = None,
) -> Any:
    async def main() -> Any:
        async with GraphClient(
            base_url=graph_url,
            token=Token(org.app_token()),
            app_id=org.app.client_id,
            verify=ssl_context,
            budget=MailboxBudget(),
            max_backoff=0.05,
            folders=folders or FolderAncestry(),
        ) as client:
            return await body(client)

    return asyncio.run(main())


def _folder(org: Org, name: str) -> Folder:
    folder = org.alice.mailbox.folder(name)
    assert folder is not None
    return folder


def _sent(sim: EmulatorState, method: str, fragment: str, *, in_batch: bool = False) -> int:
    """Requests Graph received during the test (the log is cleared when it begins)."""
    return sum(
        1
        for r in list(sim.request_log)
        if r.method == method and fragment in r.path and r.in_batch == in_batch
    )


@pytest.fixture
def alice(org: Org, sim: EmulatorState) -> Org:
    with sim.log_lock:
        sim.request_log.clear()
    return org


def test_a_move_into_any_folder_beneath_deleted_or_recoverable_items_is_refused(
    graph_url: str, ssl_context: ssl.SSLContext, alice: Org, sim: EmulatorState
) -> None:
    org = alice
    store, mailbox = sim.store, org.alice.mailbox
    purge = store.create_folder(mailbox, "Projects", _folder(org, "deleteditems").id)
    assert purge is not None
    deeper = store.create_folder(mailbox, "2024", purge.id)
    assert deeper is not None
    recoverable = store.create_folder(mailbox, "Kept", _folder(org, "recoverableitemsdeletions").id)
    assert recoverable is not None
    msg = org.deliver(org.alice, subject="keep me")
    inbox = _folder(org, "inbox")

    async def attempt(client: GraphClient) -> None:
        for target in (purge.id, deeper.id, recoverable.id):
            with pytest.raises(DeletionRefused):
                await client.move(org.alice.id, msg.immutable_id, target)
            with pytest.raises(DeletionRefused):
                await client.create_folder(org.alice.id, "Sneaky", target)
            with pytest.raises(DeletionRefused):
                await client.batch(
                    [
                        {
                            "id": "1",
                            "method": "POST",
                            "url": f"/users/{org.alice.id}/messages/{msg.immutable_id}/move",
                            "body": {"destinationId": target},
                        }
                    ],
                    mailbox=org.alice.id,
                )
            with pytest.raises(DeletionRefused):  # a folder moved there deletes its mail
                await client.request(
                    "POST",
                    f"/users/{org.alice.id}/mailFolders/{inbox.id}/move",
                    mailbox=org.alice.id,
                    json={"destinationId": target},
                )

    run(graph_url, ssl_context, org, attempt)
    assert msg.folder_id == inbox.id
    assert _sent(sim, "POST", "/move") == 0
    assert _sent(sim, "POST", "/childFolders") == 0
    assert {f.display_name for f in mailbox.children(purge.id)} == {"2024"}
    assert [d for d in sim.store.deletions if d.mailbox_id == org.alice.id] == []


def test_ordinary_folders_pass_with_one_batch_per_mailbox_for_the_anchors(
    graph_url: str, ssl_context: ssl.SSLContext, alice: Org, sim: EmulatorState
) -> None:
    org = alice
    folders = FolderAncestry()
    messages = [org.deliver(org.alice, subject=f"file me {n}") for n in range(3)]

    async def file(client: GraphClient) -> str:
        parent = await client.create_folder(org.alice.id, "Finance")
        child = await client.create_folder(org.alice.id, "Invoices", parent["id"])
        for msg in messages[:2]:
            await client.move(org.alice.id, msg.immutable_id, child["id"])
        return str(child["id"])

    child_id = run(graph_url, ssl_context, org, file, folders=folders)
    # A second client (a later sync job) shares the process's knowledge.
    run(
        graph_url,
        ssl_context,
        org,
        lambda c: c.move(org.alice.id, messages[2].immutable_id, child_id),
        folders=folders,
    )
    assert all(m.folder_id == child_id for m in messages)
    assert _sent(sim, "POST", "/$batch") == 1  # root, Deleted Items, Recoverable Items: once
    assert _sent(sim, "GET", "/mailFolders/", in_batch=True) == 3
    # Parents came from the folders Postroom created: not one folder read for the guard.
    assert _sent(sim, "GET", "/mailFolders/") == 0


def test_a_known_folder_is_read_again_after_the_ttl_and_refused_once_deleted(
    graph_url: str, ssl_context: ssl.SSLContext, alice: Org, sim: EmulatorState
) -> None:
    org = alice
    now = [0.0]
    folders = FolderAncestry(ttl=30, clock=lambda: now[0])
    first, second = org.deliver(org.alice, subject="a"), org.deliver(org.alice, subject="b")

    async def make(client: GraphClient) -> str:
        folder = await client.create_folder(org.alice.id, "Receipts")
        await client.move(org.alice.id, first.immutable_id, folder["id"])
        return str(folder["id"])

    folder_id = run(graph_url, ssl_context, org, make, folders=folders)
    mailbox = org.alice.mailbox
    # The person deletes the folder in Outlook: it moves into Deleted Items.
    assert (
        sim.store.move_folder(mailbox, mailbox.folders[folder_id], _folder(org, "deleteditems"))
        is None
    )
    now[0] = 31.0

    async def again(client: GraphClient) -> None:
        with pytest.raises(DeletionRefused):
            await client.move(org.alice.id, second.immutable_id, folder_id)

    run(graph_url, ssl_context, org, again, folders=folders)
    assert second.folder_id == _folder(org, "inbox").id
    assert _sent(sim, "POST", "/move") == 1


def test_folder_destinations_names_moves_and_folder_parents() -> None:
    assert folder_destinations(
        "POST", "/users/u1/messages/m/move", {"DestinationId": "AAMk+A="}
    ) == [("u1", "AAMk+A=")]
    assert folder_destinations("POST", "/me/mailFolders('AAMk%3D')/childFolders", {}) == [
        ("me", "AAMk=")
    ]
    assert folder_destinations("POST", "/users/u1/mailFolders", {}) == []
    assert folder_destinations("GET", "/users/u1/mailFolders/x/childFolders") == []
    batch = {
        "requests": [
            {"id": "1", "method": "POST", "url": "/users/u2/mailFolders/p/childFolders"},
            {"id": "2", "method": "POST", "url": "/me/messages/m/copy", "body": {}},
        ]
    }
    assert folder_destinations("POST", "/$batch", batch) == [("u2", "p")]
