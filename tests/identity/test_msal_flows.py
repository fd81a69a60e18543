"""MSAL Python, unchanged, against the emulator: auth code flow, refresh, client credentials.

The browser part of the auth code flow is driven over HTTPS by :class:`Browser` (sign-in form,
MFA, consent); everything else is MSAL's own HTTP to the discovery and token endpoints.
"""

from __future__ import annotations

import httpx
import jwt
import pytest
import requests

from m365sim.state import EmulatorState
from tests.helpers import DELEGATED_ALL, REDIRECT_URI, Org, make_org
from tests.identity.browser import Browser
from tests.identity.conftest import MsalFactory
from tests.identity.flows import GRAPH, MAIL_SCOPES, claims, sign_in_with_msal


def test_auth_code_flow_gives_tokens_msal_accepts(
    org: Org, msal_app: MsalFactory, browser: Browser, sim: EmulatorState, http: httpx.Client
) -> None:
    app = msal_app()
    result = sign_in_with_msal(app, browser, org.alice)
    assert "access_token" in result, result
    assert result["token_type"] == "Bearer"
    assert result["refresh_token"]
    id_claims = result["id_token_claims"]
    assert id_claims["aud"] == org.app.client_id
    assert id_claims["tid"] == org.tenant.id
    assert id_claims["oid"] == org.alice.id
    assert id_claims["preferred_username"] == org.alice.user_principal_name
    assert id_claims["name"] == org.alice.display_name
    assert id_claims["ver"] == "2.0"
    assert id_claims["iss"] == f"{sim.base_url}/{org.tenant.id}/v2.0"
    assert {"sub", "sid", "iat", "nbf", "exp", "nonce"} <= set(id_claims)
    # client_info=1 made MSAL key the account as <oid>.<tid>
    (account,) = app.get_accounts()
    assert account["home_account_id"] == f"{org.alice.id}.{org.tenant.id}"
    assert account["username"] == org.alice.user_principal_name
    access = claims(result["access_token"])
    assert {"Mail.ReadWrite", "User.Read"} <= set(access["scp"].split())
    assert "Mail.Send" not in access["scp"].split()  # consented, but not requested
    assert access["aud"] == GRAPH
    assert access["tid"] == org.tenant.id and access["oid"] == org.alice.id
    # the id token verifies with the key the discovery document publishes
    keys = http.get(f"/{org.tenant.id}/discovery/v2.0/keys").json()["keys"]
    verified = jwt.decode(
        result["id_token"],
        jwt.PyJWK(keys[0]).key,
        algorithms=["RS256"],
        audience=org.app.client_id,
        leeway=sim.clock.offset + 60,  # other tests may have moved the emulator's clock on
    )
    assert verified["oid"] == org.alice.id


def test_response_scope_lists_full_graph_uris(
    org: Org, msal_app: MsalFactory, browser: Browser, http: httpx.Client
) -> None:
    result = sign_in_with_msal(msal_app(), browser, org.bob)
    scopes = result["scope"].split()
    assert f"{GRAPH}/Mail.ReadWrite" in scopes and f"{GRAPH}/User.Read" in scopes
    assert {"openid", "profile", "offline_access"} <= set(scopes)


def test_silent_refresh_rotates_and_old_token_stays_valid(
    org: Org, msal_app: MsalFactory, browser: Browser, http: httpx.Client
) -> None:
    app = msal_app()
    first = sign_in_with_msal(app, browser, org.alice)
    (account,) = app.get_accounts()
    refreshed = app.acquire_token_silent(MAIL_SCOPES, account, force_refresh=True)
    assert refreshed is not None and "access_token" in refreshed, refreshed
    assert refreshed["access_token"] != first["access_token"]
    assert refreshed["refresh_token"] != first["refresh_token"]  # rotation
    assert claims(refreshed["id_token"])["oid"] == org.alice.id
    # Entra does not revoke the previous refresh token (graph.md 1.4)
    old = http.post(
        f"/{org.tenant.id}/oauth2/v2.0/token",
        data={
            "grant_type": "refresh_token",
            "client_id": org.app.client_id,
            "client_secret": org.secret,
            "refresh_token": first["refresh_token"],
            "scope": f"{GRAPH}/Mail.ReadWrite offline_access",
        },
    )
    assert old.status_code == 200, old.text
    body = old.json()
    assert body["scope"].split() == [f"{GRAPH}/Mail.ReadWrite", "offline_access"]  # narrowed
    assert "id_token" not in body  # openid was not asked for this time
    assert claims(body["access_token"])["scp"] == "Mail.ReadWrite"


def test_refresh_cannot_widen_beyond_consent(
    org: Org, msal_app: MsalFactory, browser: Browser, http: httpx.Client
) -> None:
    result = sign_in_with_msal(msal_app(), browser, org.alice)
    response = http.post(
        f"/{org.tenant.id}/oauth2/v2.0/token",
        data={
            "grant_type": "refresh_token",
            "client_id": org.app.client_id,
            "client_secret": org.secret,
            "refresh_token": result["refresh_token"],
            "scope": f"{GRAPH}/Calendars.Read offline_access",
        },
    )
    assert response.status_code == 400
    assert response.json()["error_codes"] == [65001]
    assert response.json()["suberror"] == "consent_required"


def test_client_credentials_carries_roles_and_no_refresh_token(
    org: Org, msal_app: MsalFactory
) -> None:
    result = msal_app().acquire_token_for_client([f"{GRAPH}/.default"])
    assert "access_token" in result, result
    assert "refresh_token" not in result
    token = claims(result["access_token"])
    assert sorted(token["roles"]) == sorted(org.app.application_permissions)
    assert token["idtyp"] == "app"
    assert "scp" not in token


def test_client_credentials_without_role_grants_has_empty_roles(
    sim: EmulatorState, org: Org, msal_app: MsalFactory, http: httpx.Client
) -> None:
    sim.store.revoke_consent(org.tenant, org.app.client_id)  # home tenant keeps its SP
    result = msal_app().acquire_token_for_client([f"{GRAPH}/.default"])
    assert claims(result["access_token"])["roles"] == []
    denied = http.get(
        f"/v1.0/users/{org.alice.id}", headers={"Authorization": f"Bearer {result['access_token']}"}
    )
    assert denied.status_code == 403


def test_msal_token_is_honoured_by_graph_scp(
    org: Org, msal_app: MsalFactory, browser: Browser, http: httpx.Client
) -> None:
    result = sign_in_with_msal(msal_app(), browser, org.alice, [f"{GRAPH}/User.Read"])
    auth = {"Authorization": f"Bearer {result['access_token']}"}
    me = http.get("/v1.0/me", headers=auth)
    assert me.status_code == 200 and me.json()["id"] == org.alice.id
    messages = http.get("/v1.0/me/messages", headers=auth)
    assert messages.status_code == 403
    assert messages.json()["error"]["code"] == "ErrorAccessDenied"


def test_consent_screen_then_tokens(
    sim: EmulatorState,
    msal_app: MsalFactory,
    browser: Browser,
    base_url: str,
    msal_session: requests.Session,
) -> None:
    fresh = make_org(sim, consent=False)
    import msal

    app = msal.ConfidentialClientApplication(
        fresh.app.client_id,
        client_credential=fresh.secret,
        authority=f"{base_url}/{fresh.tenant.id}",
        instance_discovery=False,
        http_client=msal_session,
    )
    result = sign_in_with_msal(app, browser, fresh.bob, consent="accept")
    assert "access_token" in result, result
    assert sim.store.delegated_scopes(fresh.tenant, fresh.app.client_id, fresh.bob.id) == {
        "Mail.ReadWrite",
        "User.Read",
    }
    # the consent is remembered: a second sign-in goes straight through (no consent screen)
    again = sign_in_with_msal(app, browser, fresh.bob, consent=None)
    assert "access_token" in again


def test_mfa_user_signs_in_with_code(
    org: Org, msal_app: MsalFactory, browser: Browser, http: httpx.Client
) -> None:
    org.alice.mfa_required = True
    org.alice.mfa_code = "246810"
    app = msal_app()
    result = sign_in_with_msal(app, browser, org.alice, mfa_code="246810")
    assert "access_token" in result, result
    (account,) = app.get_accounts()
    # obtained with MFA, so refresh keeps working while MFA is required
    refreshed = app.acquire_token_silent(MAIL_SCOPES, account, force_refresh=True)
    assert refreshed is not None and "access_token" in refreshed, refreshed


def test_public_client_auth_code_flow(
    sim: EmulatorState, org: Org, browser: Browser, base_url: str, msal_session: requests.Session
) -> None:
    import msal

    desktop = sim.store.add_app(
        display_name="Desktop",
        home_tenant_id=org.tenant.id,
        redirect_uris=["http://localhost"],
        public_client=True,
        delegated_permissions=DELEGATED_ALL,
    )
    sim.store.grant_admin_consent(org.tenant, desktop)
    app = msal.PublicClientApplication(
        desktop.client_id,
        authority=f"{base_url}/{org.tenant.id}",
        instance_discovery=False,
        http_client=msal_session,
    )
    result = sign_in_with_msal(app, browser, org.alice, redirect_uri="http://localhost:53117")
    assert "access_token" in result, result
    record = sim.store.refresh_tokens[result["refresh_token"]]
    assert record.confidential is False


def test_instance_discovery_document_satisfies_msal(
    org: Org, base_url: str, msal_session: requests.Session
) -> None:
    import msal

    app = msal.ConfidentialClientApplication(
        org.app.client_id,
        client_credential=org.secret,
        authority=f"{base_url}/{org.tenant.id}",
        instance_discovery=f"{base_url}/common/discovery/instance",
        http_client=msal_session,
    )
    result = app.acquire_token_for_client([f"{GRAPH}/.default"])
    assert "access_token" in result, result


def test_client_credentials_at_the_tenant_domain(org: Org, msal_app: MsalFactory) -> None:
    result = msal_app(tenant=org.tenant.domain).acquire_token_for_client([f"{GRAPH}/.default"])
    assert "access_token" in result, result
    assert claims(result["access_token"])["tid"] == org.tenant.id


def test_client_credentials_at_organizations_uses_the_home_tenant(
    org: Org, http: httpx.Client
) -> None:
    # (MSAL itself warns against /organizations for client credentials, so raw HTTP here)
    response = http.post(
        "/organizations/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": org.app.client_id,
            "client_secret": org.secret,
            "scope": f"{GRAPH}/.default",
        },
    )
    assert response.status_code == 200, response.text
    assert claims(response.json()["access_token"])["tid"] == org.tenant.id


def test_query_response_mode_works_for_msal(
    org: Org, msal_app: MsalFactory, browser: Browser
) -> None:
    app = msal_app()
    with pytest.warns(UserWarning, match="form_post"):
        flow = app.initiate_auth_code_flow(MAIL_SCOPES, redirect_uri=REDIRECT_URI)
    arrival = browser.sign_in(flow["auth_uri"], org.bob.user_principal_name, org.bob.password)
    assert arrival.via == "query"
    assert set(arrival.params) == {"code", "client_info", "state", "session_state"}
    result = app.acquire_token_by_auth_code_flow(flow, arrival.params)
    assert "access_token" in result, result
