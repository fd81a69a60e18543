"""Control API, directory side: tenants, users, shared mailboxes, groups, apps, consents and
application access policies, checked through Graph where Graph shows the effect."""

from __future__ import annotations

import uuid

import httpx

from m365sim.state import EmulatorState
from tests.helpers import Org


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _domain() -> str:
    return f"t{uuid.uuid4().hex[:10]}.test"


def test_tenant_and_user_created_by_control_api_are_visible_in_graph(
    http: httpx.Client, org: Org
) -> None:
    domain = _domain()
    created = http.post("/_emulator/tenants", json={"displayName": "Fabrikam", "domain": domain})
    assert created.status_code == 201
    tenant = created.json()
    assert tenant["domain"] == domain and uuid.UUID(tenant["id"])

    user = http.post(
        f"/_emulator/tenants/{org.tenant.id}/users",
        json={
            "userPrincipalName": f"carol@{org.tenant.domain}",
            "displayName": "Carol Peeters",
            "password": "carol-pass",
            "mfaRequired": True,
            "isAdmin": True,
        },
    )
    assert user.status_code == 201, user.text
    body = user.json()
    assert body["mfaRequired"] is True and body["isAdmin"] is True
    assert body["isSharedMailbox"] is False

    graph = http.get(f"/v1.0/users/carol@{org.tenant.domain}", headers=_auth(org.app_token()))
    assert graph.status_code == 200
    assert graph.json()["id"] == body["id"]
    assert graph.json()["displayName"] == "Carol Peeters"

    detail = http.get(f"/_emulator/tenants/{org.tenant.domain}")
    assert detail.status_code == 200
    assert f"carol@{org.tenant.domain}" in {u["userPrincipalName"] for u in detail.json()["users"]}


def test_tenant_input_errors_are_clear(http: httpx.Client) -> None:
    missing = http.post("/_emulator/tenants", json={"displayName": "No domain"})
    assert missing.status_code == 400
    assert "domain is required" in missing.json()["error"]

    bad_domain = http.post("/_emulator/tenants", json={"displayName": "X", "domain": "not a dom"})
    assert bad_domain.status_code == 400 and "domain" in bad_domain.json()["error"]

    typo = http.post(
        "/_emulator/tenants", json={"displayName": "X", "domain": _domain(), "displayname": "y"}
    )
    assert typo.status_code == 400 and "unknown field" in typo.json()["error"]

    not_json = http.post(
        "/_emulator/tenants", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["error"]

    domain = _domain()
    assert http.post("/_emulator/tenants", json={"displayName": "A", "domain": domain}).is_success
    again = http.post("/_emulator/tenants", json={"displayName": "B", "domain": domain.upper()})
    assert again.status_code == 409

    bad_id = http.post(
        "/_emulator/tenants", json={"displayName": "C", "domain": _domain(), "id": "nope"}
    )
    assert bad_id.status_code == 400 and "GUID" in bad_id.json()["error"]

    assert http.get("/_emulator/tenants/00000000-0000-0000-0000-000000000000").status_code == 404


def test_user_errors(http: httpx.Client, org: Org) -> None:
    path = f"/_emulator/tenants/{org.tenant.id}/users"
    no_password = http.post(path, json={"userPrincipalName": "dave", "displayName": "Dave"})
    assert no_password.status_code == 400
    assert "password is required" in no_password.json()["error"]

    duplicate = http.post(
        path,
        json={
            "userPrincipalName": org.alice.user_principal_name.upper(),
            "displayName": "Alice again",
            "password": "x",
        },
    )
    assert duplicate.status_code == 409

    other = http.post("/_emulator/tenants", json={"displayName": "O", "domain": _domain()}).json()
    foreign = http.post(
        path,
        json={"userPrincipalName": f"eve@{other['domain']}", "displayName": "Eve", "password": "x"},
    )
    assert foreign.status_code == 409 and "another tenant" in foreign.json()["error"]

    bare = http.post(path, json={"userPrincipalName": "frank", "displayName": "F", "password": "p"})
    assert bare.status_code == 201
    assert bare.json()["userPrincipalName"] == f"frank@{org.tenant.domain}"

    unknown = http.post(
        "/_emulator/tenants/nope.test/users",
        json={"userPrincipalName": "x", "displayName": "X", "password": "p"},
    )
    assert unknown.status_code == 404


def _inbox(http: httpx.Client, token: str, mailbox: str) -> httpx.Response:
    return http.get(f"/v1.0/users/{mailbox}/mailFolders/inbox/messages", headers=_auth(token))


def test_shared_mailbox_full_access_decides_delegated_access(http: httpx.Client, org: Org) -> None:
    created = http.post(
        f"/_emulator/tenants/{org.tenant.id}/sharedMailboxes",
        json={
            "userPrincipalName": f"support@{org.tenant.domain}",
            "displayName": "Support",
            "fullAccess": [org.bob.user_principal_name],
        },
    )
    assert created.status_code == 201, created.text
    shared = created.json()
    assert shared["isSharedMailbox"] is True and shared["accountEnabled"] is False
    assert shared["fullAccess"] == [org.bob.id]
    mailbox = shared["userPrincipalName"]
    delivered = http.post(
        f"/_emulator/mailboxes/{mailbox}/deliver",
        json={"subject": "Where is my parcel?", "from": "klant@example.test"},
    )
    assert delivered.status_code == 201

    as_bob = _inbox(http, org.token(org.bob), mailbox)
    assert as_bob.status_code == 200
    assert [m["subject"] for m in as_bob.json()["value"]] == ["Where is my parcel?"]

    assert _inbox(http, org.token(org.alice), mailbox).status_code == 403
    grant = http.post(f"/_emulator/mailboxes/{mailbox}/fullAccess", json={"users": [org.alice.id]})
    assert grant.status_code == 200 and org.alice.id in grant.json()["fullAccess"]
    assert _inbox(http, org.token(org.alice), mailbox).status_code == 200

    revoke = http.delete(
        f"/_emulator/mailboxes/{mailbox}/fullAccess/{org.alice.user_principal_name}"
    )
    assert revoke.status_code == 204
    denied = _inbox(http, org.token(org.alice), mailbox)
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "ErrorAccessDenied"

    unknown_user = http.post(f"/_emulator/mailboxes/{mailbox}/fullAccess", json={"users": ["x"]})
    assert unknown_user.status_code == 400
    assert http.get("/_emulator/mailboxes/nobody@nowhere.test/fullAccess").status_code == 404


def test_application_access_policy_limits_app_only_access(http: httpx.Client, org: Org) -> None:
    tid = org.tenant.id
    group = http.post(
        f"/_emulator/tenants/{tid}/groups",
        json={"displayName": "Postroom mailboxes", "mail": "postroom", "members": ["alice"]},
    )
    assert group.status_code == 201, group.text
    assert group.json()["mail"] == f"postroom@{org.tenant.domain}"
    token = org.app_token()
    assert _inbox(http, token, org.bob.id).status_code == 200

    policy = http.post(
        f"/_emulator/tenants/{tid}/accessPolicies",
        json={
            "appId": org.app.client_id,
            "groupMail": f"postroom@{org.tenant.domain}",
            "accessRight": "RestrictAccess",
        },
    )
    assert policy.status_code == 201, policy.text
    denied = _inbox(http, token, org.bob.id)
    assert denied.status_code == 403
    assert denied.json()["error"] == {
        **denied.json()["error"],
        "code": "ErrorAccessDenied",
        "message": "Access to OData is disabled.",
    }
    assert _inbox(http, token, org.alice.id).status_code == 200

    added = http.post(
        f"/_emulator/tenants/{tid}/groups/{group.json()['id']}/members", json={"members": ["bob"]}
    )
    assert added.status_code == 200 and org.bob.id in added.json()["members"]
    assert _inbox(http, token, org.bob.id).status_code == 200
    removed = http.delete(f"/_emulator/tenants/{tid}/groups/{group.json()['id']}/members/bob")
    assert removed.status_code == 204
    assert _inbox(http, token, org.bob.id).status_code == 403

    listed = http.get(f"/_emulator/tenants/{tid}/accessPolicies").json()["value"]
    assert [p["id"] for p in listed] == [policy.json()["id"]]
    assert (
        http.delete(f"/_emulator/tenants/{tid}/accessPolicies/{policy.json()['id']}").status_code
        == 204
    )
    assert _inbox(http, token, org.bob.id).status_code == 200
    assert (
        http.delete(f"/_emulator/tenants/{tid}/accessPolicies/{policy.json()['id']}").status_code
        == 404
    )

    bad_right = http.post(
        f"/_emulator/tenants/{tid}/accessPolicies",
        json={"appId": org.app.client_id, "groupId": group.json()["id"], "accessRight": "Allow"},
    )
    assert bad_right.status_code == 400 and "RestrictAccess" in bad_right.json()["error"]
    no_group = http.post(
        f"/_emulator/tenants/{tid}/accessPolicies",
        json={"appId": org.app.client_id, "groupMail": "none@x.test", "accessRight": "DenyAccess"},
    )
    assert no_group.status_code == 400


def test_app_registration_secrets_are_shown_once(http: httpx.Client, org: Org) -> None:
    client_id = str(uuid.uuid4())
    created = http.post(
        "/_emulator/apps",
        json={
            "clientId": client_id,
            "displayName": "Another app",
            "homeTenantId": org.tenant.domain,
            "redirectUris": ["https://app.test/callback"],
            "secrets": [{"value": "first-secret", "expiresAt": "2030-01-01T00:00:00Z"}],
            "delegatedPermissions": ["Mail.Read", "User.Read"],
            "applicationPermissions": ["Mail.Read"],
        },
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["clientId"] == client_id and body["homeTenantId"] == org.tenant.id
    assert body["secrets"] == [
        {"hint": "fir", "expiresAt": "2030-01-01T00:00:00Z", "value": "first-secret"}
    ]
    shown = http.get(f"/_emulator/apps/{client_id}").json()
    assert "value" not in shown["secrets"][0]

    added = http.post(f"/_emulator/apps/{client_id}/secrets", json={"value": "second"})
    assert added.status_code == 201
    assert [s.get("value") for s in added.json()["secrets"]] == [None, "second"]

    again = http.post(
        "/_emulator/apps",
        json={"clientId": client_id, "displayName": "Dup", "homeTenantId": org.tenant.id},
    )
    assert again.status_code == 409
    no_home = http.post("/_emulator/apps", json={"displayName": "X", "homeTenantId": "nope.test"})
    assert no_home.status_code == 400 and "homeTenantId" in no_home.json()["error"]
    bad_perm = http.post(
        "/_emulator/apps",
        json={
            "displayName": "X",
            "homeTenantId": org.tenant.id,
            "delegatedPermissions": ["Mail Read"],
        },
    )
    assert bad_perm.status_code == 400
    assert http.get(f"/_emulator/apps/{uuid.uuid4()}").status_code == 404


def test_consents_grant_and_revoke(http: httpx.Client, org: Org, sim: EmulatorState) -> None:
    from tests.helpers import make_org

    fresh = make_org(sim, consent=False)
    tid, cid = fresh.tenant.id, fresh.app.client_id
    store = sim.store
    assert store.delegated_scopes(fresh.tenant, cid, fresh.alice.id) == set()

    user = http.post(
        f"/_emulator/tenants/{tid}/consents",
        json={"clientId": cid, "userId": fresh.alice.user_principal_name, "scopes": ["Mail.Read"]},
    )
    assert user.status_code == 201, user.text
    assert user.json()["users"] == [
        {"clientId": cid, "userId": fresh.alice.id, "scopes": ["Mail.Read"]}
    ]
    admin = http.post(f"/_emulator/tenants/{tid}/consents", json={"clientId": cid, "admin": True})
    assert admin.status_code == 201
    assert set(admin.json()["appRoles"][0]["roles"]) == set(fresh.app.application_permissions)
    assert "Mail.ReadWrite" in store.delegated_scopes(fresh.tenant, cid, fresh.bob.id)

    one = http.request(
        "DELETE",
        f"/_emulator/tenants/{tid}/consents",
        json={"clientId": cid, "userId": fresh.alice.id},
    )
    assert one.status_code == 200 and one.json()["users"] == []
    everything = http.delete(f"/_emulator/tenants/{tid}/consents?clientId={cid}")
    assert everything.status_code == 200
    assert everything.json() == {"admin": [], "appRoles": [], "users": []}
    assert store.delegated_scopes(fresh.tenant, cid, fresh.bob.id) == set()

    no_user = http.post(f"/_emulator/tenants/{tid}/consents", json={"clientId": cid})
    assert no_user.status_code == 400 and "userId" in no_user.json()["error"]
    unknown_app = http.post(
        f"/_emulator/tenants/{tid}/consents", json={"clientId": str(uuid.uuid4()), "admin": True}
    )
    assert unknown_app.status_code == 400
