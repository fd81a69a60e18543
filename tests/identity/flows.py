"""Shared steps of the identity tests: sign in through MSAL, raw authorize URLs, token calls."""

from __future__ import annotations

import base64
import hashlib
import secrets
import urllib.parse
from typing import Any

import httpx
import jwt

from tests.helpers import REDIRECT_URI, Org
from tests.identity.browser import Browser

GRAPH = "https://graph.microsoft.com"
MAIL_SCOPES = [f"{GRAPH}/Mail.ReadWrite", f"{GRAPH}/User.Read"]


def claims(token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return decoded


def sign_in_with_msal(
    app: Any,
    browser: Browser,
    user: Any,
    scopes: list[str] | None = None,
    *,
    password: str | None = None,
    redirect_uri: str = REDIRECT_URI,
    **kw: Any,
) -> dict[str, Any]:
    """MSAL's auth code flow (form_post, as MSAL recommends) with the browser in the middle."""
    flow = app.initiate_auth_code_flow(
        scopes or MAIL_SCOPES, redirect_uri=redirect_uri, response_mode="form_post"
    )
    arrival = browser.sign_in(
        flow["auth_uri"], user.user_principal_name, password or user.password, **kw
    )
    assert arrival.via == "form_post"
    result: dict[str, Any] = app.acquire_token_by_auth_code_flow(flow, arrival.params)
    return result


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)[:64]
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.decode().rstrip("=")


def authorize_url(
    base_url: str,
    org: Org,
    *,
    tenant: str | None = None,
    scope: str = f"openid profile offline_access {GRAPH}/Mail.ReadWrite",
    **params: str,
) -> str:
    query = {
        "client_id": org.app.client_id,
        "response_type": "code",
        "redirect_uri": REDIRECT_URI,
        "scope": scope,
        "state": "st-123",
        "nonce": "n-456",
    }
    query.update(params)
    return f"{base_url}/{tenant or org.tenant.id}/oauth2/v2.0/authorize?" + urllib.parse.urlencode(
        query
    )


def redeem(
    http: httpx.Client,
    org: Org,
    code: str,
    *,
    verifier: str | None = None,
    tenant: str | None = None,
    **extra: str,
) -> httpx.Response:
    data = {
        "grant_type": "authorization_code",
        "client_id": org.app.client_id,
        "client_secret": org.secret,
        "code": code,
        "redirect_uri": REDIRECT_URI,
    }
    if verifier is not None:
        data["code_verifier"] = verifier
    data.update(extra)
    return http.post(f"/{tenant or org.tenant.id}/oauth2/v2.0/token", data=data)


def assert_aadsts(response: httpx.Response, status: int, error: str, code: int) -> dict[str, Any]:
    """Entra's token-endpoint error body, exactly shaped."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] == error, body
    assert body["error_codes"] == [code], body
    assert body["error_description"].startswith(f"AADSTS{code}: ")
    assert "\r\nTrace ID: " in body["error_description"]
    assert "\r\nCorrelation ID: " in body["error_description"]
    assert body["trace_id"] and body["correlation_id"] and body["timestamp"]
    assert body["error_uri"] == f"https://login.microsoftonline.com/error?code={code}"
    return body
