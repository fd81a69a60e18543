"""Admin consent over HTTPS, both endpoints: success and cancel redirects, non-administrators,
and the client-credentials token that proves the consent took effect (graph.md 1.7)."""

from __future__ import annotations

import urllib.parse

import httpx
import pytest

from m365sim.state import EmulatorState
from tests.helpers import REDIRECT_URI, Org, make_org
from tests.identity.browser import Browser
from tests.identity.flows import GRAPH, claims


def _v2(base_url: str, tenant: str, client_id: str, **extra: str) -> str:
    query = {
        "client_id": client_id,
        "scope": f"{GRAPH}/.default",
        "redirect_uri": REDIRECT_URI,
        "state": "adm-1",
    }
    query.update(extra)
    return f"{base_url}/{tenant}/v2.0/adminconsent?" + urllib.parse.urlencode(query)


def _legacy(base_url: str, tenant: str, client_id: str) -> str:
    query = {"client_id": client_id, "redirect_uri": REDIRECT_URI, "state": "adm-2"}
    return f"{base_url}/{tenant}/adminconsent?" + urllib.parse.urlencode(query)


def _app_token(http: httpx.Client, tenant_id: str, org: Org) -> httpx.Response:
    return http.post(
        f"/{tenant_id}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": org.app.client_id,
            "client_secret": org.secret,
            "scope": f"{GRAPH}/.default",
        },
    )


@pytest.fixture
def customer(sim: EmulatorState) -> Org:
    """A second organization that has never consented to the first one's app."""
    return make_org(sim, consent=False)


def test_v2_admin_consent_success_then_app_token(
    org: Org, customer: Org, browser: Browser, base_url: str, http: httpx.Client
) -> None:
    assert _app_token(http, customer.tenant.id, org).status_code == 401  # no service principal
    page = browser.open(_v2(base_url, "organizations", org.app.client_id))
    assert page.heading == "Sign in"
    screen = browser.submit(page, login=customer.admin.user_principal_name, passwd="admin-pass")
    assert screen.heading == "Permissions requested"
    assert "Accept for your organization" in screen.html
    assert "(Mail.ReadWrite, application)" in screen.html
    assert "(Mail.ReadWrite, delegated)" in screen.html
    done = browser.submit(screen, button=("action", "accept"))
    assert done.status == 302
    location = done.location or ""
    assert location.startswith(REDIRECT_URI + "?admin_consent=True&tenant=")
    params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
    assert params == {
        "admin_consent": "True",
        "tenant": customer.tenant.id,
        "state": "adm-1",
        "scope": f"{GRAPH}/.default",
    }
    token = _app_token(http, customer.tenant.id, org)
    assert token.status_code == 200
    assert sorted(claims(token.json()["access_token"])["roles"]) == sorted(
        org.app.application_permissions
    )


def test_v2_admin_consent_cancel(org: Org, customer: Org, browser: Browser, base_url: str) -> None:
    arrival = browser.sign_in(
        _v2(base_url, customer.tenant.id, org.app.client_id),
        customer.admin.user_principal_name,
        "admin-pass",
        consent="cancel",
    )
    assert arrival.params["error"] == "access_denied"
    assert arrival.params["error_subcode"] == "cancel"
    assert arrival.params["error_description"].startswith("AADSTS65004: ")
    assert arrival.params["state"] == "adm-1"
    assert arrival.params["admin_consent"] == "True"
    assert list(arrival.params)[-1] == "admin_consent"
    assert org.app.client_id not in customer.tenant.app_role_grants


def test_v2_admin_consent_by_non_admin(
    org: Org, customer: Org, browser: Browser, base_url: str
) -> None:
    arrival = browser.sign_in(
        _v2(base_url, customer.tenant.id, org.app.client_id),
        customer.bob.user_principal_name,
        "bob-pass",
    )
    assert arrival.params["admin_consent"] == "True"
    assert arrival.params["error"] == "consent_required"
    assert arrival.params["error_description"].startswith("AADSTS90094: ")
    assert arrival.params["state"] == "adm-1"


def test_v2_admin_consent_explicit_scopes_are_delegated_only(
    org: Org, customer: Org, browser: Browser, base_url: str
) -> None:
    url = _v2(base_url, customer.tenant.id, org.app.client_id, scope=f"{GRAPH}/Mail.Read")
    arrival = browser.sign_in(url, customer.admin.user_principal_name, "admin-pass")
    assert arrival.params["admin_consent"] == "True"
    assert customer.tenant.admin_delegated_grants[org.app.client_id] == {"Mail.Read"}
    assert customer.tenant.app_role_grants.get(org.app.client_id, set()) == set()


def test_v2_admin_consent_request_errors(
    org: Org, customer: Org, browser: Browser, base_url: str
) -> None:
    common = browser.open(_v2(base_url, "common", org.app.client_id))
    assert common.status == 400 and "AADSTS90130" in common.html and common.location is None
    unregistered = browser.open(
        _v2(base_url, customer.tenant.id, org.app.client_id, redirect_uri="https://evil.test/")
    )
    assert unregistered.status == 400 and unregistered.location is None
    no_scope = Browser.arrival(
        browser.open(_v2(base_url, customer.tenant.id, org.app.client_id, scope=""))
    )
    assert no_scope is not None
    assert no_scope.params["error"] == "invalid_request"
    assert no_scope.params["error_description"].startswith("AADSTS900144: ")


def test_legacy_admin_consent_success_and_cancel(
    org: Org, customer: Org, browser: Browser, base_url: str, http: httpx.Client
) -> None:
    cancel = browser.sign_in(
        _legacy(base_url, customer.tenant.domain, org.app.client_id),
        customer.admin.user_principal_name,
        "admin-pass",
        consent="cancel",
    )
    assert cancel.params == {
        "error": "permission_denied",
        "error_description": "The admin canceled the request",
    }
    assert "error=permission_denied&error_description=The+admin+canceled+the+request" in (
        cancel.url
    )
    success = browser.sign_in(
        _legacy(base_url, customer.tenant.id, org.app.client_id),
        customer.admin.user_principal_name,
        "admin-pass",
    )
    assert success.params == {
        "admin_consent": "True",
        "tenant": customer.tenant.id,
        "state": "adm-2",
    }
    assert _app_token(http, customer.tenant.id, org).status_code == 200
