"""mailFolders over HTTPS: listing, well-known names, child folders, creation (graph.md 3.4)."""

from __future__ import annotations

import httpx

from tests.graph.mailtools import auth, error_of
from tests.helpers import Org

TOP_LEVEL = [
    "Archive",
    "Conversation History",
    "Deleted Items",
    "Drafts",
    "Inbox",
    "Junk Email",
    "Outbox",
    "Sent Items",
]


def _names(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [f["displayName"] for f in response.json()["value"]]


def test_top_level_folders_paged_by_ten(http: httpx.Client, org: Org) -> None:
    root = org.alice.mailbox.root_id()
    for name in ("Invoices", "Orders", "Returns"):
        org.state.store.create_folder(org.alice.mailbox, name, root)
    token = org.token(org.alice)
    first = http.get("/v1.0/me/mailFolders", headers=auth(token))
    body = first.json()
    assert body["@odata.context"].endswith(f"#users('{org.alice.id}')/mailFolders")
    assert len(body["value"]) == 10
    second = http.get(body["@odata.nextLink"], headers=auth(token))
    assert "@odata.nextLink" not in second.json()
    names = _names(first) + _names(second)
    assert names == sorted(TOP_LEVEL + ["Invoices", "Orders", "Returns"], key=str.lower)
    assert "Deletions" not in names  # Recoverable Items is outside msgfolderroot


def test_folder_json_and_counts(http: httpx.Client, org: Org) -> None:
    org.deliver(org.alice)
    org.deliver(org.alice, is_read=True)
    inbox = http.get("/v1.0/me/mailFolders/Inbox", headers=auth(org.token(org.alice))).json()
    assert inbox["@odata.context"].endswith("/mailFolders/$entity")
    assert inbox["id"] == org.alice.mailbox.folder("inbox").id  # type: ignore[union-attr]
    assert inbox["parentFolderId"] == org.alice.mailbox.root_id()
    assert inbox["totalItemCount"] == 2 and inbox["unreadItemCount"] == 1
    assert inbox["childFolderCount"] == 0 and inbox["isHidden"] is False
    assert inbox["sizeInBytes"] > 0
    assert list(inbox)[1:] == [
        "id",
        "displayName",
        "parentFolderId",
        "childFolderCount",
        "unreadItemCount",
        "totalItemCount",
        "sizeInBytes",
        "isHidden",
    ]


def test_well_known_names_and_bad_ids(http: httpx.Client, org: Org) -> None:
    token = org.token(org.alice)
    for name in ("msgfolderroot", "SENTITEMS", "recoverableitemsdeletions", "junkemail"):
        assert http.get(f"/v1.0/me/mailFolders/{name}", headers=auth(token)).status_code == 200
    by_key = http.get("/v1.0/me/mailFolders('deleteditems')", headers=auth(token))
    assert by_key.json()["displayName"] == "Deleted Items"
    absent = http.get("/v1.0/me/mailFolders/syncissues", headers=auth(token))
    assert absent.status_code == 404 and error_of(absent)["code"] == "ErrorItemNotFound"
    malformed = http.get("/v1.0/me/mailFolders/no such folder", headers=auth(token))
    assert malformed.status_code == 400
    assert error_of(malformed)["code"] == "ErrorInvalidIdMalformed"


def test_create_top_level_and_child_folders(http: httpx.Client, org: Org) -> None:
    token = org.app_token()
    base = f"/v1.0/users/{org.alice.id}/mailFolders"
    created = http.post(base, json={"displayName": "Invoices"}, headers=auth(token))
    assert created.status_code == 201
    folder = created.json()
    assert folder["displayName"] == "Invoices"
    assert folder["parentFolderId"] == org.alice.mailbox.root_id()
    child = http.post(
        f"{base}/{folder['id']}/childFolders",
        json={"displayName": "2024", "isHidden": False},
        headers=auth(token),
    )
    assert child.status_code == 201
    assert child.json()["parentFolderId"] == folder["id"]
    assert child.json()["@odata.context"].endswith(
        f"mailFolders('{folder['id']}')/childFolders/$entity"
    )
    children = http.get(f"{base}/{folder['id']}/childFolders", headers=auth(token))
    assert _names(children) == ["2024"]
    single = http.get(
        f"{base}/{folder['id']}/childFolders/{child.json()['id']}", headers=auth(token)
    )
    assert single.status_code == 200
    parent = http.get(f"{base}/{folder['id']}", headers=auth(token)).json()
    assert parent["childFolderCount"] == 1


def test_duplicate_folder_name_is_folder_exists(http: httpx.Client, org: Org) -> None:
    token = org.token(org.alice)
    assert (
        http.post(
            "/v1.0/me/mailFolders", json={"displayName": "Invoices"}, headers=auth(token)
        ).status_code
        == 201
    )
    duplicate = http.post(
        "/v1.0/me/mailFolders", json={"displayName": "INVOICES"}, headers=auth(token)
    )
    assert duplicate.status_code == 409
    assert error_of(duplicate) | {"innerError": None} == {
        "code": "ErrorFolderExists",
        "message": "A folder with the specified name already exists., Could not create folder "
        "'INVOICES'.",
        "innerError": None,
    }
    org.state.config.folder_exists_status = 400
    again = http.post("/v1.0/me/mailFolders", json={"displayName": "invoices"}, headers=auth(token))
    assert again.status_code == 400 and error_of(again)["code"] == "ErrorFolderExists"


def test_hidden_folders(http: httpx.Client, org: Org) -> None:
    token = org.token(org.alice)
    hidden = http.post(
        "/v1.0/me/mailFolders",
        json={"displayName": "Secret", "isHidden": True},
        headers=auth(token),
    )
    assert hidden.status_code == 201 and hidden.json()["isHidden"] is True
    assert "Secret" not in _names(http.get("/v1.0/me/mailFolders?$top=50", headers=auth(token)))
    shown = http.get("/v1.0/me/mailFolders?$top=50&includeHiddenFolders=true", headers=auth(token))
    assert "Secret" in _names(shown)
    # a hidden folder still blocks its name
    clash = http.post("/v1.0/me/mailFolders", json={"displayName": "secret"}, headers=auth(token))
    assert clash.status_code == 409


def test_create_folder_bad_input(http: httpx.Client, org: Org) -> None:
    token = org.token(org.alice)
    for body, code in (
        ({}, "ErrorInvalidRequest"),
        ({"displayName": "  "}, "ErrorInvalidRequest"),
        ({"displayName": 5}, "RequestBodyRead"),
        ({"displayName": "x", "colour": "red"}, "RequestBodyRead"),
        ({"displayName": "x", "totalItemCount": 3}, "ErrorInvalidPropertySet"),
    ):
        response = http.post("/v1.0/me/mailFolders", json=body, headers=auth(token))
        assert response.status_code == 400, body
        assert error_of(response)["code"] == code
    denied = http.post(
        "/v1.0/me/mailFolders",
        json={"displayName": "x"},
        headers=auth(org.token(org.alice, ["Mail.Read"])),
    )
    assert denied.status_code == 403


def test_folder_filter_select_and_wrong_method(http: httpx.Client, org: Org) -> None:
    token = org.token(org.alice)
    filtered = http.get(
        "/v1.0/me/mailFolders?$filter=displayName eq 'inbox'&$select=displayName",
        headers=auth(token),
    )
    assert filtered.json()["value"] == [
        {"id": org.alice.mailbox.folder("inbox").id, "displayName": "Inbox"}  # type: ignore[union-attr]
    ]
    bad = http.get("/v1.0/me/mailFolders?$select=color", headers=auth(token))
    assert bad.status_code == 400 and error_of(bad)["code"] == "RequestBroker--ParseUri"
    wrong = http.put("/v1.0/me/mailFolders/inbox", json={}, headers=auth(token))
    assert wrong.status_code == 405
