"""The token endpoint's failures, each with Entra's exact body, over raw HTTPS (and MSAL where
MSAL is how an application would meet it)."""

from __future__ import annotations

import base64
import urllib.parse

import httpx
import pytest

from m365sim.state import EmulatorState
from tests.helpers import REDIRECT_URI, Org, make_org
from tests.identity.browser import Browser
from tests.identity.conftest import MsalFactory
from tests.identity.flows import (
    GRAPH,
    assert_aadsts,
    authorize_url,
    claims,
    pkce_pair,
    redeem,
    sign_in_with_msal,
)


def _code(
    browser: Browser, base_url: str, org: Org, *, challenge: str | None = None, **params: str
) -> str:
    extra = dict(params)
    if challenge is not None:
        extra.update(code_challenge=challenge, code_challenge_method="S256")
    arrival = browser.sign_in(
        authorize_url(base_url, org, **extra), org.alice.user_principal_name, "alice-pass"
    )
    assert "code" in arrival.params, arrival.params
    return arrival.params["code"]


def _token(http: httpx.Client, tenant: str, **data: str) -> httpx.Response:
    return http.post(f"/{tenant}/oauth2/v2.0/token", data=data)


def test_code_redeemed_twice_is_54005(
    org: Org, browser: Browser, base_url: str, http: httpx.Client
) -> None:
    verifier, challenge = pkce_pair()
    code = _code(browser, base_url, org, challenge=challenge)
    first = redeem(http, org, code, verifier=verifier)
    assert first.status_code == 200, first.text
    body = first.json()
    assert list(body)[:5] == ["token_type", "scope", "expires_in", "ext_expires_in", "access_token"]
    assert body["refresh_token"] and body["id_token"]
    assert claims(body["id_token"])["nonce"] == "n-456"
    assert "client_info" not in body  # not asked for
    assert first.headers["cache-control"] == "no-store, no-cache"
    again = redeem(http, org, code, verifier=verifier)
    assert_aadsts(again, 400, "invalid_grant", 54005)


def test_pkce_mismatch_is_501481(
    org: Org, browser: Browser, base_url: str, http: httpx.Client
) -> None:
    _, challenge = pkce_pair()
    code = _code(browser, base_url, org, challenge=challenge)
    wrong, _ = pkce_pair()
    assert_aadsts(redeem(http, org, code, verifier=wrong), 400, "invalid_grant", 501481)
    assert_aadsts(redeem(http, org, code), 400, "invalid_grant", 501481)  # no verifier at all


def test_pkce_plain_is_assumed_without_method(
    org: Org, browser: Browser, base_url: str, http: httpx.Client
) -> None:
    verifier = "v" * 50
    arrival = browser.sign_in(
        authorize_url(base_url, org, code_challenge=verifier),
        org.alice.user_principal_name,
        "alice-pass",
    )
    response = redeem(http, org, arrival.params["code"], verifier=verifier, client_info="1")
    assert response.status_code == 200, response.text
    info = response.json()["client_info"]
    decoded = base64.urlsafe_b64decode(info + "=" * (-len(info) % 4))
    assert b'"uid": "' + org.alice.id.encode() in decoded


def test_code_checks_redirect_uri_tenant_and_lifetime(
    sim: EmulatorState, org: Org, browser: Browser, base_url: str, http: httpx.Client
) -> None:
    code = _code(browser, base_url, org)
    assert_aadsts(
        redeem(http, org, code, redirect_uri="https://postroom.test/other"),
        400,
        "invalid_grant",
        500112,
    )
    assert_aadsts(redeem(http, org, code, tenant="organizations"), 400, "invalid_grant", 700005)
    sim.config.code_lifetime = 0
    assert_aadsts(redeem(http, org, code), 400, "invalid_grant", 70008)


def test_garbage_code_and_refresh_token_are_9002313(org: Org, http: httpx.Client) -> None:
    assert_aadsts(redeem(http, org, "not-a-code"), 400, "invalid_grant", 9002313)
    response = _token(
        http,
        org.tenant.id,
        grant_type="refresh_token",
        client_id=org.app.client_id,
        client_secret=org.secret,
        refresh_token="1.Agarbage",
    )
    assert_aadsts(response, 400, "invalid_grant", 9002313)


def test_wrong_secret_is_7000215_through_msal(org: Org, msal_app: MsalFactory) -> None:
    result = msal_app(secret="wrong-secret").acquire_token_for_client([f"{GRAPH}/.default"])
    assert result["error"] == "invalid_client"
    assert result["error_codes"] == [7000215]


def test_expired_secret_is_7000222_through_msal(
    sim: EmulatorState, org: Org, msal_app: MsalFactory, http: httpx.Client
) -> None:
    expired = http.post(f"/_emulator/security/apps/{org.app.client_id}/expireSecret", json={})
    assert expired.status_code == 200 and expired.json() == {"expired": 1}
    result = msal_app().acquire_token_for_client([f"{GRAPH}/.default"])
    assert result["error"] == "invalid_client"
    assert result["error_codes"] == [7000222]


def test_rotated_secret_old_one_is_7000215(
    org: Org, msal_app: MsalFactory, http: httpx.Client
) -> None:
    rotated = http.post(f"/_emulator/security/apps/{org.app.client_id}/rotateSecret", json={})
    assert rotated.status_code == 201
    new_secret = rotated.json()["secretText"]
    old = msal_app().acquire_token_for_client([f"{GRAPH}/.default"])
    assert old["error_codes"] == [7000215]
    new = msal_app(secret=new_secret).acquire_token_for_client([f"{GRAPH}/.default"])
    assert "access_token" in new, new


def test_secret_in_http_basic(org: Org, http: httpx.Client) -> None:
    basic = base64.b64encode(
        f"{urllib.parse.quote_plus(org.app.client_id)}:{urllib.parse.quote_plus(org.secret)}".encode()
    ).decode()
    response = http.post(
        f"/{org.tenant.id}/oauth2/v2.0/token",
        data={"grant_type": "client_credentials", "scope": f"{GRAPH}/.default"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert response.status_code == 200, response.text
    wrong = base64.b64encode(f"{org.app.client_id}:nope".encode()).decode()
    response = http.post(
        f"/{org.tenant.id}/oauth2/v2.0/token",
        data={"grant_type": "client_credentials", "scope": f"{GRAPH}/.default"},
        headers={"Authorization": f"Basic {wrong}"},
    )
    assert_aadsts(response, 401, "invalid_client", 7000215)


def test_public_client_sending_a_secret_is_700025(
    sim: EmulatorState, org: Org, http: httpx.Client
) -> None:
    desktop = sim.store.add_app(
        display_name="Desktop",
        home_tenant_id=org.tenant.id,
        redirect_uris=["http://localhost"],
        public_client=True,
    )
    response = _token(
        http,
        org.tenant.id,
        grant_type="authorization_code",
        client_id=desktop.client_id,
        client_secret="anything",
        code="x",
        redirect_uri="http://localhost",
    )
    assert_aadsts(response, 400, "invalid_client", 700025)


def test_missing_secret_is_7000218(org: Org, http: httpx.Client) -> None:
    response = _token(
        http,
        org.tenant.id,
        grant_type="client_credentials",
        client_id=org.app.client_id,
        scope=f"{GRAPH}/.default",
    )
    body = assert_aadsts(response, 401, "invalid_client", 7000218)
    assert "'client_assertion' or 'client_secret'" in body["error_description"]


@pytest.mark.parametrize(
    ("data", "parameter"),
    [
        ({}, "grant_type"),
        ({"grant_type": "client_credentials"}, "client_id"),
        ({"grant_type": "authorization_code", "with_secret": "1"}, "code"),
        ({"grant_type": "refresh_token", "with_secret": "1"}, "refresh_token"),
        ({"grant_type": "client_credentials", "with_secret": "1"}, "scope"),
    ],
)
def test_missing_parameters_are_900144(
    org: Org, http: httpx.Client, data: dict[str, str], parameter: str
) -> None:
    form = dict(data)
    if form.pop("with_secret", None):
        form.update(client_id=org.app.client_id, client_secret=org.secret)
    body = assert_aadsts(_token(http, org.tenant.id, **form), 400, "invalid_request", 900144)
    assert f"parameter: '{parameter}'." in body["error_description"]


def test_malformed_bodies_never_500(org: Org, http: httpx.Client) -> None:
    url = f"/{org.tenant.id}/oauth2/v2.0/token"
    as_json = http.post(url, json={"grant_type": "client_credentials"})
    assert_aadsts(as_json, 400, "invalid_request", 900144)
    binary = http.post(
        url,
        content=b"\xff\xfe\x00grant_type=%ZZ&&=&client_id",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert binary.status_code == 400 and binary.json()["error_codes"]
    duplicate = http.post(
        url,
        content=b"grant_type=client_credentials&grant_type=refresh_token",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    body = assert_aadsts(duplicate, 400, "invalid_request", 9000411)
    assert "'grant_type' is duplicated" in body["error_description"]
    get = http.get(url)
    assert_aadsts(get, 400, "invalid_request", 900561)
    unknown = _token(http, org.tenant.id, grant_type="password")
    assert_aadsts(unknown, 400, "unsupported_grant_type", 70003)


def test_unknown_tenant_and_client(org: Org, http: httpx.Client) -> None:
    response = _token(http, "no-such-tenant.test", grant_type="client_credentials")
    body = assert_aadsts(response, 400, "invalid_request", 90002)
    assert "Tenant 'no-such-tenant.test' not found" in body["error_description"]
    response = _token(
        http,
        org.tenant.id,
        grant_type="client_credentials",
        client_id="11111111-2222-3333-4444-555555555555",
        client_secret="x",
        scope=f"{GRAPH}/.default",
    )
    assert_aadsts(response, 400, "unauthorized_client", 700016)


@pytest.mark.parametrize(
    ("tenant", "scope", "status", "error", "code"),
    [
        ("common", f"{GRAPH}/.default", 400, "invalid_request", 9001023),
        ("consumers", f"{GRAPH}/.default", 400, "invalid_request", 9001023),
        ("tenant", f"{GRAPH}/Mail.Read", 400, "invalid_scope", 1002012),
        (
            "tenant",
            f"{GRAPH}/.default https://outlook.office.com/.default",
            400,
            "invalid_scope",
            700022,
        ),
        ("tenant", "api://some-api/.default", 400, "invalid_resource", 500011),
    ],
)
def test_client_credentials_refusals(
    org: Org, http: httpx.Client, tenant: str, scope: str, status: int, error: str, code: int
) -> None:
    response = _token(
        http,
        org.tenant.id if tenant == "tenant" else tenant,
        grant_type="client_credentials",
        client_id=org.app.client_id,
        client_secret=org.secret,
        scope=scope,
    )
    assert_aadsts(response, status, error, code)


def test_client_credentials_in_a_tenant_without_service_principal(
    sim: EmulatorState, org: Org, msal_app: MsalFactory, http: httpx.Client
) -> None:
    other = make_org(sim, consent=False)  # a customer tenant that never consented to Postroom
    response = _token(
        http,
        other.tenant.id,
        grant_type="client_credentials",
        client_id=org.app.client_id,
        client_secret=org.secret,
        scope=f"{GRAPH}/.default",
    )
    body = assert_aadsts(response, 401, "invalid_client", 7000229)
    assert "missing service principal" in body["error_description"]
    # after the customer's admin consents, the same request works and carries the roles
    sim.store.grant_admin_consent(other.tenant, org.app)
    result = msal_app(tenant=other.tenant.id).acquire_token_for_client([f"{GRAPH}/.default"])
    assert claims(result["access_token"])["tid"] == other.tenant.id
    assert sorted(claims(result["access_token"])["roles"]) == sorted(
        org.app.application_permissions
    )


def test_token_for_unconsented_scope_via_code_is_65001(
    org: Org, browser: Browser, base_url: str, http: httpx.Client
) -> None:
    code = _code(browser, base_url, org)
    response = redeem(http, org, code, scope=f"{GRAPH}/Calendars.ReadWrite offline_access")
    body = assert_aadsts(response, 400, "invalid_grant", 65001)
    assert body["suberror"] == "consent_required"


def test_code_for_disabled_user_is_50057(
    org: Org, browser: Browser, base_url: str, http: httpx.Client
) -> None:
    code = _code(browser, base_url, org)
    org.alice.account_enabled = False
    body = assert_aadsts(redeem(http, org, code), 400, "invalid_grant", 50057)
    assert "suberror" not in body


def test_msal_redeeming_twice_sees_54005(org: Org, msal_app: MsalFactory, browser: Browser) -> None:
    app = msal_app()
    flow = app.initiate_auth_code_flow(
        [f"{GRAPH}/User.Read"], redirect_uri=REDIRECT_URI, response_mode="form_post"
    )
    arrival = browser.sign_in(flow["auth_uri"], org.bob.user_principal_name, org.bob.password)
    assert "access_token" in app.acquire_token_by_auth_code_flow(dict(flow), arrival.params)
    second = msal_app().acquire_token_by_auth_code_flow(dict(flow), arrival.params)
    assert second["error"] == "invalid_grant" and second["error_codes"] == [54005]


def test_sign_in_helper_matches_manual_flow(
    org: Org, msal_app: MsalFactory, browser: Browser
) -> None:
    result = sign_in_with_msal(msal_app(), browser, org.bob, [f"{GRAPH}/Mail.Send"])
    assert claims(result["access_token"])["scp"].split()[0] == "Mail.Send"
