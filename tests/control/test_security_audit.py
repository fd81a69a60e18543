"""Issue 12: the emulator's deletion audit decides by folder identity. A move into any folder
beneath Deleted Items or Recoverable Items, and a folder moved there with its mail, is a
deletion (Outlook empties those folders and retention purges them), recorded exactly as a
DELETE is, so every "audit is empty" assertion in the suite covers it."""

from __future__ import annotations

import httpx

from m365sim.state import EmulatorState
from m365sim.store import Folder
from tests.helpers import Org


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _folder(org: Org, name: str) -> Folder:
    folder = org.alice.mailbox.folder(name)
    assert folder is not None
    return folder


def _audit(http: httpx.Client, org: Org) -> list[tuple[str, str]]:
    rows = http.get(f"/_emulator/deletions?mailbox={org.alice.id}").json()["value"]
    return [(d["messageId"], d["action"]) for d in rows]


def test_a_move_into_a_folder_beneath_deleted_or_recoverable_items_is_a_deletion(
    http: httpx.Client, org: Org
) -> None:
    made = http.post(
        f"/_emulator/mailboxes/{org.alice.id}/folders", json={"path": "Deleted Items/Purge"}
    )
    assert made.status_code == 201
    purge_id = made.json()["id"]
    deeper = http.post(
        f"/_emulator/mailboxes/{org.alice.id}/folders", json={"path": "Deleted Items/Purge/Old"}
    ).json()["id"]
    token = org.token(org.alice)
    # A folder created beneath Deleted Items through Graph, then moved into.
    created = http.post(
        f"/v1.0/me/mailFolders/{purge_id}/childFolders",
        json={"displayName": "Innocent name"},
        headers=_auth(token),
    )
    assert created.status_code == 201
    kept = http.post(
        "/v1.0/me/mailFolders/recoverableitemsdeletions/childFolders",
        json={"displayName": "Kept"},
        headers=_auth(token),
    )
    assert kept.status_code == 201
    moved: list[tuple[str, str]] = []
    for target, root in (
        (purge_id, "deleteditems"),
        (deeper, "deleteditems"),
        (created.json()["id"], "deleteditems"),
        (kept.json()["id"], "recoverableitemsdeletions"),
    ):
        msg = org.deliver(org.alice)
        response = http.post(
            f"/v1.0/me/messages/{msg.immutable_id}/move",
            json={"destinationId": target},
            headers=_auth(token),
        )
        assert response.status_code == 201
        moved.append((msg.immutable_id, f"move:{root}"))
    # An ordinary folder is not a deletion.
    archive = org.deliver(org.alice)
    assert (
        http.post(
            f"/v1.0/me/messages/{archive.immutable_id}/move",
            json={"destinationId": "archive"},
            headers=_auth(token),
        ).status_code
        == 201
    )
    assert _audit(http, org) == moved


def test_a_folder_moved_into_deleted_items_deletes_every_message_in_it(
    http: httpx.Client, org: Org, sim: EmulatorState
) -> None:
    token = org.token(org.alice)
    projects = http.post(
        f"/_emulator/mailboxes/{org.alice.id}/folders", json={"path": "Projects/2024"}
    ).json()["id"]
    parent = sim.store.folder_path(org.alice.mailbox, org.alice.mailbox.folders[projects])[0]
    inside = org.deliver(org.alice, folder=parent.id)
    deeper = org.deliver(org.alice, folder=projects)
    elsewhere = org.deliver(org.alice)

    response = http.post(
        f"/v1.0/me/mailFolders/{parent.id}/move",
        json={"destinationId": "deleteditems"},
        headers=_auth(token),
    )

    assert response.status_code == 201
    body = response.json()
    assert body["id"] == parent.id and body["parentFolderId"] == _folder(org, "deleteditems").id
    assert sorted(_audit(http, org)) == sorted(
        [(inside.immutable_id, "move:deleteditems"), (deeper.immutable_id, "move:deleteditems")]
    )
    assert all(m != elsewhere.immutable_id for m, _ in _audit(http, org))
    # Moving it within Deleted Items again deletes nothing more.
    again = http.post(
        f"/v1.0/me/mailFolders/{parent.id}/move",
        json={"destinationId": "deleteditems"},
        headers=_auth(token),
    )
    assert again.status_code == 201 and len(_audit(http, org)) == 2


def test_folder_moves_that_cannot_happen_are_refused(http: httpx.Client, org: Org) -> None:
    token = org.token(org.alice)
    parent = http.post(
        f"/_emulator/mailboxes/{org.alice.id}/folders", json={"path": "Projects/2024"}
    ).json()["id"]
    http.post(f"/_emulator/mailboxes/{org.alice.id}/folders", json={"path": "Archive/Projects"})
    top = org.alice.mailbox.folders[parent].parent_id
    inbox = http.post(
        "/v1.0/me/mailFolders/inbox/move",
        json={"destinationId": "archive"},
        headers=_auth(token),
    )
    into_itself = http.post(
        f"/v1.0/me/mailFolders/{top}/move",
        json={"destinationId": parent},
        headers=_auth(token),
    )
    taken = http.post(
        f"/v1.0/me/mailFolders/{top}/move",
        json={"destinationId": "archive"},
        headers=_auth(token),
    )
    assert inbox.status_code == 400 and inbox.json()["error"]["code"] == "ErrorMoveCopyFailed"
    assert into_itself.status_code == 400
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "ErrorFolderExists"
    assert _audit(http, org) == []
