"""The Graph dispatcher end to end over HTTPS: auth, routing, error envelope, directory."""

from __future__ import annotations

import httpx

from tests.helpers import Org


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_me_returns_the_signed_in_user(http: httpx.Client, org: Org) -> None:
    response = http.get("/v1.0/me", headers=_auth(org.token(org.alice)))
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == org.alice.id
    assert body["userPrincipalName"] == org.alice.user_principal_name
    assert response.headers["request-id"]


def test_missing_token_is_401_in_graph_envelope(http: httpx.Client, org: Org) -> None:
    response = http.get("/v1.0/me")
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "InvalidAuthenticationToken"
    assert error["message"] == "Access token is empty."
    assert error["innerError"]["request-id"]
    assert error["innerError"]["date"]


def test_garbage_token_is_401(http: httpx.Client, org: Org) -> None:
    response = http.get("/v1.0/me", headers=_auth("not-a-jwt"))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "InvalidAuthenticationToken"


def test_me_with_app_only_token_is_400(http: httpx.Client, org: Org) -> None:
    response = http.get("/v1.0/me", headers=_auth(org.app_token()))
    assert response.status_code == 400
    assert "delegated" in response.json()["error"]["message"]


def test_users_listing_needs_user_read_all(http: httpx.Client, org: Org) -> None:
    ok = http.get("/v1.0/users", headers=_auth(org.app_token()))
    assert ok.status_code == 200
    upns = {u["userPrincipalName"] for u in ok.json()["value"]}
    assert org.shared.user_principal_name in upns
    denied = http.get("/v1.0/users", headers=_auth(org.app_token(roles=["Mail.Read"])))
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "Authorization_RequestDenied"


def test_user_by_upn_and_unknown_user(http: httpx.Client, org: Org) -> None:
    token = org.app_token()
    by_upn = http.get(f"/v1.0/users/{org.bob.user_principal_name.upper()}", headers=_auth(token))
    assert by_upn.status_code == 200 and by_upn.json()["id"] == org.bob.id
    missing = http.get("/v1.0/users/nobody@nowhere.test", headers=_auth(token))
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "Request_ResourceNotFound"


def test_unknown_segment_is_400_not_500(http: httpx.Client, org: Org) -> None:
    response = http.get("/v1.0/me/bogus/segment", headers=_auth(org.token(org.alice)))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadRequest"


def test_another_tenants_token_cannot_read_this_tenants_user(
    http: httpx.Client, org: Org, sim: object
) -> None:
    from tests.helpers import make_org

    other = make_org(org.state)
    response = http.get(f"/v1.0/users/{org.alice.id}", headers=_auth(other.app_token()))
    assert response.status_code == 404
