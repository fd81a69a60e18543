"""Error bodies exactly as Microsoft writes them.

Two families:

* Graph's OData envelope: ``{"error": {"code", "message", "innerError": {"date",
  "request-id", "client-request-id"}}}``. Raise :class:`GraphError` anywhere in a Graph handler;
  the dispatcher turns it into the envelope with the right status. Nothing else escapes as a 500.
* The identity platform's token-endpoint body: ``error``, ``error_description`` (with the AADSTS
  code, trace and correlation ids and timestamp), ``error_codes``, ``timestamp``, ``trace_id``,
  ``correlation_id``, ``error_uri`` and, where Entra sends one, ``suberror``. See
  :func:`identity_error_body` and the catalogue :data:`AADSTS`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class GraphError(Exception):
    """A Graph failure with its HTTP status and Exchange/Graph error code."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        inner: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.inner = inner or {}


def graph_error_body(
    code: str,
    message: str,
    *,
    now: datetime,
    request_id: str,
    client_request_id: str | None = None,
    inner: dict[str, Any] | None = None,
) -> dict[str, Any]:
    inner_error: dict[str, Any] = {
        "date": now.strftime("%Y-%m-%dT%H:%M:%S"),
        "request-id": request_id,
        "client-request-id": client_request_id or request_id,
    }
    if inner:
        inner_error.update(inner)
    return {"error": {"code": code, "message": message, "innerError": inner_error}}


# Common Graph errors, named once so handlers read like the docs.
def item_not_found() -> GraphError:
    return GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")


def invalid_id() -> GraphError:
    return GraphError(400, "ErrorInvalidIdMalformed", "Id is malformed.")


def access_denied() -> GraphError:
    return GraphError(
        403, "ErrorAccessDenied", "Access is denied. Check credentials and try again."
    )


def policy_denied() -> GraphError:
    """An application access policy (or RBAC for Applications) excludes the mailbox."""
    return GraphError(403, "ErrorAccessDenied", "Access to OData is disabled.")


def bad_request(message: str, code: str = "BadRequest") -> GraphError:
    return GraphError(400, code, message)


def invalid_request(message: str) -> GraphError:
    return GraphError(400, "ErrorInvalidRequest", message)


def unauthenticated(message: str) -> GraphError:
    return GraphError(401, "InvalidAuthenticationToken", message)


@dataclass(frozen=True)
class AadstsError:
    """One entry of Entra's error catalogue, as the token endpoint reports it."""

    code: int
    error: str
    description: str
    suberror: str | None = None
    status: int = 400


AADSTS: dict[str, AadstsError] = {
    "sessions_revoked": AadstsError(
        50173,
        "invalid_grant",
        "The provided grant has expired due to it being revoked, a fresh auth token is needed. "
        "The user might have changed or reset their password. The grant was issued on "
        "'{issued}' and the TokensValidFrom date (before which tokens are not valid) for this "
        "user is '{valid_from}'.",
        "bad_token",
    ),
    "refresh_token_inactive": AadstsError(
        700082,
        "invalid_grant",
        "The refresh token has expired due to inactivity. The token was issued on '{issued}' "
        "and was inactive for {inactive_days} days.",
        "bad_token",
    ),
    "mfa_required": AadstsError(
        50076,
        "invalid_grant",
        "Due to a configuration change made by your administrator, or because you moved to a "
        "new location, you must use multi-factor authentication to access '{resource}'.",
        "basic_action",
    ),
    "consent_revoked": AadstsError(
        65001,
        "invalid_grant",
        "The user or administrator has not consented to use the application with ID "
        "'{client_id}' named '{app_name}'. Send an interactive authorization request for this "
        "user and resource.",
        "consent_required",
    ),
    "admin_consent_required": AadstsError(
        90094,
        "invalid_grant",
        "Admin consent is required for the permissions requested by this application. An "
        "admin consent request may be sent to the admin.",
        "consent_required",
    ),
    "app_consent_missing": AadstsError(
        65001,
        "invalid_grant",
        "The user or administrator has not consented to use the application with ID "
        "'{client_id}' named '{app_name}'. Send an interactive authorization request for this "
        "user and resource.",
        "consent_required",
    ),
    "user_disabled": AadstsError(
        50057, "invalid_grant", "The user account is disabled. The account has been disabled."
    ),
    "invalid_client_secret": AadstsError(
        7000215,
        "invalid_client",
        "Invalid client secret provided. Ensure the secret being sent in the request is the "
        "client secret value, not the client secret ID, for a secret added to app "
        "'{client_id}'.",
        status=401,
    ),
    "client_secret_expired": AadstsError(
        7000222,
        "invalid_client",
        "The provided client secret keys for app '{client_id}' are expired. Visit the Azure "
        "portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider "
        "using certificate credentials for added security: https://aka.ms/certCreds.",
        status=401,
    ),
    "code_reused": AadstsError(
        54005,
        "invalid_grant",
        "OAuth2 Authorization code was already redeemed, please retry with a new valid code "
        "or use an existing refresh token.",
    ),
    "code_invalid": AadstsError(
        70008,
        "invalid_grant",
        "The provided authorization code or refresh token has expired due to inactivity. "
        "Send a new interactive authorization request for this user and resource.",
    ),
    "pkce_mismatch": AadstsError(
        501481,
        "invalid_grant",
        "The Code_Verifier does not match the code_challenge supplied "
        "in the authorization request.",
    ),
    "redirect_uri_mismatch": AadstsError(
        50011,
        "invalid_client",
        "The redirect URI '{redirect_uri}' specified in the request does not match the "
        "redirect URIs configured for the application '{client_id}'.",
    ),
    "app_not_found": AadstsError(
        700016,
        "unauthorized_client",
        "Application with identifier '{client_id}' was not found in the directory '{tenant}'. "
        "This can happen if the application has not been installed by the administrator of the "
        "tenant or consented to by any user in the tenant.",
    ),
    "tenant_not_found": AadstsError(
        90002,
        "invalid_request",
        "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are "
        "signing into the correct cloud.",
    ),
    "unsupported_grant_type": AadstsError(
        70003, "unsupported_grant_type", "The app requested an unsupported grant type '{grant}'."
    ),
    "common_client_credentials": AadstsError(
        9001023,
        "invalid_request",
        "The grant type isn't supported over the /common or /consumers endpoints. Please use "
        "the /organizations or tenant-specific endpoint.",
    ),
    "default_scope_required": AadstsError(
        1002012,
        "invalid_scope",
        "The provided value for scope {scope} is not valid. Client credential flows must have a "
        "scope value with /.default suffixed to the resource identifier (application ID URI).",
    ),
    "missing_parameter": AadstsError(
        900144,
        "invalid_request",
        "The request body must contain the following parameter: '{parameter}'.",
    ),
    "invalid_refresh_token": AadstsError(
        9002313, "invalid_grant", "Invalid request. Request is malformed or invalid."
    ),
    "public_client_secret": AadstsError(
        700025,
        "invalid_client",
        "Client is public so neither 'client_assertion' nor 'client_secret' should be presented.",
    ),
    "password_expired": AadstsError(
        50055, "invalid_grant", "The password is expired.", "user_password_expired"
    ),
    # ---- added for the identity platform (identity/token.py, identity/discovery.py)
    "invalid_tenant": AadstsError(
        90002,
        "invalid_tenant",
        "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are "
        "signing into the correct cloud. Check with your subscription administrator, this may "
        "happen if there are no active subscriptions for the tenant.",
    ),
    "client_secret_missing": AadstsError(
        7000218,
        "invalid_client",
        "The request body must contain the following parameter: 'client_assertion' or "
        "'client_secret'.",
        status=401,
    ),
    "client_assertion_invalid": AadstsError(
        700027,
        "invalid_client",
        "Client assertion failed signature validation.",
        status=401,
    ),
    "app_disabled": AadstsError(
        7000112,
        "unauthorized_client",
        "Application '{client_id}'({app_name}) is disabled.",
    ),
    "missing_service_principal": AadstsError(
        7000229,
        "invalid_client",
        "The client application {client_id} is missing service principal in the tenant "
        "{tenant}. See instructions here: https://go.microsoft.com/fwlink/?linkid=2225119",
        status=401,
    ),
    "duplicate_parameter": AadstsError(
        9000411,
        "invalid_request",
        "The request is not properly formatted. The parameter '{parameter}' is duplicated.",
    ),
    "code_wrong_tenant": AadstsError(
        700005,
        "invalid_grant",
        "Provided Authorization Code is intended to use against other tenant, thus rejected.",
    ),
    "reply_address_mismatch": AadstsError(
        500112,
        "invalid_grant",
        "The reply address '{redirect_uri}' does not match the reply address '{expected}' "
        "provided when requesting Authorization code.",
    ),
    "multiple_resources": AadstsError(
        700022,
        "invalid_scope",
        "The provided value for the input parameter scope is not valid because it contains "
        "more than one resource. Scope {scope} is not valid.",
    ),
    "resource_not_found": AadstsError(
        500011,
        "invalid_resource",
        "The resource principal named {resource} was not found in the tenant named {tenant}. "
        "This can happen if the application has not been installed by the administrator of the "
        "tenant or consented to by any user in the tenant. You might have sent your "
        "authentication request to the wrong tenant.",
    ),
    "invalid_scope": AadstsError(
        70011,
        "invalid_scope",
        "The provided value for the input parameter 'scope' is not valid. The scope {scope} is "
        "not valid.",
    ),
    "post_only": AadstsError(
        900561,
        "invalid_request",
        "The endpoint only accepts POST, OPTIONS requests. Received a {method} request.",
    ),
    "malformed_request": AadstsError(
        90004, "invalid_request", "The request is not properly formatted."
    ),
    "invalid_instance": AadstsError(50049, "invalid_instance", "Unknown or invalid instance."),
    "malformed_discovery": AadstsError(50050, "invalid_request", "The request is malformed."),
}


@dataclass
class IdentityError(Exception):
    """An identity-platform error to render as the token endpoint's JSON body."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    suberror: str | None = None  # overrides the catalogue's, when a scenario configures one

    @property
    def entry(self) -> AadstsError:
        return AADSTS[self.kind]


def identity_error_body(err: IdentityError, *, now: datetime) -> dict[str, Any]:
    entry = err.entry
    trace_id = str(uuid.uuid4())
    correlation_id = str(uuid.uuid4())
    timestamp = now.strftime("%Y-%m-%d %H:%M:%SZ")
    text = entry.description.format_map(_Defaults(err.params))
    description = (
        f"AADSTS{entry.code}: {text}\r\nTrace ID: {trace_id}\r\n"
        f"Correlation ID: {correlation_id}\r\nTimestamp: {timestamp}"
    )
    body: dict[str, Any] = {
        "error": entry.error,
        "error_description": description,
        "error_codes": [entry.code],
        "timestamp": timestamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": f"https://login.microsoftonline.com/error?code={entry.code}",
    }
    suberror = err.suberror if err.suberror is not None else entry.suberror
    if suberror:
        body["suberror"] = suberror
    return body


class _Defaults(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return ""
