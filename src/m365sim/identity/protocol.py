"""Shared machinery of the identity platform: authorities, request parsing, flows, sessions.

Authorities (graph.md 1.1)
  The first path segment names the authority: a tenant GUID or verified domain (resolved to the
  tenant; discovery documents always answer with the GUID), or ``common`` / ``organizations`` /
  ``consumers``. :func:`resolve_authority` turns it into an :class:`Authority`; an unknown
  tenant is AADSTS90002.

Form bodies
  The token endpoint and the pages read ``application/x-www-form-urlencoded`` bodies with
  :func:`parse_form`, which never raises anything but :class:`FormError` (a malformed body is a
  protocol error, never a 500). Entra refuses a parameter given twice (AADSTS9000411).

Interactive state
  Between the sign-in, MFA, password-update, consent and admin-consent pages the emulator keeps
  an :class:`AuthFlow` server-side, keyed by a random id that travels in a hidden form field with
  a second random ``csrf`` value; the flow is also bound to the browser by the ``m365sim_browser``
  cookie, so a form posted from another browser (cross-site request forgery) is refused. A
  successful sign-in creates an :class:`SsoSession` (the ``m365sim_sso`` cookie, Entra's
  ``ESTSAUTH``), which later authorize requests reuse (``prompt=none``, single sign-on) until
  the user signs out, is disabled, or an administrator revokes sessions.

Redirect-borne errors
  Errors that go back to the application (``?error=...&error_description=...``) and the error
  pages shown instead of redirecting to an unregistered URI use :data:`FLOW_ERRORS`; the
  description carries the AADSTS code, trace and correlation ids and timestamp as Entra writes
  them.
"""

from __future__ import annotations

import secrets
import urllib.parse
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from starlette.requests import Request

from m365sim.errors import AadstsError
from m365sim.identity.permissions import Scopes
from m365sim.state import EmulatorState
from m365sim.store import App, Store, Tenant

SPECIAL_AUTHORITIES = ("common", "organizations", "consumers")
# The tenant of personal Microsoft accounts (graph.md 1.3); the emulator has none of them.
MSA_TENANT_ID = "9188040d-6c67-4c5b-b112-36a304b66dad"

BROWSER_COOKIE = "m365sim_browser"
SSO_COOKIE = "m365sim_sso"
FLOW_LIFETIME = 3600.0  # seconds a half-finished sign-in stays usable
MAX_FORM_BYTES = 1_000_000

FlowKind = Literal["authorize", "adminconsent", "adminconsent_legacy"]


@dataclass(frozen=True)
class Authority:
    segment: str  # "common" | "organizations" | "consumers" | a tenant GUID
    tenant: Tenant | None  # set for tenant-specific authorities

    @property
    def special(self) -> bool:
        return self.tenant is None


def resolve_authority(store: Store, segment: str) -> Authority | None:
    low = segment.lower()
    if low in SPECIAL_AUTHORITIES:
        return Authority(low, None)
    tenant = store.tenant(segment)
    if tenant is None:
        return None
    return Authority(tenant.id, tenant)


# ------------------------------------------------------------------------- form bodies
class FormError(Exception):
    def __init__(self, kind: str, parameter: str = "") -> None:
        super().__init__(kind)
        self.kind = kind  # "duplicate_parameter" | "malformed_request"
        self.parameter = parameter


def parse_form(
    content_type: str | None, body: bytes, *, reject_duplicates: bool = True
) -> dict[str, str]:
    """An url-encoded body as a dict. Other content types read as empty (Entra then reports
    the first missing parameter)."""
    if len(body) > MAX_FORM_BYTES:
        raise FormError("malformed_request")
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != "application/x-www-form-urlencoded" or not body:
        return {}
    text = body.decode("utf-8", errors="replace")
    return parse_pairs(text, reject_duplicates=reject_duplicates)


def parse_pairs(text: str, *, reject_duplicates: bool = True) -> dict[str, str]:
    try:
        pairs = urllib.parse.parse_qsl(
            text, keep_blank_values=True, errors="replace", max_num_fields=500
        )
    except ValueError as exc:
        raise FormError("malformed_request") from exc
    out: dict[str, str] = {}
    for name, value in pairs:
        if name in out and reject_duplicates:
            raise FormError("duplicate_parameter", name)
        out[name] = value
    return out


async def request_params(request: Request) -> dict[str, str]:
    """Authorize-style parameters: the query string, plus the form body of a POST."""
    params = dict(request.query_params)
    if request.method == "POST":
        body = await request.body()
        params.update(
            parse_form(request.headers.get("content-type"), body, reject_duplicates=False)
        )
    return params


# ------------------------------------------------------------------------- flows, sessions
@dataclass
class AuthFlow:
    """One interactive sign-in in progress (authorize or admin consent)."""

    id: str
    csrf: str
    browser: str
    kind: FlowKind
    authority: str  # the resolved authority segment the request came to
    tenant_id: str | None  # tenant-specific authority
    client_id: str
    redirect_uri: str
    response_mode: str
    state: str | None
    scopes: Scopes
    scope_param: str
    created: float
    nonce: str | None = None
    code_challenge: str | None = None
    code_challenge_method: str = "plain"
    prompt: str | None = None
    login_hint: str = ""
    client_info: bool = False
    user_id: str | None = None
    mfa_done: bool = False
    session_id: str | None = None


@dataclass
class SsoSession:
    """A signed-in browser (Entra's ``ESTSAUTH`` cookie)."""

    id: str
    browser: str
    tenant_id: str
    user_id: str
    auth_time: float
    mfa_done: bool


@dataclass
class CodeMeta:
    """What the token endpoint needs about a code beyond :class:`~m365sim.store.AuthCode`."""

    authority: str
    session_id: str


@dataclass
class IdentityState:
    flows: dict[str, AuthFlow] = field(default_factory=dict)
    sessions: dict[str, SsoSession] = field(default_factory=dict)
    codes: dict[str, CodeMeta] = field(default_factory=dict)

    def prune(self, now: float) -> None:
        if len(self.flows) > 2000:
            for key in [k for k, f in self.flows.items() if now - f.created > FLOW_LIFETIME]:
                del self.flows[key]

    def session_for(self, store: Store, session_id: str | None, now: float) -> SsoSession | None:
        """The live session behind a cookie value, or None (revoked, disabled, expired)."""
        if not session_id:
            return None
        session = self.sessions.get(session_id)
        if session is None:
            return None
        found = store.user_by_id(session.user_id)
        if found is None:
            return None
        user = found[1]
        if (
            not user.account_enabled
            or user.password_expired
            or session.auth_time < user.tokens_valid_from
        ):
            return None
        return session

    def end_sessions(self, user_id: str, *, keep: str | None = None) -> None:
        for key in [k for k, s in self.sessions.items() if s.user_id == user_id and k != keep]:
            del self.sessions[key]


def identity_state(state: EmulatorState) -> IdentityState:
    found = state.extensions.get("identity")
    if not isinstance(found, IdentityState):
        found = IdentityState()
        state.extensions["identity"] = found
    return found


def new_id(n: int = 24) -> str:
    return secrets.token_urlsafe(n)


# ------------------------------------------------------------------------- errors
FLOW_ERRORS: dict[str, AadstsError] = {
    "missing_parameter": AadstsError(
        900144,
        "invalid_request",
        "The request body must contain the following parameter: '{parameter}'.",
    ),
    "tenant_not_found": AadstsError(
        90002,
        "invalid_request",
        "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are "
        "signing into the correct cloud. Check with your subscription administrator, this may "
        "happen if there are no active subscriptions for the tenant.",
    ),
    "app_not_found": AadstsError(
        700016,
        "unauthorized_client",
        "Application with identifier '{client_id}' was not found in the directory '{tenant}'. "
        "This can happen if the application has not been installed by the administrator of the "
        "tenant or consented to by any user in the tenant. You may have sent your "
        "authentication request to the wrong tenant.",
    ),
    "single_tenant_common": AadstsError(
        50194,
        "invalid_request",
        "Application '{client_id}'({app_name}) is not configured as a multi-tenant application. "
        "Usage of the /common endpoint is not supported for such applications created after "
        "'10/15/2018'. Use a tenant-specific endpoint or configure the application to be "
        "multi-tenant.",
    ),
    "app_disabled": AadstsError(
        7000112, "unauthorized_client", "Application '{client_id}'({app_name}) is disabled."
    ),
    "redirect_uri_mismatch": AadstsError(
        50011,
        "invalid_request",
        "The redirect URI '{redirect_uri}' specified in the request does not match the redirect "
        "URIs configured for the application '{client_id}'. Make sure the redirect URI sent in "
        "the request matches one added to your application in the Azure portal. Navigate to "
        "https://aka.ms/redirectUriMismatchError to learn more about how to fix this.",
    ),
    "no_reply_address": AadstsError(
        500113, "invalid_request", "No reply address is registered for the application."
    ),
    "unsupported_response_type": AadstsError(
        700054,
        "unsupported_response_type",
        "response_type '{response_type}' is not enabled for the application.",
    ),
    "unsupported_response_mode": AadstsError(
        70007,
        "invalid_request",
        "The application returned an unsupported value of 'response_mode' when requesting a token.",
    ),
    "invalid_parameter": AadstsError(
        90100, "invalid_request", "{parameter} parameter is empty or not valid."
    ),
    "code_challenge_size": AadstsError(
        501491, "invalid_request", "Invalid size of Code_Challenge parameter."
    ),
    "scope_not_on_resource": AadstsError(
        650053,
        "invalid_client",
        "The application '{app_name}' asked for scope '{scope}' that doesn't exist on the "
        "resource '00000003-0000-0000-c000-000000000000'. Contact the app vendor.",
    ),
    "resource_not_found": AadstsError(
        500011,
        "invalid_resource",
        "The resource principal named {resource} was not found in the tenant named {tenant}. "
        "This can happen if the application has not been installed by the administrator of the "
        "tenant or consented to by any user in the tenant. You might have sent your "
        "authentication request to the wrong tenant.",
    ),
    "login_required": AadstsError(
        50058,
        "login_required",
        "A silent sign-in request was sent but no user is signed in. The cookies used to "
        "represent the user's session were not sent in the request to Azure AD. This can happen "
        "if the user is using Internet Explorer or Edge, and the web app sending the silent "
        "sign-in request is in different IE security zone than the Azure AD endpoint "
        "(login.microsoftonline.com).",
    ),
    "mfa_interaction_required": AadstsError(
        50076,
        "interaction_required",
        "Due to a configuration change made by your administrator, or because you moved to a "
        "new location, you must use multi-factor authentication to access "
        "'00000003-0000-0000-c000-000000000000'.",
    ),
    "password_expired_interaction": AadstsError(
        50055, "interaction_required", "The password is expired."
    ),
    "consent_required": AadstsError(
        65001,
        "consent_required",
        "The user or administrator has not consented to use the application with ID "
        "'{client_id}' named '{app_name}'. Send an interactive authorization request for this "
        "user and resource.",
    ),
    "user_declined": AadstsError(
        65004, "access_denied", "User declined to consent to access the app."
    ),
    "admin_declined": AadstsError(
        65004,
        "access_denied",
        "The resource owner or authorization server denied the request.",
    ),
    "admin_consent_required": AadstsError(
        90094,
        "consent_required",
        "Admin consent is required for the permissions requested by this application. An "
        "admin consent request may be sent to the admin.",
    ),
    "user_not_in_tenant": AadstsError(
        50020,
        "invalid_request",
        "User account '{username}' from identity provider "
        "'https://sts.windows.net/{home_tenant}/' does not exist in tenant '{tenant}' and "
        "cannot access the application '{client_id}'({app_name}) in that tenant. The account "
        "needs to be added as an external user in the tenant first. Sign out and sign in again "
        "with a different Azure Active Directory user account.",
    ),
    "user_disabled": AadstsError(50057, "invalid_request", "The user account is disabled."),
    "common_not_supported": AadstsError(
        90130,
        "invalid_request",
        "Application '{client_id}'({app_name}) is not supported over the /common or /consumers "
        "endpoints. Please use the /organizations or tenant-specific endpoint.",
    ),
    "flow_expired": AadstsError(
        50089, "invalid_request", "Authentication failed due to flow token expired."
    ),
    "invalid_flow_request": AadstsError(
        90023,
        "invalid_request",
        "The authentication service request is not valid: the form was not posted from the "
        "browser that started the sign-in.",
    ),
    "duplicate_parameter": AadstsError(
        9000411,
        "invalid_request",
        "The request is not properly formatted. The parameter '{parameter}' is duplicated.",
    ),
    "malformed_request": AadstsError(
        90004, "invalid_request", "The request is not properly formatted."
    ),
    "signout_invalid": AadstsError(
        50061, "invalid_request", "Unable to complete sign out. The request was invalid."
    ),
}


class _Defaults(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return ""


@dataclass(frozen=True)
class FlowFailure:
    """A rendered flow error: for a redirect or an error page."""

    entry: AadstsError
    text: str  # message without code
    trace_id: str
    correlation_id: str
    timestamp: str

    @property
    def error(self) -> str:
        return self.entry.error

    @property
    def description(self) -> str:
        return (
            f"AADSTS{self.entry.code}: {self.text}\r\nTrace ID: {self.trace_id}\r\n"
            f"Correlation ID: {self.correlation_id}\r\nTimestamp: {self.timestamp}"
        )


def flow_failure(kind: str, now: datetime, **params: Any) -> FlowFailure:
    entry = FLOW_ERRORS[kind]
    return FlowFailure(
        entry=entry,
        text=entry.description.format_map(_Defaults(params)),
        trace_id=str(uuid.uuid4()),
        correlation_id=str(uuid.uuid4()),
        timestamp=now.strftime("%Y-%m-%d %H:%M:%SZ"),
    )


# ------------------------------------------------------------------------- redirects
def with_params(uri: str, params: list[tuple[str, str]], *, fragment: bool = False) -> str:
    """``uri`` with ``params`` added to its query (or as its fragment), keeping what it has."""
    parts = urllib.parse.urlsplit(uri)
    encoded = urllib.parse.urlencode(params)
    if fragment:
        return urllib.parse.urlunsplit(
            (parts.scheme, parts.netloc, parts.path, parts.query, encoded)
        )
    query = f"{parts.query}&{encoded}" if parts.query else encoded
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def redirect_uri_registered(app: App, uri: str) -> bool:
    """Exact match, as Entra requires (scheme, host, path, case of the path, trailing slash).
    Entra ignores the port of ``http://localhost`` redirect URIs; so does the emulator."""
    if uri in app.redirect_uris:
        return True
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme == "http" and parts.hostname in ("localhost", "127.0.0.1"):
        for registered in app.redirect_uris:
            reg = urllib.parse.urlsplit(registered)
            if (
                reg.scheme == "http"
                and reg.hostname == parts.hostname
                and reg.path == parts.path
                and reg.query == parts.query
            ):
                return True
    return False
