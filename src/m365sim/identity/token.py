"""``POST /{tenant}/oauth2/v2.0/token``: authorization codes, refresh tokens, client credentials.

Request handling, in Entra's order:

1. the authority (unknown tenant → AADSTS90002), a form body (anything else reads as empty; a
   parameter given twice → 9000411), ``grant_type`` (missing → 900144, unknown → 70003);
2. client authentication (graph.md 1.2): ``client_id`` in the body or HTTP Basic; unknown app
   → 700016, disabled → 7000112; confidential apps need ``client_secret`` (body or Basic) —
   missing → 7000218, wrong → 7000215, every matching secret expired → 7000222; a public client
   presenting a secret → 700025. ``client_assertion`` (certificates) is not supported:
   700027.
3. the grant:

``authorization_code``
  ``code`` and ``redirect_uri`` required (900144). Unknown code or another client's → 9002313;
  redeemed before → 54005 (codes are single use, redeemed on success); older than
  ``config.code_lifetime`` → 70008; redeemed at another authority than it was issued for →
  700005; ``redirect_uri`` differing from the authorize request's → 500112; PKCE verifier not
  matching the challenge (S256 or plain) → 501481.

``refresh_token``
  Unknown or another client's token → 9002313. Then the user's state, first failure wins:
  disabled (50057), revoked — admin password reset, revoked sessions, or a password change
  for public clients (50173), password expired (50055), unused for more than
  ``config.refresh_token_inactivity_days`` (700082), MFA now required and the token was
  obtained without it (50076), consent for a requested permission gone (65001). ``scope`` may
  narrow (or, for permissions consented since, widen) the grant. Every success returns a new
  refresh token; the old one stays valid (rotation, graph.md 1.4).

``client_credentials`` (graph.md 1.6)
  Not at ``/common`` or ``/consumers`` (9001023); ``/organizations`` is answered for the app's
  home tenant. ``scope`` must be one resource's ``/.default`` (else 1002012; two resources →
  700022; a resource other than Graph → 500011). The app needs a service principal in the
  tenant — its home tenant, or any consent there — else 7000229. The token's ``roles`` are the
  tenant's application-permission grants to the app, possibly none; no refresh token, no
  ``scope`` in the response.

Responses carry ``token_type``, ``scope`` (Graph permissions as full URIs plus the OpenID
scopes granted), ``expires_in``, ``ext_expires_in``, ``access_token``, then ``refresh_token``
(only with ``offline_access``), ``id_token`` (only with ``openid``) and ``client_info`` (only
when the request had ``client_info=1``). The access token's ``scp`` is the consented Graph
permissions asked for plus the OpenID scopes (``openid profile email``), as real Graph tokens
show, plus ``wids`` (the user's directory role template ids, :mod:`m365sim.roles`; setting
``graph_access_token_wids``). The id token carries ``wids`` only when the app registration's
``groupMembershipClaims`` includes ``DirectoryRole`` or ``All``, as Entra's optional-claims
reference says. Errors are :func:`m365sim.errors.identity_error_body` bodies, 400 (401 for
``invalid_client``); the ``suberror``/``error`` of user-state errors follow the user's
configured overrides (:func:`m365sim.identity.events.set_error_shape`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
import urllib.parse
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from m365sim import ids, roles
from m365sim.clock import iso7
from m365sim.errors import IdentityError, identity_error_body
from m365sim.identity.permissions import OIDC_SCOPES, Scopes, parse_scopes, response_scope
from m365sim.identity.protocol import (
    Authority,
    FormError,
    identity_state,
    parse_form,
    resolve_authority,
)
from m365sim.state import EmulatorState, RequestRecord
from m365sim.store import App, RefreshToken, Tenant, User
from m365sim.tokens import (
    GRAPH_APP_ID,
    GRAPH_RESOURCE,
    b64url,
    client_info,
    issue_access_token,
    pkce_matches,
)

GRANTS = ("authorization_code", "refresh_token", "client_credentials")
ID_TOKEN_LIFETIME = 3600
JSON_TYPE = "application/json; charset=utf-8"


@dataclass
class UserStateError(IdentityError):
    """An error about the user's state, shaped by the user's configured overrides."""

    error_override: str | None = None


def user_error(user: User, kind: str, **params: Any) -> UserStateError:
    suberror: str | None = None
    if kind in user.suberror_overrides:
        configured = user.suberror_overrides[kind]
        suberror = configured if configured is not None else ""  # "" = no suberror field
    return UserStateError(
        kind, dict(params), suberror=suberror, error_override=user.error_overrides.get(kind)
    )


def _json(body: dict[str, Any], status: int = 200, trace_id: str | None = None) -> Response:
    return Response(
        json.dumps(body).encode(),
        status_code=status,
        media_type=JSON_TYPE,
        headers={
            "Cache-Control": "no-store, no-cache",
            "Pragma": "no-cache",
            "x-ms-request-id": trace_id or str(uuid.uuid4()),
        },
    )


def _public_base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _when(epoch: float) -> str:
    return iso7(datetime.fromtimestamp(epoch, tz=UTC))


async def token(state: EmulatorState, request: Request) -> Response:
    """The token endpoint; every call is also recorded in the request log (tests count them
    to prove that failures are a status, not a retry storm)."""
    response = await _token(state, request)
    state.record(
        RequestRecord(
            time=state.clock.time(),
            method=request.method,
            path=request.url.path,
            status=response.status_code,
            endpoint=f"{request.method} /{{tenant}}/oauth2/v2.0/token",
            mailbox_id=None,
            client_id=None,
            request_id=response.headers.get("x-ms-request-id", ""),
            in_batch=False,
        )
    )
    return response


async def _token(state: EmulatorState, request: Request) -> Response:
    now = state.clock.now()
    try:
        if request.method != "POST":
            raise IdentityError("post_only", {"method": request.method})
        body = await request.body()
        form = parse_form(request.headers.get("content-type"), body)
        segment = request.path_params["tenant"]
        authority = resolve_authority(state.store, segment)
        if authority is None:
            raise IdentityError("tenant_not_found", {"tenant": segment})
        grant = form.get("grant_type", "").strip()
        if not grant:
            raise _missing("grant_type")
        if grant not in GRANTS:
            raise IdentityError("unsupported_grant_type", {"grant": grant})
        app, confidential = _authenticate_client(state, authority, form, request)
        base = _public_base(request)
        if grant == "client_credentials":
            result = _client_credentials(state, authority, app, form)
        elif grant == "authorization_code":
            result = _authorization_code(state, authority, app, form, confidential, base)
        else:
            result = _refresh(state, authority, app, form, confidential, base)
        return _json(result)
    except FormError as err:
        failure = IdentityError(err.kind, {"parameter": err.parameter})
        error_body = identity_error_body(failure, now=now)
        return _json(error_body, failure.entry.status, error_body["trace_id"])
    except IdentityError as err:
        error_body = identity_error_body(err, now=now)
        if isinstance(err, UserStateError) and err.error_override:
            error_body["error"] = err.error_override
        return _json(error_body, err.entry.status, error_body["trace_id"])


def _missing(parameter: str) -> IdentityError:
    return IdentityError("missing_parameter", {"parameter": parameter})


def _require(form: dict[str, str], name: str) -> str:
    value = form.get(name, "")
    if not value.strip():
        raise _missing(name)
    return value


# ------------------------------------------------------------------------- client auth
def _basic(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep:
        return None
    # RFC 6749 2.3.1: both parts are form-urlencoded before Basic encoding
    return urllib.parse.unquote_plus(user), urllib.parse.unquote_plus(password)


def _authenticate_client(
    state: EmulatorState, authority: Authority, form: dict[str, str], request: Request
) -> tuple[App, bool]:
    """The calling app, and whether it authenticated as a confidential client."""
    basic = _basic(request)
    client_id = form.get("client_id", "").strip() or (basic[0] if basic else "")
    if not client_id:
        raise _missing("client_id")
    store = state.store
    app = store.apps.get(client_id) or store.apps.get(client_id.lower())
    tenant_name = authority.tenant.id if authority.tenant else authority.segment
    if app is None or (
        app.single_tenant
        and authority.tenant is not None
        and authority.tenant.id != app.home_tenant_id
    ):
        raise IdentityError("app_not_found", {"client_id": client_id, "tenant": tenant_name})
    if not app.enabled:
        raise IdentityError(
            "app_disabled", {"client_id": app.client_id, "app_name": app.display_name}
        )
    secret = form["client_secret"] if "client_secret" in form else (basic[1] if basic else "")
    assertion = form.get("client_assertion", "")
    if app.public_client:
        if secret or assertion:
            raise IdentityError("public_client_secret")
        return app, False
    if assertion and not secret:
        raise IdentityError("client_assertion_invalid")
    if not secret:
        raise IdentityError("client_secret_missing")
    matching = [s for s in app.secrets if secrets.compare_digest(s.value.encode(), secret.encode())]
    if not matching:
        raise IdentityError("invalid_client_secret", {"client_id": app.client_id})
    now = state.clock.time()
    if all(s.expires is not None and s.expires <= now for s in matching):
        raise IdentityError("client_secret_expired", {"client_id": app.client_id})
    return app, True


# ------------------------------------------------------------------------- grants
def _client_credentials(
    state: EmulatorState, authority: Authority, app: App, form: dict[str, str]
) -> dict[str, Any]:
    if authority.segment in ("common", "consumers"):
        raise IdentityError("common_client_credentials")
    if app.public_client:
        raise IdentityError("client_secret_missing")
    scope = _require(form, "scope")
    parts = scope.split()
    for part in parts:
        if not part.lower().endswith("/.default"):
            raise IdentityError("default_scope_required", {"scope": part})
    resources = {_resource_key(p[: -len("/.default")]) for p in parts}
    if len(resources) > 1:
        raise IdentityError("multiple_resources", {"scope": scope})
    tenant = authority.tenant or state.store.tenants.get(app.home_tenant_id)
    if tenant is None:
        raise IdentityError("tenant_not_found", {"tenant": authority.segment})
    resource = resources.pop()
    if resource != "graph":
        raise IdentityError("resource_not_found", {"resource": resource, "tenant": tenant.id})
    if not _has_service_principal(tenant, app):
        raise IdentityError(
            "missing_service_principal", {"client_id": app.client_id, "tenant": tenant.id}
        )
    roles = sorted(tenant.app_role_grants.get(app.client_id, set()))
    lifetime = state.config.access_token_lifetime
    access_token = issue_access_token(
        state.signing_key,
        now=state.clock.time(),
        lifetime=lifetime,
        tenant_id=tenant.id,
        client_id=app.client_id,
        user_id=None,
        roles=roles,
        app_name=app.display_name,
    )
    return {
        "token_type": "Bearer",
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": access_token,
    }


def _resource_key(resource: str) -> str:
    low = resource.lower().rstrip("/")
    if low in (GRAPH_RESOURCE, GRAPH_APP_ID):
        return "graph"
    return resource


def _has_service_principal(tenant: Tenant, app: App) -> bool:
    """An app registration has a service principal in its home tenant; elsewhere one is made
    by the first consent (user or admin) and removed with the last grant."""
    if tenant.id == app.home_tenant_id:
        return True
    if app.client_id in tenant.app_role_grants or app.client_id in tenant.admin_delegated_grants:
        return True
    return any(key[0] == app.client_id for key in tenant.user_grants)


def _authorization_code(
    state: EmulatorState,
    authority: Authority,
    app: App,
    form: dict[str, str],
    confidential: bool,
    base: str,
) -> dict[str, Any]:
    store = state.store
    code = _require(form, "code")
    redirect_uri = _require(form, "redirect_uri")
    now = state.clock.time()
    with store.lock:
        record = store.auth_codes.get(code)
        if record is None or record.client_id != app.client_id:
            raise IdentityError("invalid_refresh_token")
        meta = identity_state(state).codes.get(code)
        if record.redeemed:
            raise IdentityError("code_reused")
        if now - record.issued > state.config.code_lifetime:
            raise IdentityError("code_invalid")
        if meta is not None and meta.authority != authority.segment:
            raise IdentityError("code_wrong_tenant")
        if redirect_uri != record.redirect_uri:
            raise IdentityError(
                "reply_address_mismatch",
                {"redirect_uri": redirect_uri, "expected": record.redirect_uri},
            )
        if record.code_challenge is not None and not pkce_matches(
            form.get("code_verifier", ""), record.code_challenge, record.code_challenge_method
        ):
            raise IdentityError("pkce_mismatch")
        found = store.user_by_id(record.user_id)
        if found is None:
            raise IdentityError("invalid_refresh_token")
        tenant, user = found
        if not user.account_enabled:
            raise user_error(user, "user_disabled")
        authorized = parse_scopes(" ".join(record.scopes))
        requested = parse_scopes(form["scope"]) if form.get("scope", "").strip() else authorized
        _check_token_scopes(requested, tenant)
        graph = _granted_graph(
            store_scopes=store.delegated_scopes(tenant, app.client_id, user.id),
            requested=requested,
            app=app,
            user=user,
        )
        record.redeemed = True
        session_id = meta.session_id if meta else ids.opaque(16)
        return _issue_user_tokens(
            state,
            app=app,
            tenant=tenant,
            user=user,
            graph=graph,
            oidc=set(authorized.oidc),
            nonce=record.nonce,
            mfa_done=record.mfa_done,
            family=session_id,
            confidential=confidential,
            with_client_info=form.get("client_info") == "1",
            base=base,
        )


def _check_token_scopes(requested: Scopes, tenant: Tenant) -> None:
    if requested.other_resources:
        raise IdentityError(
            "resource_not_found",
            {"resource": requested.other_resources[0], "tenant": tenant.id},
        )
    if requested.unknown_graph:
        raise IdentityError("invalid_scope", {"scope": requested.unknown_graph[0]})


def _granted_graph(*, store_scopes: set[str], requested: Scopes, app: App, user: User) -> set[str]:
    """The Graph permissions a token may carry: requested ∩ consented; a requested permission
    without consent is AADSTS65001."""
    asked = set(requested.graph)
    if requested.graph_default:
        asked |= store_scopes
        if not store_scopes:
            raise user_error(
                user, "consent_revoked", client_id=app.client_id, app_name=app.display_name
            )
    missing = asked - store_scopes
    if missing:
        raise user_error(
            user, "consent_revoked", client_id=app.client_id, app_name=app.display_name
        )
    return asked


def _refresh(
    state: EmulatorState,
    authority: Authority,
    app: App,
    form: dict[str, str],
    confidential: bool,
    base: str,
) -> dict[str, Any]:
    store = state.store
    value = _require(form, "refresh_token")
    now = state.clock.time()
    with store.lock:
        record = store.refresh_tokens.get(value)
        if record is None or record.client_id != app.client_id:
            raise IdentityError("invalid_refresh_token")
        if authority.tenant is not None and authority.tenant.id != record.tenant_id:
            raise IdentityError("invalid_refresh_token")
        found = store.user_by_id(record.user_id)
        if found is None:
            raise IdentityError("invalid_refresh_token")
        tenant, user = found
        if not user.account_enabled:
            raise user_error(user, "user_disabled")
        if record.revoked is not None or record.issued < user.tokens_valid_from:
            valid_from = user.tokens_valid_from or now
            raise user_error(
                user,
                "sessions_revoked",
                issued=_when(record.issued),
                valid_from=_when(valid_from),
            )
        if user.password_expired:
            raise user_error(user, "password_expired")
        inactive = now - record.last_used
        if inactive > state.config.refresh_token_inactivity_days * 86400:
            raise user_error(
                user,
                "refresh_token_inactive",
                issued=_when(record.issued),
                inactive_days=int(inactive // 86400),
            )
        if user.mfa_required and not record.mfa_done:
            raise user_error(user, "mfa_required", resource=GRAPH_APP_ID)
        recorded = parse_scopes(" ".join(record.scopes))
        requested = parse_scopes(form["scope"]) if form.get("scope", "").strip() else recorded
        _check_token_scopes(requested, tenant)
        consented = store.delegated_scopes(tenant, app.client_id, user.id)
        if not _consent_exists(tenant, app, user):
            raise user_error(
                user, "consent_revoked", client_id=app.client_id, app_name=app.display_name
            )
        graph = _granted_graph(store_scopes=consented, requested=requested, app=app, user=user)
        record.last_used = now
        # a refresh always rotates: the new refresh token comes back whatever ``scope`` says
        oidc = set(requested.oidc) | {"offline_access"}
        return _issue_user_tokens(
            state,
            app=app,
            tenant=tenant,
            user=user,
            graph=graph,
            oidc=oidc,
            nonce=None,
            mfa_done=record.mfa_done,
            family=record.family,
            confidential=record.confidential,
            with_client_info=form.get("client_info") == "1",
            base=base,
        )


def _consent_exists(tenant: Tenant, app: App, user: User) -> bool:
    return (app.client_id, user.id) in tenant.user_grants or (
        app.client_id in tenant.admin_delegated_grants
    )


# ------------------------------------------------------------------------- issuing
def pairwise_subject(user_id: str, client_id: str) -> str:
    """``sub``: stable per (user, application), different across applications."""
    return b64url(hashlib.sha256(f"{user_id}|{client_id}".encode()).digest())[:43]


def _issue_user_tokens(
    state: EmulatorState,
    *,
    app: App,
    tenant: Tenant,
    user: User,
    graph: set[str],
    oidc: set[str],
    nonce: str | None,
    mfa_done: bool,
    family: str,
    confidential: bool,
    with_client_info: bool,
    base: str,
) -> dict[str, Any]:
    now = state.clock.time()
    lifetime = state.config.access_token_lifetime
    scp = sorted(graph) + [s for s in ("openid", "profile", "email") if s in oidc]
    access_token = issue_access_token(
        state.signing_key,
        now=now,
        lifetime=lifetime,
        tenant_id=tenant.id,
        client_id=app.client_id,
        user_id=user.id,
        scopes=scp,
        name=user.display_name,
        upn=user.user_principal_name,
        app_name=app.display_name,
        wids=roles.wids(user.directory_roles) if state.config.graph_access_token_wids else None,
    )
    result: dict[str, Any] = {
        "token_type": "Bearer",
        "scope": response_scope(graph, oidc),
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": access_token,
    }
    if "offline_access" in oidc:
        value = "1.A" + ids.opaque(96)
        state.store.refresh_tokens[value] = RefreshToken(
            token=value,
            client_id=app.client_id,
            tenant_id=tenant.id,
            user_id=user.id,
            scopes=[f"{GRAPH_RESOURCE}/{n}" for n in sorted(graph)]
            + [s for s in OIDC_SCOPES if s in oidc],
            issued=now,
            last_used=now,
            mfa_done=mfa_done,
            confidential=confidential,
            family=family,
        )
        result["refresh_token"] = value
    if "openid" in oidc:
        result["id_token"] = _id_token(
            state, app, tenant, user, oidc, nonce=nonce, sid=family, now=now, base=base
        )
    if with_client_info:
        result["client_info"] = client_info(user.id, tenant.id)
    return result


def _id_token(
    state: EmulatorState,
    app: App,
    tenant: Tenant,
    user: User,
    oidc: set[str],
    *,
    nonce: str | None,
    sid: str,
    now: float,
    base: str,
) -> str:
    claims: dict[str, Any] = {
        "aud": app.client_id,
        "iss": f"{base}/{tenant.id}/v2.0",
        "iat": int(now),
        "nbf": int(now),
        "exp": int(now) + ID_TOKEN_LIFETIME,
        "aio": ids.opaque(40),
        "oid": user.id,
        "rh": "0.A" + ids.opaque(40),
        "sid": str(uuid.uuid5(uuid.NAMESPACE_URL, sid)),
        "sub": pairwise_subject(user.id, app.client_id),
        "tid": tenant.id,
        "uti": ids.opaque(16),
        "ver": "2.0",
    }
    if "profile" in oidc:
        claims["name"] = user.display_name
        claims["preferred_username"] = user.user_principal_name
    if "email" in oidc:
        claims["email"] = user.mail
    if nonce is not None:
        claims["nonce"] = nonce
    if roles.emits_wids(
        app.group_membership_claims,
        security_group_includes_roles=state.config.wids_with_security_group,
    ):
        claims["wids"] = roles.wids(user.directory_roles)
    return state.signing_key.sign(claims)
