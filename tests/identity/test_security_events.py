"""Security events in Entra ID, as MSAL reports them on the next silent refresh.

Each case signs in through MSAL (a fresh application object, so MSAL's 60-second cache of 400
responses cannot answer instead of the emulator), triggers the event through the control API,
and checks the dict ``acquire_token_silent_with_error(force_refresh=True)`` returns: ``error``,
``error_codes``, ``suberror`` and MSAL's ``classification`` (graph.md 1.4, 1.5, 1.9).
"""

from __future__ import annotations

from typing import Any

import httpx
import msal
import pytest
import requests

from m365sim.state import EmulatorState
from tests.helpers import DELEGATED_ALL, Org, make_org
from tests.identity.browser import Browser
from tests.identity.conftest import MsalFactory
from tests.identity.flows import MAIL_SCOPES, sign_in_with_msal


def _signed_in(app: Any, browser: Browser, user: Any, **kw: Any) -> dict[str, Any]:
    result = sign_in_with_msal(app, browser, user, **kw)
    assert "access_token" in result, result
    (account,) = app.get_accounts()
    return dict(account)


def _refresh(app: Any, account: dict[str, Any]) -> dict[str, Any]:
    result = app.acquire_token_silent_with_error(MAIL_SCOPES, account, force_refresh=True)
    assert result is not None
    return dict(result)


def _event(http: httpx.Client, org: Org, user: Any, event: str, **body: Any) -> dict[str, Any]:
    response = http.post(
        f"/_emulator/tenants/{org.tenant.id}/users/{user.user_principal_name}/{event}", json=body
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_admin_password_reset_in_entra_admin_center_revokes(
    org: Org, msal_app: MsalFactory, browser: Browser, http: httpx.Client
) -> None:
    app = msal_app()
    account = _signed_in(app, browser, org.alice)
    assert "access_token" in _refresh(app, account)
    state = _event(http, org, org.alice, "resetPassword", password="Reset-by-admin-1")
    assert state["refreshTokens"]["live"] == 0
    result = _refresh(app, account)
    assert result["error"] == "invalid_grant"
    assert result["error_codes"] == [50173]
    assert result["suberror"] == "bad_token"
    assert result["classification"] == ""  # MSAL suppresses bad_token
    # the new password works in the browser; the old one does not
    fresh = msal_app()
    with pytest.raises(AssertionError):
        _signed_in(fresh, browser, org.alice, password="alice-pass")
    _signed_in(msal_app(), browser, org.alice, password="Reset-by-admin-1")


def test_user_password_change_keeps_confidential_revokes_public(
    sim: EmulatorState,
    org: Org,
    msal_app: MsalFactory,
    browser: Browser,
    http: httpx.Client,
    base_url: str,
    msal_session: requests.Session,
) -> None:
    web = msal_app()
    web_account = _signed_in(web, browser, org.alice)
    desktop_reg = sim.store.add_app(
        display_name="Desktop",
        home_tenant_id=org.tenant.id,
        redirect_uris=["http://localhost"],
        public_client=True,
        delegated_permissions=DELEGATED_ALL,
    )
    sim.store.grant_admin_consent(org.tenant, desktop_reg)
    desktop = msal.PublicClientApplication(
        desktop_reg.client_id,
        authority=f"{base_url}/{org.tenant.id}",
        instance_discovery=False,
        http_client=msal_session,
    )
    desktop_account = _signed_in(desktop, browser, org.alice, redirect_uri="http://localhost:8400")
    _event(http, org, org.alice, "changePassword", password="Changed-by-me-2")
    assert "access_token" in _refresh(web, web_account)  # confidential client: still valid
    public = _refresh(desktop, desktop_account)
    assert public["error_codes"] == [50173]


def test_admin_reset_in_azure_portal_keeps_confidential_tokens(
    org: Org, msal_app: MsalFactory, browser: Browser, http: httpx.Client
) -> None:
    app = msal_app()
    account = _signed_in(app, browser, org.bob)
    _event(http, org, org.bob, "resetPassword", password="Portal-reset-3", via="azurePortal")
    assert "access_token" in _refresh(app, account)


def test_revoke_sign_in_sessions(
    org: Org, msal_app: MsalFactory, browser: Browser, http: httpx.Client, base_url: str
) -> None:
    app = msal_app()
    account = _signed_in(app, browser, org.alice)
    _event(http, org, org.alice, "revokeSignInSessions")
    result = _refresh(app, account)
    assert result["error_codes"] == [50173]
    # the browser session is gone too: prompt=none now needs a sign-in
    flow = app.initiate_auth_code_flow(MAIL_SCOPES, response_mode="form_post", prompt="none")
    arrival = Browser.arrival(browser.open(flow["auth_uri"]))
    assert arrival is not None and arrival.params["error"] == "login_required"


def test_mfa_newly_required(
    org: Org, msal_app: MsalFactory, browser: Browser, http: httpx.Client
) -> None:
    app = msal_app()
    account = _signed_in(app, browser, org.alice)
    _event(http, org, org.alice, "mfa", required=True, code="864209")
    result = _refresh(app, account)
    assert result["error"] == "invalid_grant"
    assert result["error_codes"] == [50076]
    assert result["suberror"] == "basic_action"
    assert result["classification"] == "basic_action"
    # signing in again with MFA fixes it
    again = msal_app()
    account = _signed_in(again, browser, org.alice, mfa_code="864209")
    assert "access_token" in _refresh(again, account)


def test_consent_revoked(
    sim: EmulatorState, msal_app: MsalFactory, browser: Browser, http: httpx.Client
) -> None:
    fresh = make_org(sim, consent=False)
    app = msal_app(client_id=fresh.app.client_id, tenant=fresh.tenant.id)
    account = _signed_in(app, browser, fresh.alice)  # alice consents herself
    _event(http, fresh, fresh.alice, "revokeConsent", clientId=fresh.app.client_id)
    result = _refresh(app, account)
    assert result["error"] == "invalid_grant"
    assert result["error_codes"] == [65001]
    assert result["suberror"] == "consent_required"
    assert result["classification"] == "consent_required"


def test_user_disabled(
    org: Org, msal_app: MsalFactory, browser: Browser, http: httpx.Client
) -> None:
    app = msal_app()
    account = _signed_in(app, browser, org.bob)
    assert _event(http, org, org.bob, "disable")["accountEnabled"] is False
    result = _refresh(app, account)
    assert result["error"] == "invalid_grant"
    assert result["error_codes"] == [50057]
    assert "suberror" not in result and "classification" not in result


def test_password_expired(
    org: Org, msal_app: MsalFactory, browser: Browser, http: httpx.Client
) -> None:
    app = msal_app()
    account = _signed_in(app, browser, org.bob)
    _event(http, org, org.bob, "expirePassword")
    result = _refresh(app, account)
    assert result["error_codes"] == [50055]
    assert result["suberror"] == "user_password_expired"


def test_refresh_token_inactivity(
    sim: EmulatorState, org: Org, msal_app: MsalFactory, browser: Browser, http: httpx.Client
) -> None:
    sim.config.refresh_token_inactivity_days = 1
    app = msal_app()
    account = _signed_in(app, browser, org.alice)
    before = http.get("/_emulator/clock").json()["offsetSeconds"]
    advanced = http.post("/_emulator/clock/advance", json={"seconds": 86_401})
    assert advanced.status_code == 200
    assert advanced.json()["offsetSeconds"] == pytest.approx(before + 86_401)
    result = _refresh(app, account)
    assert result["error_codes"] == [700082]
    assert result["suberror"] == "bad_token"
    assert "inactive for 1 days" in result["error_description"]


def test_suberror_and_error_are_configurable_per_user(
    org: Org, msal_app: MsalFactory, browser: Browser, http: httpx.Client
) -> None:
    app = msal_app()
    account = _signed_in(app, browser, org.alice)
    shaped = http.put(
        f"/_emulator/tenants/{org.tenant.id}/users/{org.alice.id}/errorShapes/sessions_revoked",
        json={"suberror": None, "error": "interaction_required"},
    )
    assert shaped.status_code == 200
    assert shaped.json()["errorShapes"]["sessions_revoked"] == {
        "suberror": None,
        "error": "interaction_required",
    }
    _event(http, org, org.alice, "revokeSignInSessions")
    result = _refresh(app, account)
    assert result["error"] == "interaction_required"
    assert result["error_codes"] == [50173]
    assert "suberror" not in result


def test_control_api_errors(org: Org, http: httpx.Client) -> None:
    base = f"/_emulator/tenants/{org.tenant.id}/users"
    assert http.post(f"{base}/nobody@x.test/disable").status_code == 404
    assert http.post("/_emulator/tenants/nope/users/x/disable").status_code == 404
    bad = http.post(f"{base}/{org.alice.id}/resetPassword", json={"password": ""})
    assert bad.status_code == 400 and "password" in bad.json()["error"]
    bad = http.post(
        f"{base}/{org.alice.id}/resetPassword",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert bad.status_code == 400
    bad = http.post(f"{base}/{org.alice.id}/resetPassword", json={"password": "x", "via": "fax"})
    assert bad.status_code == 400
    unknown_kind = http.put(f"{base}/{org.alice.id}/errorShapes/nope", json={})
    assert unknown_kind.status_code == 404
    assert http.post("/_emulator/clock/advance", json={"seconds": -5}).status_code == 400
    assert http.post("/_emulator/clock/advance", json={"seconds": "5"}).status_code == 400
    assert http.post("/_emulator/security/apps/nope/expireSecret").status_code == 404
    assert (
        http.post(
            f"/_emulator/security/apps/{org.app.client_id}/rotateSecret",
            json={"lifetimeDays": -1},
        ).status_code
        == 400
    )
