"""Connecting Outlook: the connect pages, personal sign-in (auth code + PKCE) and the
organization-wide flow (an administrator's OpenID Connect sign-in proving the tenant, then admin
consent for exactly that tenant; decision 0012), their callbacks, and Reconnect.

Every identity failure becomes a status with its reason in plain words; every bad input
(unknown ``state``, another workspace's id, garbage fields) gets a clear page and changes nothing.
"""

from __future__ import annotations

import json
import logging
import secrets
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from postroom.crypto import DecryptionFailed
from postroom.integrations import service
from postroom.integrations.oauth import (
    GRAPH,
    AdministratorProof,
    NotProven,
    administrator_proof,
    delegated_scopes,
    features_off,
)
from postroom.integrations.statuses import (
    DISCONNECTING,
    REASONS,
    from_admin_consent_redirect,
    from_identity_error,
)
from postroom.integrations.web import (
    _box,
    _flag,
    _identity,
    _settings,
    load_integration,
    restart_after_disconnect,
    resume,
)
from postroom.web.deps import DbSession, current_caller, render
from postroom.web.security import Caller, check_csrf

router = APIRouter()
log = logging.getLogger("postroom.integrations")

Field = Annotated[str, Form(max_length=5000)]
FieldList = Annotated[list[str], Form(max_length=5000)]
HIDDEN_FOLDERS = {
    "deleteditems",
    "recoverableitemsdeletions",
    "drafts",
    "outbox",
    "sentitems",
    "conversationhistory",
}


# ---------------------------------------------------------------------- list and detail
@router.get("/integrations/new")
def choose_provider(
    request: Request, caller: Annotated[Caller, Depends(current_caller)]
) -> Response:
    caller.require_manager()
    return render(request, "integrations/providers.html", nav="integrations")


@router.get("/integrations/new/outlook")
def choose_account_type(
    request: Request, caller: Annotated[Caller, Depends(current_caller)]
) -> Response:
    caller.require_manager()
    return render(request, "integrations/account_type.html", nav="integrations")


# What each delegated permission is for, in the words of the personal connect page.
SCOPE_WORDS = {
    "User.Read": "verify the connected user and mailbox",
    "MailboxSettings.Read": "read your Outlook categories and their colours",
    "MailboxSettings.ReadWrite": "create Postroom's categories with their colours in your "
    "Outlook master list (and read them)",
    "Mail.ReadWrite": "read incoming mail, add category labels, move emails into folders",
    "Mail.Send": "forward emails when you configure forwarding",
    "Mail.ReadWrite.Shared": "the same in the shared mailboxes you add",
    "Mail.Send.Shared": "forward emails from those shared mailboxes",
}


def permission_lists() -> dict[str, list[tuple[str, str]]]:
    """The permissions the personal connect page asks for, per combination of its options
    (``shared-level``: shared 0/1, level standard/colours/minimal), in the order asked."""
    lists = {}
    for shared in (False, True):
        for level in ("standard", "colours", "minimal"):
            scopes = delegated_scopes(
                shared=shared, minimal=level == "minimal", manage_colours=level == "colours"
            )
            names = [s.rsplit("/", 1)[-1] for s in scopes] + ["offline_access"]
            lists[f"{int(shared)}-{level}"] = [
                (n, SCOPE_WORDS.get(n, "keep working while you are signed out")) for n in names
            ]
    return lists


@router.get("/integrations/new/outlook/personal")
def personal_form(request: Request, caller: Annotated[Caller, Depends(current_caller)]) -> Response:
    caller.require_manager()
    return render(
        request,
        "integrations/personal.html",
        nav="integrations",
        off_full=features_off(minimal=False, manage_colours=False),
        off_minimal=features_off(minimal=True, manage_colours=False),
        permission_lists=permission_lists(),
        scope_words=SCOPE_WORDS,
    )


@router.get("/integrations/new/outlook/organization")
def organization_form(
    request: Request, caller: Annotated[Caller, Depends(current_caller)]
) -> Response:
    caller.require_manager()
    return render(
        request,
        "integrations/organization.html",
        nav="integrations",
        client_id=_settings(request).ms_client_id,
    )


# ---------------------------------------------------------------------- connect


def _redirect_to_admin_sign_in(
    request: Request, db: Session, caller: Caller, integration_id: str | None = None
) -> Response:
    """Start an organization-wide connection (new, or a retry for an integration) with the
    administrator's OpenID Connect sign-in: the tenant is proven before consent is asked."""
    flow = _identity(request).start_admin_sign_in()
    service.save_flow(
        db=db,
        box=_box(request),
        state=flow["state"],
        workspace_id=caller.workspace_id,
        user_id=caller.user_id,
        purpose="organization-admin",
        options={},
        flow=json.dumps(flow).encode(),
        integration_id=integration_id,
    )
    return RedirectResponse(flow["auth_uri"], status_code=303)


def _save_proven_flow(
    request: Request,
    db: Session,
    pending: Any,
    proof: AdministratorProof,
    purpose: str,
    *,
    integration_id: str | None = None,
) -> str:
    """A new single-use ``state`` bound to the tenant ``proof`` proved and its administrator;
    returns it."""
    state = secrets.token_urlsafe(32)
    service.save_flow(
        db=db,
        box=_box(request),
        state=state,
        workspace_id=pending.workspace_id,
        user_id=pending.user_id,
        purpose=purpose,
        options={"admin_oid": proof.oid, "admin": proof.username, "admin_name": proof.name},
        flow=None,
        integration_id=integration_id,
        tenant_id=proof.tenant_id,
    )
    return state


def _proof_of(pending: Any) -> AdministratorProof:
    """The administrator proof a flow saved by :func:`_save_proven_flow` carries."""
    options = pending.options or {}
    return AdministratorProof(
        tenant_id=str(pending.tenant_id),
        oid=str(options.get("admin_oid") or ""),
        username=str(options.get("admin") or ""),
        name=str(options.get("admin_name") or ""),
    )


def _redirect_to_admin_consent(
    request: Request, db: Session, caller: Caller, *, pending: Any, proof: AdministratorProof
) -> Response:
    """The second step: admin consent for exactly the proven tenant, under a new ``state``
    bound to that tenant and administrator."""
    state = _save_proven_flow(
        request, db, pending, proof, "organization", integration_id=pending.integration_id
    )
    return RedirectResponse(
        _identity(request).admin_consent_url(state=state, tenant_id=proof.tenant_id),
        status_code=303,
    )


def _refused(request: Request, title: str, message: str, status_code: int = 400) -> Response:
    return render(
        request,
        "integrations/org_refused.html",
        status_code,
        nav="integrations",
        title=title,
        message=message,
    )


def _redirect_to_sign_in(
    request: Request,
    db: Session,
    caller: Caller,
    options: dict[str, Any],
    *,
    integration_id: str | None = None,
    login_hint: str | None = None,
    prompt: str | None = None,
) -> Response:
    """Start a personal sign-in (MSAL auth-code flow with PKCE), kept server-side by state."""
    scopes = delegated_scopes(
        shared=bool(options.get("shared_access")),
        minimal=bool(options.get("minimal")),
        manage_colours=bool(options.get("manage_colours")),
    )
    flow = _identity(request).start_sign_in(scopes=scopes, login_hint=login_hint, prompt=prompt)
    service.save_flow(
        db=db,
        box=_box(request),
        state=flow["state"],
        workspace_id=caller.workspace_id,
        user_id=caller.user_id,
        purpose="personal",
        options=options,
        flow=json.dumps(flow).encode(),
        integration_id=integration_id,
    )
    return RedirectResponse(flow["auth_uri"], status_code=303)


@router.post("/integrations/connect/personal")
def connect_personal(
    request: Request,
    caller: Annotated[Caller, Depends(current_caller)],
    db: DbSession,
    csrf_token: Field = "",
    shared_access: Field = "",
    minimal: Field = "",
    manage_colours: Field = "",
) -> Response:
    check_csrf(request, csrf_token)
    caller.require_manager()
    options = {
        "shared_access": _flag(shared_access),
        "minimal": _flag(minimal),
        "manage_colours": _flag(manage_colours) and not _flag(minimal),
    }
    return _redirect_to_sign_in(request, db, caller, options)


@router.post("/integrations/connect/organization")
def connect_organization(
    request: Request,
    caller: Annotated[Caller, Depends(current_caller)],
    db: DbSession,
    csrf_token: Field = "",
) -> Response:
    check_csrf(request, csrf_token)
    caller.require_manager()
    return _redirect_to_admin_sign_in(request, db, caller)


def _bad_state(request: Request) -> Response:
    return render(
        request,
        "error.html",
        400,
        title="This sign-in link is not valid",
        message="It has expired, was already used, or was started by someone else. Nothing was "
        "connected. Start again from the Integrations page.",
    )


@router.get("/auth/callback")
def personal_callback(
    request: Request,
    caller: Annotated[Caller, Depends(current_caller)],
    db: DbSession,
) -> Response:
    params = {k: v for k, v in request.query_params.items() if len(v) < 20_000}
    pending = service.take_flow(db=db, state=params.get("state", ""), user_id=caller.user_id)
    if pending is None or pending.workspace_id != caller.workspace_id:
        return _bad_state(request)
    db.commit()  # the state is used up whatever happens next
    if pending.purpose == "organization-admin":
        return _administrator_signed_in(request, db, caller, pending, params)
    if pending.purpose != "personal":
        return _bad_state(request)
    reconnecting = None
    if pending.integration_id:
        reconnecting = load_integration(db, caller, pending.integration_id)
    try:
        raw = service.flow_payload(box=_box(request), flow=pending)
        flow = json.loads(raw or b"{}")
    except (DecryptionFailed, ValueError):
        return _bad_state(request)
    result = _identity(request).finish_sign_in(flow, params)
    if not result.ok:
        reason = from_identity_error(result.error)
        description = str(result.error.get("error_description") or result.error.get("error"))
        if result.error.get("error") == "invalid_state":
            return _bad_state(request)
        if reconnecting is not None:
            service.mark_failed(db=db, integration=reconnecting, reason=reason, detail=description)
        return render(
            request,
            "integrations/connect_failed.html",
            400,
            nav="integrations",
            reason=reason,
            description=description,
            kind="personal",
        )
    claims = result.data.get("id_token_claims") or {}
    tenant_id, oid = str(claims.get("tid", "")), str(claims.get("oid", ""))
    address = str(claims.get("preferred_username") or "")
    name = str(claims.get("name") or address)
    granted = str(result.data.get("scope", "")).split()
    granted = [
        s if "/" in s else f"{GRAPH}/{s}"
        for s in granted
        if s not in ("openid", "profile", "offline_access", "email")
    ]
    if reconnecting is not None:
        if reconnecting.account_oid != oid or reconnecting.tenant_id != tenant_id:
            return render(
                request,
                "error.html",
                400,
                title="That is a different Microsoft account",
                message=f"This integration belongs to {reconnecting.account_address}, but you "
                f"signed in as {address}. Reconnect with {reconnecting.account_address}. "
                "Nothing was changed.",
            )
        integration = reconnecting
    else:
        existing = service.find_personal(
            db=db, workspace_id=caller.workspace_id, tenant_id=tenant_id, account_oid=oid
        )
        integration = existing or service.create_integration(
            db=db,
            workspace_id=caller.workspace_id,
            user_id=caller.user_id,
            kind="personal",
            name=f"Outlook — {address}",
            tenant_id=tenant_id,
            account_oid=oid,
            options=pending.options,
        )
    integration.account_address = address
    integration.account_name = name
    integration.granted_scopes = granted
    service.store_token_cache(box=_box(request), integration=integration, cache=result.cache or "")
    restart_after_disconnect(db, integration)
    service.restore_after_reconnect(db=db, integration=integration)
    target = f"/integrations/{integration.id}"
    if integration.finished_at is None:
        target += "/setup"
    else:
        resume(request, db, integration)
    return RedirectResponse(target, status_code=303)


def _administrator_signed_in(
    request: Request, db: Session, caller: Caller, pending: Any, params: dict[str, str]
) -> Response:
    """Step one of an organization-wide connection came back: who signed in, for which tenant,
    and may they grant tenant-wide consent? Only then is admin consent asked, for that tenant."""
    try:
        flow = json.loads(service.flow_payload(box=_box(request), flow=pending) or b"{}")
    except (DecryptionFailed, ValueError):
        return _bad_state(request)
    result = _identity(request).finish_sign_in(flow, params)
    if not result.ok:
        if result.error.get("error") == "invalid_state":
            return _bad_state(request)
        reason = from_identity_error(result.error, organization=True)
        return render(
            request,
            "integrations/connect_failed.html",
            400,
            nav="integrations",
            reason=reason,
            description=str(
                result.error.get("error_description") or result.error.get("error") or ""
            ),
            kind="organization",
        )
    try:
        proof = administrator_proof(result.data.get("id_token_claims") or {})
    except NotProven as refusal:
        if refusal.code == "not_admin":
            return _refused(
                request,
                "An administrator of this organization must connect it",
                "You signed in with an account that cannot grant organization-wide consent. "
                "Ask a Global Administrator or Privileged Role Administrator of your Microsoft "
                "365 organization to sign in to Postroom and connect it, or connect your own "
                "mailbox with a personal connection instead. Nothing was connected.",
                403,
            )
        if refusal.code == "no_roles_claim":
            return _refused(
                request,
                "Postroom cannot tell whether you are an administrator",
                "Microsoft's sign-in did not say which directory roles you hold. The Postroom "
                "app registration must include them in its tokens: in Entra ID, open the app's "
                "Token configuration (or manifest) and set groupMembershipClaims to "
                "DirectoryRole (see Register Postroom in the help). Nothing was connected.",
                400,
            )
        return _bad_state(request)
    if pending.integration_id:
        existing = load_integration(db, caller, pending.integration_id)
        if existing.tenant_id and existing.tenant_id.lower() != proof.tenant_id:
            return _refused(
                request,
                "That is a different organization",
                f"This integration belongs to tenant {existing.tenant_id}, but you signed in "
                f"as {proof.username}, an administrator of tenant {proof.tenant_id}. Sign in "
                "with an administrator of the integration's organization. Nothing was changed.",
            )
    else:
        same = service.find_organization(
            db=db, workspace_id=caller.workspace_id, tenant_id=proof.tenant_id
        )
        if same is not None:
            return render(
                request,
                "integrations/org_refused.html",
                409,
                nav="integrations",
                title="This organization is already connected here",
                message=f"Tenant {proof.tenant_id} already has an organization-wide "
                "integration in this workspace. Open it to reconnect or change it; nothing "
                "new was created.",
                link=f"/integrations/{same.id}",
            )
        if service.connected_elsewhere(
            db=db, workspace_id=caller.workspace_id, tenant_id=proof.tenant_id
        ):
            # Never attached silently: the administrator who just signed in confirms.
            state = _save_proven_flow(request, db, pending, proof, "organization-confirm")
            return render(
                request,
                "integrations/org_confirm.html",
                nav="integrations",
                proof=proof,
                state=state,
            )
    return _redirect_to_admin_consent(request, db, caller, pending=pending, proof=proof)


@router.post("/auth/admin-consent/confirm")
def confirm_organization(
    request: Request,
    caller: Annotated[Caller, Depends(current_caller)],
    db: DbSession,
    csrf_token: Field = "",
    state: Field = "",
) -> Response:
    """The administrator confirmed connecting a tenant another workspace also has."""
    check_csrf(request, csrf_token)
    caller.require_manager()
    pending = service.take_flow(db=db, state=state, user_id=caller.user_id)
    if (
        pending is None
        or pending.purpose != "organization-confirm"
        or pending.workspace_id != caller.workspace_id
        or not pending.tenant_id
    ):
        return _bad_state(request)
    return _redirect_to_admin_consent(
        request, db, caller, pending=pending, proof=_proof_of(pending)
    )


@router.get("/auth/admin-consent/callback")
def admin_consent_callback(
    request: Request,
    caller: Annotated[Caller, Depends(current_caller)],
    db: DbSession,
) -> Response:
    """Step two came back. Its ``tenant`` is never trusted: it must be the tenant the
    administrator proved in step one (bound to this ``state``), and a client-credentials
    token for that tenant must confirm the consent."""
    params = {k: v for k, v in request.query_params.items() if len(v) < 5000}
    pending = service.take_flow(db=db, state=params.get("state", ""), user_id=caller.user_id)
    if (
        pending is None
        or pending.purpose != "organization"
        or not pending.tenant_id
        or pending.workspace_id != caller.workspace_id
    ):
        return _bad_state(request)
    db.commit()  # the state is used up whatever happens next
    tenant = pending.tenant_id
    options = pending.options or {}
    refused = from_admin_consent_redirect(params)
    answered = params.get("tenant", "").strip().lower()
    if refused is None:
        if params.get("admin_consent", "").lower() != "true":
            refused = REASONS["consent_missing"]
        elif answered != tenant:
            return _refused(
                request,
                "Microsoft answered for another organization",
                "The consent that came back is not for the organization whose administrator "
                "signed in. Nothing was connected. Start again from the Integrations page.",
            )
    existing = (
        load_integration(db, caller, pending.integration_id) if pending.integration_id else None
    )
    if existing is None:
        existing = service.find_organization(
            db=db, workspace_id=caller.workspace_id, tenant_id=tenant
        )
    detail = params.get("error_description") or None
    if refused is None:
        confirmation = _identity(request).confirm_tenant(tenant)
        if confirmation.ok:
            integration = existing or service.create_integration(
                db=db,
                workspace_id=caller.workspace_id,
                user_id=caller.user_id,
                kind="organization",
                name="Outlook — organization",
                tenant_id=tenant,
            )
            integration.consent = {
                "granted_at": datetime.now(UTC).isoformat(),
                # the Microsoft administrator who proved the tenant and consented
                "granted_by": str(options.get("admin") or ""),
                "granted_by_name": str(options.get("admin_name") or ""),
                "granted_via": caller.user_email,  # the Postroom user who started it
                "scope": f"{GRAPH}/.default",
            }
            restart_after_disconnect(db, integration)
            service.restore_after_reconnect(db=db, integration=integration)
            resume(request, db, integration)
            target = f"/integrations/{integration.id}"
            return RedirectResponse(
                target + ("" if integration.finished_at else "/setup"), status_code=303
            )
        refused = from_identity_error(confirmation.error, organization=True)
        detail = str(confirmation.error.get("error_description") or "")
    integration = existing or service.create_integration(
        db=db,
        workspace_id=caller.workspace_id,
        user_id=caller.user_id,
        kind="organization",
        name="Outlook — organization",
        tenant_id=tenant,
    )
    service.mark_failed(db=db, integration=integration, reason=refused, detail=detail)
    return RedirectResponse(f"/integrations/{integration.id}", status_code=303)


# ---------------------------------------------------------------------- status actions
@router.post("/integrations/{integration_id}/reconnect")
def reconnect(
    request: Request,
    integration_id: str,
    caller: Annotated[Caller, Depends(current_caller)],
    db: DbSession,
    csrf_token: Field = "",
) -> Response:
    check_csrf(request, csrf_token)
    caller.require_manager()
    integration = load_integration(db, caller, integration_id)
    if integration.status == DISCONNECTING:
        raise HTTPException(
            409,
            "This integration is still disconnecting. Reconnect once the page says Disconnected.",
        )
    if integration.kind == "organization":
        return _redirect_to_admin_sign_in(request, db, caller, integration.id)
    reason = REASONS.get(integration.status_reason or "")
    return _redirect_to_sign_in(
        request,
        db,
        caller,
        dict(integration.options or {}),
        integration_id=integration.id,
        login_hint=integration.account_address,
        # consent again where it was lost, so a refresh token comes back
        prompt="consent" if reason is not None and reason.prompt_consent else "login",
    )
