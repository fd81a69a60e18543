"""Folder rename (PATCH), delete (into Deleted Items, audited) and the folder delta query
``GET /mailFolders/delta`` (issue 16, items 5 and 6)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.graph.mailtools import auth, error_of
from tests.helpers import Org


def _create(http: httpx.Client, org: Org, name: str, parent: str | None = None) -> dict[str, Any]:
    url = f"/v1.0/me/mailFolders/{parent}/childFolders" if parent else "/v1.0/me/mailFolders"
    response = http.post(url, json={"displayName": name}, headers=auth(org.token(org.alice)))
    assert response.status_code == 201, response.text
    return dict(response.json())


# ---------------------------------------------------------------------------- rename


def test_rename_a_folder(http: httpx.Client, org: Org) -> None:
    folder = _create(http, org, "Invoices")
    token = org.token(org.alice)
    response = http.patch(
        f"/v1.0/me/mailFolders/{folder['id']}", json={"displayName": "Bills"}, headers=auth(token)
    )
    assert response.status_code == 200, response.text
    assert response.json()["displayName"] == "Bills" and response.json()["id"] == folder["id"]
    assert org.alice.mailbox.folders[folder["id"]].display_name == "Bills"


@pytest.mark.parametrize(
    ("target", "body", "code"),
    [
        ("folder", {"displayName": "Orders"}, "ErrorFolderExists"),
        ("folder", {"displayName": ""}, "ErrorInvalidRequest"),
        ("folder", {"displayName": None}, "ErrorInvalidRequest"),
        ("folder", {"totalItemCount": 3}, "ErrorInvalidPropertySet"),
        ("folder", {"isHidden": True}, "ErrorInvalidPropertySet"),
        ("folder", {"colour": "red"}, "RequestBodyRead"),
        ("inbox", {"displayName": "Postvak IN"}, "ErrorInvalidRequest"),
    ],
)
def test_rename_errors(
    http: httpx.Client, org: Org, target: str, body: dict[str, object], code: str
) -> None:
    folder = _create(http, org, "Invoices")
    _create(http, org, "Orders")
    key = folder["id"] if target == "folder" else target
    response = http.patch(
        f"/v1.0/me/mailFolders/{key}", json=body, headers=auth(org.token(org.alice))
    )
    assert response.status_code in (400, 409), response.text
    assert error_of(response)["code"] == code
    assert org.alice.mailbox.folders[folder["id"]].display_name == "Invoices"
    assert org.alice.mailbox.folder("inbox").display_name == "Inbox"  # type: ignore[union-attr]


# ---------------------------------------------------------------------------- delete


def test_delete_moves_the_folder_into_deleted_items_and_audits(
    http: httpx.Client, org: Org
) -> None:
    folder = _create(http, org, "Old")
    child = _create(http, org, "Older", parent=folder["id"])
    msg = org.deliver(org.alice, folder="inbox")
    org.state.store.move_message(
        org.tenant, org.alice.mailbox, msg, org.alice.mailbox.folders[child["id"]]
    )
    token = org.token(org.alice)
    response = http.delete(f"/v1.0/me/mailFolders/{folder['id']}", headers=auth(token))
    assert response.status_code == 204, response.text
    deleted_items = org.alice.mailbox.folder("deleteditems")
    assert deleted_items is not None
    assert org.alice.mailbox.folders[folder["id"]].parent_id == deleted_items.id
    names = [
        f["displayName"]
        for f in http.get("/v1.0/me/mailFolders", headers=auth(token)).json()["value"]
    ]
    assert "Old" not in names
    audit = [
        (d.message_id, d.action) for d in org.state.store.deletions if d.mailbox_id == org.alice.id
    ]
    assert (folder["id"], "deleteFolder") in audit
    assert (msg.immutable_id, "deleteFolder") in audit
    # from Deleted Items, a delete leaves the folder tree (Recoverable Items)
    again = http.delete(f"/v1.0/me/mailFolders/{folder['id']}", headers=auth(token))
    assert again.status_code == 204
    assert org.alice.mailbox.deletion_folder(folder["id"]) == "recoverableitemsdeletions"
    gone = http.delete(f"/v1.0/me/mailFolders/{folder['id']}", headers=auth(token))
    assert gone.status_code == 404


def test_deleting_a_folder_whose_name_deleted_items_holds(http: httpx.Client, org: Org) -> None:
    token = org.token(org.alice)
    first = _create(http, org, "Temp")
    assert (
        http.delete(f"/v1.0/me/mailFolders/{first['id']}", headers=auth(token)).status_code == 204
    )
    second = _create(http, org, "Temp")
    assert (
        http.delete(f"/v1.0/me/mailFolders/{second['id']}", headers=auth(token)).status_code == 204
    )
    assert org.alice.mailbox.folders[second["id"]].display_name == "Temp (2)"


def test_well_known_folders_cannot_be_deleted(http: httpx.Client, org: Org) -> None:
    response = http.delete("/v1.0/me/mailFolders/inbox", headers=auth(org.token(org.alice)))
    assert response.status_code == 400
    assert error_of(response)["code"] == "ErrorDeleteDistinguishedFolder"
    assert not [d for d in org.state.store.deletions if d.mailbox_id == org.alice.id]


def test_folder_changes_need_write(http: httpx.Client, org: Org) -> None:
    folder = _create(http, org, "Keep")
    read_only = auth(org.token(org.alice, ["Mail.Read"]))
    assert http.delete(f"/v1.0/me/mailFolders/{folder['id']}", headers=read_only).status_code == 403
    renamed = http.patch(
        f"/v1.0/me/mailFolders/{folder['id']}", json={"displayName": "x"}, headers=read_only
    )
    assert renamed.status_code == 403


# ------------------------------------------------------------------------ folder delta


def _round(
    http: httpx.Client, token: str, url: str, page: int = 3
) -> tuple[list[dict[str, Any]], str]:
    """Follow nextLinks to the deltaLink; (every item, the deltaLink)."""
    items: list[dict[str, Any]] = []
    headers = auth(token, Prefer=f"odata.maxpagesize={page}")
    while True:
        response = http.get(url, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["@odata.context"].endswith("$metadata#Collection(mailFolder)")
        items += body["value"]
        if "@odata.deltaLink" in body:
            return items, body["@odata.deltaLink"]
        url = body["@odata.nextLink"]
        assert "$skiptoken=" in url


def test_folder_delta_initial_round_then_changes(http: httpx.Client, org: Org) -> None:
    token = org.token(org.alice)
    invoices = _create(http, org, "Invoices")
    child = _create(http, org, "2024", parent=invoices["id"])
    items, delta_link = _round(http, token, "/v1.0/me/mailFolders/delta")
    names = {f["displayName"] for f in items}
    assert {"Inbox", "Drafts", "Sent Items", "Deleted Items", "Invoices", "2024"} <= names
    assert "Deletions" not in names and "Top of Information Store" not in names
    assert len(items) == len({f["id"] for f in items})
    assert all(f["@odata.type"] == "#microsoft.graph.mailFolder" for f in items)
    by_id = {f["id"]: f for f in items}
    assert by_id[child["id"]]["parentFolderId"] == invoices["id"]
    assert "$deltatoken=" in delta_link

    # nothing changed: an empty round
    empty, delta_link = _round(http, token, delta_link)
    assert empty == []

    orders = _create(http, org, "Orders")
    http.patch(
        f"/v1.0/me/mailFolders/{invoices['id']}", json={"displayName": "Bills"}, headers=auth(token)
    )
    http.delete(f"/v1.0/me/mailFolders/{orders['id']}", headers=auth(token))
    changes, delta_link = _round(http, token, delta_link)
    by_id = {f["id"]: f for f in changes}
    assert by_id[invoices["id"]]["displayName"] == "Bills"
    deleted_items = org.alice.mailbox.folder("deleteditems")
    assert deleted_items is not None
    assert by_id[orders["id"]]["parentFolderId"] == deleted_items.id  # moved, not removed
    http.delete(f"/v1.0/me/mailFolders/{orders['id']}", headers=auth(token))
    removed, _ = _round(http, token, delta_link)
    assert removed == [
        {
            "@odata.type": "#microsoft.graph.mailFolder",
            "id": orders["id"],
            "@removed": {"reason": "deleted"},
        }
    ]


def test_folder_delta_select_and_sdk_form(http: httpx.Client, org: Org) -> None:
    token = org.token(org.alice)
    response = http.get(
        f"/v1.0/users/{org.alice.id}/mailFolders/delta()",
        params={"$select": "displayName"},
        headers=auth(token),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body["value"][0]) == {"@odata.type", "id", "displayName"}
    link = body.get("@odata.nextLink") or body["@odata.deltaLink"]
    assert f"/users/{org.alice.id}/mailFolders/delta?" in link
    follow = http.get(link, headers=auth(token)).json()
    assert all(set(f) == {"@odata.type", "id", "displayName"} for f in follow["value"])


@pytest.mark.parametrize("query", ["$deltatoken=garbage", "$skiptoken=eyJrIjoiZmQifQ"])
def test_folder_delta_bad_tokens_are_410(http: httpx.Client, org: Org, query: str) -> None:
    response = http.get(f"/v1.0/me/mailFolders/delta?{query}", headers=auth(org.token(org.alice)))
    assert response.status_code == 410
    assert error_of(response)["code"] == "SyncStateNotFound"


def test_folder_delta_refuses_other_options_and_other_mailboxes(
    http: httpx.Client, org: Org
) -> None:
    token = org.token(org.alice)
    bad = http.get("/v1.0/me/mailFolders/delta", params={"$filter": "x"}, headers=auth(token))
    assert bad.status_code == 400
    _, link = _round(http, token, "/v1.0/me/mailFolders/delta", page=100)
    other = link.replace("/me/", f"/users/{org.bob.id}/")
    stolen = http.get(other, headers=auth(org.app_token()))
    assert stolen.status_code == 410


def test_folder_delta_after_sync_state_reset(http: httpx.Client, org: Org) -> None:
    token = org.token(org.alice)
    _, link = _round(http, token, "/v1.0/me/mailFolders/delta", page=100)
    reset = http.post(f"/_emulator/mailboxes/{org.alice.id}/sync-state/reset")
    assert reset.status_code == 200
    assert http.get(link, headers=auth(token)).status_code == 410
