"""outlook/masterCategories over HTTPS (graph.md 3.7)."""

from __future__ import annotations

import httpx

from tests.graph.mailtools import auth, error_of
from tests.helpers import Org

BASE = "/v1.0/me/outlook/masterCategories"


def test_create_list_get_patch_delete(http: httpx.Client, org: Org) -> None:
    token = org.token(org.alice)
    created = http.post(
        BASE, json={"displayName": "Project expenses", "color": "Preset9"}, headers=auth(token)
    )
    assert created.status_code == 201
    category = created.json()
    assert category["@odata.context"].endswith(
        f"#users('{org.alice.id}')/outlook/masterCategories/$entity"
    )
    assert category["displayName"] == "Project expenses" and category["color"] == "preset9"
    listed = http.get(BASE, headers=auth(token)).json()
    assert [c["displayName"] for c in listed["value"]] == ["Project expenses"]
    one = http.get(f"{BASE}/{category['id']}", headers=auth(token))
    assert one.json()["color"] == "preset9"
    patched = http.patch(f"{BASE}/{category['id']}", json={"color": "NONE"}, headers=auth(token))
    assert patched.status_code == 200 and patched.json()["color"] == "none"
    deleted = http.delete(f"{BASE}/{category['id']}", headers=auth(token))
    assert deleted.status_code == 204
    assert http.get(BASE, headers=auth(token)).json()["value"] == []
    gone = http.get(f"{BASE}/{category['id']}", headers=auth(token))
    assert gone.status_code == 404 and error_of(gone)["code"] == "ErrorItemNotFound"


def test_color_defaults_to_none_and_must_be_a_preset(http: httpx.Client, org: Org) -> None:
    token = org.token(org.alice)
    plain = http.post(BASE, json={"displayName": "Plain"}, headers=auth(token))
    assert plain.json()["color"] == "none"
    for color in ("preset25", "red", 3):
        bad = http.post(
            BASE, json={"displayName": f"C{color}", "color": color}, headers=auth(token)
        )
        assert bad.status_code == 400, color
        assert error_of(bad)["code"] == "RequestBodyRead"


def test_duplicate_name_uses_the_configured_answer(http: httpx.Client, org: Org) -> None:
    token = org.token(org.alice)
    assert http.post(BASE, json={"displayName": "Invoices"}, headers=auth(token)).status_code == 201
    duplicate = http.post(BASE, json={"displayName": "invoices"}, headers=auth(token))
    assert duplicate.status_code == 409
    assert error_of(duplicate)["code"] == "ErrorDuplicateCategory"
    org.state.config.category_exists_status = 400
    org.state.config.category_exists_code = "ErrorInvalidRequest"
    again = http.post(BASE, json={"displayName": "INVOICES"}, headers=auth(token))
    assert again.status_code == 400 and error_of(again)["code"] == "ErrorInvalidRequest"


def test_rename_and_bad_input_are_refused(http: httpx.Client, org: Org) -> None:
    token = org.token(org.alice)
    category = http.post(BASE, json={"displayName": "Orders"}, headers=auth(token)).json()
    url = f"{BASE}/{category['id']}"
    rename = http.patch(url, json={"displayName": "Sales"}, headers=auth(token))
    assert rename.status_code == 400
    same = http.patch(url, json={"displayName": "Orders", "color": "preset1"}, headers=auth(token))
    assert same.status_code == 200
    assert http.post(BASE, json={}, headers=auth(token)).status_code == 400
    unknown = http.post(BASE, json={"displayName": "x", "colour": "red"}, headers=auth(token))
    assert error_of(unknown)["code"] == "RequestBodyRead"
    malformed = http.get(f"{BASE}/not-a-guid", headers=auth(token))
    assert malformed.status_code == 400
    assert error_of(malformed)["code"] == "ErrorInvalidIdMalformed"


def test_categories_need_mailbox_settings_permissions(http: httpx.Client, org: Org) -> None:
    mail_only = org.token(org.alice, ["Mail.ReadWrite"])
    assert http.get(BASE, headers=auth(mail_only)).status_code == 403
    read_only = org.token(org.alice, ["MailboxSettings.Read"])
    assert http.get(BASE, headers=auth(read_only)).status_code == 200
    denied = http.post(BASE, json={"displayName": "x"}, headers=auth(read_only))
    assert denied.status_code == 403
    app = http.post(
        f"/v1.0/users/{org.bob.id}/outlook/masterCategories",
        json={"displayName": "Red", "color": "preset0"},
        headers=auth(org.app_token()),
    )
    assert app.status_code == 201
    assert [c.display_name for c in org.bob.mailbox.categories.values()] == ["Red"]
