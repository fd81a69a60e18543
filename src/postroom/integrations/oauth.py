"""Microsoft sign-in and consent through MSAL (the identity platform's own library).

:class:`MicrosoftIdentity` builds one ``ConfidentialClientApplication`` per use with the
configured authority host (``login.microsoftonline.com`` in production, m365sim in tests and
the demo) and an HTTP session that trusts exactly the configured CA bundle. MSAL is
synchronous; callers run it in a worker thread.

* personal: authorization code flow with PKCE, ``state`` and ``nonce`` (MSAL's
  ``initiate_auth_code_flow`` / ``acquire_token_by_auth_code_flow``); the serialized token cache
  is what Postroom keeps, encrypted.
* organization-wide, in two steps bound to one browser flow: first an OpenID Connect sign-in
  (authorization code + PKCE, :meth:`start_admin_sign_in`) whose id_token proves *which* tenant
  and that the person holds a directory role that may grant tenant-wide consent to Microsoft
  Graph application permissions (:func:`administrator_proof`); then the admin-consent URL with
  ``/.default`` for exactly that tenant. The consent redirect's ``tenant`` parameter is only
  compared with the proven one, never trusted, and a client-credentials token for the tenant
  confirms the consent (:meth:`confirm_tenant`).
"""

from __future__ import annotations

import re
import time
import warnings
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import msal
import requests

from postroom.settings import (
    CATEGORY_COLOUR_SCOPE,
    DELEGATED_SCOPES,
    MINIMAL_SCOPES,
    SHARED_SCOPES,
    Settings,
)

GRAPH = "https://graph.microsoft.com"
REAL_AUTHORITY_HOSTS = (
    "https://login.microsoftonline.com",
    "https://login.microsoftonline.us",
    "https://login.partner.microsoftonline.cn",
)


def delegated_scopes(*, shared: bool, minimal: bool, manage_colours: bool) -> list[str]:
    """Graph scopes for a personal connection (offline_access is added by MSAL)."""
    names = list(MINIMAL_SCOPES if minimal else DELEGATED_SCOPES)
    if shared:
        names += ["Mail.ReadWrite.Shared"] if minimal else SHARED_SCOPES
    if manage_colours:
        names = [n for n in names if n != "MailboxSettings.Read"] + [CATEGORY_COLOUR_SCOPE]
    return [f"{GRAPH}/{n}" for n in names]


def features_off(*, minimal: bool, manage_colours: bool) -> list[str]:
    """What the chosen permissions turn off, in plain words (shown before connecting)."""
    off = []
    if minimal:
        off.append("Forwarding emails (needs Mail.Send)")
        off.append(
            "Reading category colours from your Outlook master list (needs MailboxSettings.Read)"
        )
    if not manage_colours:
        off.append(
            "Creating coloured categories in Outlook for you (needs "
            "MailboxSettings.ReadWrite; you can add the colours in Outlook yourself)"
        )
    return off


# Directory role template ids (the id_token's ``wids`` claim) that may grant tenant-wide admin
# consent to Microsoft Graph *application* permissions, which an organization-wide connection
# asks for. Application and Cloud Application Administrators may consent to delegated
# permissions and other APIs' app roles, but not to Microsoft Graph app roles
# (learn.microsoft.com: "Grant tenant-wide admin consent to an application", prerequisites).
GLOBAL_ADMINISTRATOR = "62e90394-69f5-4237-9190-012177145e10"
PRIVILEGED_ROLE_ADMINISTRATOR = "e8611ab8-c189-46e8-94e1-60213ab1f814"
CONSENT_ROLES = frozenset({GLOBAL_ADMINISTRATOR, PRIVILEGED_ROLE_ADMINISTRATOR})
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass(frozen=True)
class AdministratorProof:
    """Who proved, by signing in, that they administer ``tenant_id``."""

    tenant_id: str
    oid: str
    username: str
    name: str


class NotProven(Exception):
    """The sign-in does not prove an administrator; ``code`` says why."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code  # "no_roles_claim" | "not_admin" | "bad_token"


def administrator_proof(claims: dict[str, Any]) -> AdministratorProof:
    """The administrator an id_token (from the token endpoint, checked by MSAL: audience,
    nonce, expiry) proves, or :class:`NotProven`.

    ``wids`` is only in tokens when the app registration's ``groupMembershipClaims`` is
    ``DirectoryRole`` or ``All``; without it nobody can be proven an administrator."""
    tenant_id = str(claims.get("tid") or "").lower()
    oid = str(claims.get("oid") or "")
    if not _GUID.match(tenant_id) or not oid:
        raise NotProven("bad_token")
    roles = claims.get("wids")
    if not isinstance(roles, list):
        raise NotProven("no_roles_claim")
    if not CONSENT_ROLES & {str(r).lower() for r in roles}:
        raise NotProven("not_admin")
    username = str(claims.get("preferred_username") or "")
    return AdministratorProof(
        tenant_id=tenant_id, oid=oid, username=username, name=str(claims.get("name") or username)
    )


@dataclass(frozen=True)
class TokenResult:
    ok: bool
    data: dict[str, Any]  # MSAL's result: tokens on success, error fields otherwise
    cache: str | None  # serialized cache when it changed

    @property
    def error(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in self.data.items()
            if k not in ("access_token", "refresh_token", "id_token")
        }


class MicrosoftIdentity:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.session = requests.Session()
        # The environment's CA variables would override ``verify``; trust only our setting.
        self.session.trust_env = False
        self.session.verify = str(settings.ca_bundle) if settings.ca_bundle else True

    @property
    def emulated(self) -> bool:
        return self.settings.authority_host not in REAL_AUTHORITY_HOSTS

    def _app(self, tenant: str, cache: msal.SerializableTokenCache | None = None) -> Any:
        if not self.settings.ms_client_id or self.settings.ms_client_secret is None:
            raise RuntimeError("Microsoft client id and secret are not configured")
        return msal.ConfidentialClientApplication(
            self.settings.ms_client_id,
            client_credential=self.settings.ms_client_secret.get_secret_value(),
            authority=f"{self.settings.authority_host}/{tenant}",
            instance_discovery=not self.emulated,
            http_client=self.session,
            token_cache=cache,
            timeout=30,
        )

    # ------------------------------------------------------------------ personal
    def start_sign_in(
        self, *, scopes: list[str], login_hint: str | None = None, prompt: str | None = None
    ) -> dict[str, Any]:
        """MSAL's auth-code flow (state, nonce, PKCE); keep it server-side until the callback."""
        app = self._app("organizations")
        # response_mode=query on purpose: the callback is a top-level GET, so the SameSite=Lax
        # session cookie comes along and the flow is checked against the Postroom user who
        # started it (a cross-site form_post would arrive without it and allow login CSRF:
        # someone else's mailbox attached to an attacker's workspace). MSAL warns about it.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="response_mode='form_post'")
            flow: dict[str, Any] = app.initiate_auth_code_flow(
                scopes,
                redirect_uri=self.settings.redirect_uri,
                login_hint=login_hint,
                prompt=prompt,
                response_mode="query",
            )
        return flow

    def start_admin_sign_in(self) -> dict[str, Any]:
        """An OpenID Connect sign-in (no Graph scope) that proves who administers which tenant;
        ``prompt=login``: the administrator signs in now, whatever session the browser has."""
        app = self._app("organizations")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="response_mode='form_post'")
            flow: dict[str, Any] = app.initiate_auth_code_flow(
                [],
                redirect_uri=self.settings.redirect_uri,
                prompt="login",
                response_mode="query",
            )
        return flow

    def finish_sign_in(self, flow: dict[str, Any], params: dict[str, str]) -> TokenResult:
        cache = msal.SerializableTokenCache()
        app = self._app("organizations", cache)
        try:
            result = app.acquire_token_by_auth_code_flow(flow, params)
        except ValueError as exc:  # state mismatch or a replayed flow
            return TokenResult(
                False, {"error": "invalid_state", "error_description": str(exc)}, None
            )
        ok = "access_token" in result
        return TokenResult(ok, dict(result), cache.serialize() if ok else None)

    def acquire_silent(
        self,
        *,
        cache_blob: str,
        tenant_id: str,
        account_oid: str,
        scopes: list[str],
        force_refresh: bool = False,
    ) -> TokenResult:
        cache = msal.SerializableTokenCache()
        cache.deserialize(cache_blob)
        app = self._app(tenant_id, cache)
        accounts = [
            a
            for a in app.get_accounts()
            if str(a.get("local_account_id")) == account_oid
            or str(a.get("home_account_id", "")).startswith(account_oid)
        ]
        if not accounts:
            return TokenResult(
                False, {"error": "no_account", "error_description": "no saved sign-in"}, None
            )
        result = app.acquire_token_silent_with_error(
            scopes, account=accounts[0], force_refresh=force_refresh
        )
        if result is None:
            return TokenResult(
                False, {"error": "no_account", "error_description": "no saved sign-in"}, None
            )
        ok = "access_token" in result
        return TokenResult(ok, dict(result), cache.serialize() if cache.has_state_changed else None)

    # ------------------------------------------------------------------ organization-wide
    def admin_consent_url(self, *, state: str, tenant_id: str) -> str:
        """Admin consent for exactly ``tenant_id`` (the proven one): Microsoft only lets that
        tenant's administrators answer it."""
        query = urlencode(
            {
                "client_id": self.settings.ms_client_id,
                "scope": f"{GRAPH}/.default",
                "redirect_uri": self.settings.admin_consent_redirect_uri,
                "state": state,
            }
        )
        return f"{self.settings.authority_host}/{tenant_id}/v2.0/adminconsent?{query}"

    def app_token(self, tenant_id: str) -> TokenResult:
        app = self._app(tenant_id)
        result = app.acquire_token_for_client([f"{GRAPH}/.default"])
        return TokenResult("access_token" in result, dict(result), None)

    def confirm_tenant(
        self, tenant_id: str, *, attempts: int = 4, delay: float = 1.5
    ) -> TokenResult:
        """A client-credentials token for the tenant proves the consent (retried briefly:
        fresh grants propagate slowly)."""
        result = self.app_token(tenant_id)
        for _ in range(attempts - 1):
            if result.ok or result.data.get("error") == "invalid_client":
                break
            time.sleep(delay)
            result = self.app_token(tenant_id)
        return result
