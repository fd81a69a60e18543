"""Consent, and the end of every interactive flow: a code, an admin-consent answer, or an error.

Once the user is known (signed in, MFA done, password current), :func:`finish` decides:

``/authorize`` (user consent, graph.md 1.2, 2.1)
  The Graph permissions asked for (``/.default`` = the registration's delegated permissions)
  minus what the user or an administrator already consented to. Nothing missing (and no
  ``prompt=consent``) → an authorization code right away. Otherwise the consent screen; but
  permissions the tenant reserves for administrators (``tenant.admin_only_scopes``, or all of
  them when ``tenant.user_consent_allowed`` is off) that an administrator has not granted
  stop a non-administrator at "Need admin approval" (AADSTS90094). An administrator (any role
  that may grant delegated permissions, ``User.is_admin``) sees a "Consent on behalf of your
  organization" box that grants the permissions tenant-wide.
  Cancel → ``error=access_denied&error_subcode=cancel`` with AADSTS65004. With ``prompt=none``
  nothing is shown: ``consent_required`` (AADSTS65001) goes back instead.

``/{tenant}/v2.0/adminconsent`` and legacy ``/{tenant}/adminconsent`` (graph.md 1.7)
  Only an administrator may answer. ``/.default`` (and the legacy endpoint) consent to every
  delegated and application permission of the registration; explicit scopes consent to those
  delegated permissions. Success redirects ``admin_consent=True&tenant=<tid>&state=..&scope=..``
  (legacy: without ``scope``); cancel redirects ``error=access_denied&error_subcode=cancel``
  (legacy: ``error=permission_denied&error_description=The admin canceled the request``, with no
  ``state``, exactly as Microsoft's documentation shows it). A non-administrator is sent back
  with ``error=consent_required`` and AADSTS90094 — and so is an Application or Cloud
  Application Administrator when the request includes Microsoft Graph application
  permissions, which only a Global or Privileged Role Administrator may grant
  (:mod:`m365sim.roles`; whether Entra shows its own page for this case first is not known, so
  the emulator answers as it does for a non-administrator).

The authorization code (single use, ``config.code_lifetime`` seconds) is stored with the PKCE
challenge, nonce, redirect URI, scopes and whether MFA was done; the redirect carries ``code``,
``client_info`` (when the request had ``client_info=1``, as MSAL sends), ``state`` and
``session_state``, in that order.
"""

from __future__ import annotations

import uuid

from starlette.responses import Response

from m365sim.identity.permissions import APPLICATION, DELEGATED
from m365sim.identity.protocol import AuthFlow, CodeMeta, flow_failure, new_id
from m365sim.identity.web import (
    Exchange,
    error_page,
    flow_context,
    render,
    respond_to_app,
)
from m365sim.store import App, AuthCode, Tenant, User
from m365sim.tokens import client_info


def error_to_app(
    ex: Exchange,
    flow: AuthFlow,
    kind: str,
    *,
    subcode: str | None = None,
    **params: str,
) -> Response:
    """An error redirect to the (already validated) redirect URI; ends the flow."""
    failure = flow_failure(kind, ex.state.clock.now(), **params)
    fields: list[tuple[str, str]] = []
    if flow.kind == "adminconsent" and subcode is None:
        fields.append(("admin_consent", "True"))
    fields += [("error", failure.error)]
    if subcode:
        fields.append(("error_subcode", subcode))
    fields.append(("error_description", failure.description))
    if flow.state is not None:
        fields.append(("state", flow.state))
    if flow.kind == "adminconsent" and subcode is not None:
        fields.append(("admin_consent", "True"))
    ex.ids.flows.pop(flow.id, None)
    mode = flow.response_mode if flow.kind == "authorize" else "query"
    return respond_to_app(ex, flow.redirect_uri, mode, fields)


def finish(ex: Exchange, flow: AuthFlow, tenant: Tenant, user: User, interactive: bool) -> Response:
    app = ex.state.store.apps.get(flow.client_id)
    if app is None:
        failure = flow_failure(
            "app_not_found", ex.state.clock.now(), client_id=flow.client_id, tenant=tenant.id
        )
        return error_page(ex, failure)
    if flow.kind == "authorize":
        return _user_consent(ex, flow, app, tenant, user, interactive)
    return _admin_consent(ex, flow, app, tenant, user)


def _requested(flow: AuthFlow, app: App) -> set[str]:
    return flow.scopes.graph_for(app.delegated_permissions)


def _admin_needed(tenant: Tenant, scopes: set[str]) -> set[str]:
    if not tenant.user_consent_allowed:
        return set(scopes)
    return scopes & tenant.admin_only_scopes


def _user_consent(
    ex: Exchange, flow: AuthFlow, app: App, tenant: Tenant, user: User, interactive: bool
) -> Response:
    store = ex.state.store
    requested = _requested(flow, app)
    consented = store.delegated_scopes(tenant, app.client_id, user.id)
    missing = requested - consented
    if not missing and flow.prompt != "consent":
        return issue_code(ex, flow, tenant, user)
    if not interactive:
        return error_to_app(
            ex, flow, "consent_required", client_id=app.client_id, app_name=app.display_name
        )
    blocked = _admin_needed(tenant, missing)
    if blocked and not user.is_admin:
        return render(
            ex,
            "need_admin.html",
            **flow_context(flow, app),
            username=user.user_principal_name,
            permissions=_describe(sorted(blocked), DELEGATED),
        )
    shown = sorted(missing or requested)
    return render(
        ex,
        "consent.html",
        **flow_context(flow, app),
        username=user.user_principal_name,
        permissions=_describe(shown, DELEGATED)
        + _describe([s for s in ("offline_access",) if s in flow.scopes.oidc], DELEGATED),
        can_consent_for_org=user.is_admin,
        publisher_domain=tenant.domain if app.home_tenant_id == tenant.id else "",
    )


def _admin_sets(flow: AuthFlow, app: App) -> tuple[set[str], set[str]]:
    """(delegated, application) permissions an admin-consent request covers."""
    if flow.kind == "adminconsent_legacy" or flow.scopes.graph_default:
        return set(app.delegated_permissions) | set(flow.scopes.graph), set(
            app.application_permissions
        )
    return set(flow.scopes.graph), set()


def _may_grant(user: User, application: set[str]) -> bool:
    """Global and Privileged Role Administrators grant everything; Application and Cloud
    Application Administrators everything except Microsoft Graph application permissions
    (m365sim.roles)."""
    if not user.is_admin:
        return False
    return not application or user.may_consent_graph_app_roles


def _admin_consent(ex: Exchange, flow: AuthFlow, app: App, tenant: Tenant, user: User) -> Response:
    delegated, application = _admin_sets(flow, app)
    if not _may_grant(user, application):
        return error_to_app(ex, flow, "admin_consent_required")
    return render(
        ex,
        "admin_consent.html",
        **flow_context(flow, app),
        username=user.user_principal_name,
        tenant_name=tenant.display_name,
        delegated=_describe(sorted(delegated), DELEGATED),
        application=_describe(sorted(application), APPLICATION),
    )


def _describe(names: list[str], texts: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": n, "text": texts.get(n, n)} for n in names]


def answer(ex: Exchange, flow: AuthFlow, form: dict[str, str]) -> Response:
    """The consent or admin-consent screen was answered (Accept / Cancel)."""
    store = ex.state.store
    if flow.user_id is None:
        return error_page(ex, flow_failure("invalid_flow_request", ex.state.clock.now()))
    found = store.user_by_id(flow.user_id)
    app = store.apps.get(flow.client_id)
    if found is None or app is None:
        return error_page(ex, flow_failure("flow_expired", ex.state.clock.now()))
    tenant, user = found
    action = form.get("action", "")
    if flow.kind == "authorize":
        if action != "accept":
            return error_to_app(ex, flow, "user_declined", subcode="cancel")
        requested = _requested(flow, app)
        blocked = _admin_needed(
            tenant, requested - store.delegated_scopes(tenant, app.client_id, user.id)
        )
        if blocked and not user.is_admin:
            return error_to_app(ex, flow, "admin_consent_required")
        with store.lock:
            grants = tenant.user_grants.setdefault((app.client_id, user.id), set())
            grants |= requested
            if user.is_admin and form.get("consent_for_org") in ("on", "true", "1"):
                tenant.admin_delegated_grants.setdefault(app.client_id, set()).update(requested)
        return issue_code(ex, flow, tenant, user)
    # admin consent (v2 or legacy)
    delegated, application = _admin_sets(flow, app)
    if not _may_grant(user, application):
        return error_to_app(ex, flow, "admin_consent_required")
    if action != "accept":
        ex.ids.flows.pop(flow.id, None)
        if flow.kind == "adminconsent_legacy":
            return respond_to_app(
                ex,
                flow.redirect_uri,
                "query",
                [
                    ("error", "permission_denied"),
                    ("error_description", "The admin canceled the request"),
                ],
            )
        return error_to_app(ex, flow, "admin_declined", subcode="cancel")
    with store.lock:
        tenant.admin_delegated_grants.setdefault(app.client_id, set()).update(delegated)
        roles = tenant.app_role_grants.setdefault(app.client_id, set())
        roles |= application
    ex.ids.flows.pop(flow.id, None)
    fields = [("admin_consent", "True"), ("tenant", tenant.id)]
    if flow.state is not None:
        fields.append(("state", flow.state))
    if flow.kind == "adminconsent":
        fields.append(("scope", flow.scope_param))
    return respond_to_app(ex, flow.redirect_uri, "query", fields)


def issue_code(ex: Exchange, flow: AuthFlow, tenant: Tenant, user: User) -> Response:
    store = ex.state.store
    code = "1.A" + new_id(96)
    session_id = flow.session_id or new_id()
    with store.lock:
        store.auth_codes[code] = AuthCode(
            code=code,
            client_id=flow.client_id,
            tenant_id=tenant.id,
            user_id=user.id,
            redirect_uri=flow.redirect_uri,
            scopes=list(flow.scopes.raw),
            nonce=flow.nonce,
            code_challenge=flow.code_challenge,
            code_challenge_method=flow.code_challenge_method,
            issued=ex.now,
            mfa_done=flow.mfa_done,
        )
        ex.ids.codes[code] = CodeMeta(authority=flow.authority, session_id=session_id)
        ex.ids.flows.pop(flow.id, None)
    fields = [("code", code)]
    if flow.client_info:
        fields.append(("client_info", client_info(user.id, tenant.id)))
    if flow.state is not None:
        fields.append(("state", flow.state))
    fields.append(("session_state", str(uuid.uuid5(uuid.NAMESPACE_URL, session_id))))
    return respond_to_app(ex, flow.redirect_uri, flow.response_mode, fields)
