"""Integration pages: list, connect (personal and organization-wide), callbacks, setup wizard,
status, reconnect.

Views stay thin: parse, call Microsoft (MSAL or the Graph client) first, then one short
database session to write, then render. Every identity failure becomes a status with its reason
in plain words; every bad input (unknown ``state``, another workspace's id, garbage fields) gets
a clear page and changes nothing.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from postroom.crypto import DecryptionFailed, SecretBox
from postroom.graph import AccessDenied, GraphClient, GraphError, NotFound
from postroom.integrations import service, wizard
from postroom.integrations.graph_access import Connection, TokenFailure, run_graph
from postroom.integrations.models import Integration, Mailbox
from postroom.integrations.oauth import (
    GRAPH,
    AdministratorProof,
    MicrosoftIdentity,
    NotProven,
    administrator_proof,
    delegated_scopes,
    features_off,
)
from postroom.integrations.statuses import (
    LABELS,
    REASONS,
    from_admin_consent_redirect,
    from_identity_error,
    notes_words,
    shown_status,
)
from postroom.settings import Settings
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


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _identity(request: Request) -> MicrosoftIdentity:
    identity = getattr(request.app.state, "identity", None)
    if identity is None:
        identity = request.app.state.identity = MicrosoftIdentity(_settings(request))
    return identity


def _box(request: Request) -> SecretBox:
    box: SecretBox = request.app.state.box
    return box


def load_integration(db: Session, caller: Caller, integration_id: str) -> Integration:
    integration = service.get_integration(
        db=db, workspace_id=caller.workspace_id, integration_id=integration_id
    )
    if integration is None:
        raise HTTPException(404)
    return integration


def _connection(request: Request, integration: Integration) -> Connection:
    cache = None
    if integration.kind == "personal":
        try:
            cache = service.token_cache(box=_box(request), integration=integration)
        except DecryptionFailed:
            cache = None
    return Connection(
        kind=integration.kind,
        tenant_id=integration.tenant_id or "organizations",
        account_oid=integration.account_oid,
        cache=cache,
        scopes=list(integration.granted_scopes or []),
    )


def graph_call(
    request: Request, db: Session, integration: Integration, work: Any, *, verify: bool = False
) -> Any:
    """Call Graph for this integration; a token failure becomes the integration's status.

    The session's transaction ends first (STYLE rule 6): nothing is held in PostgreSQL while
    Microsoft answers, which may take seconds (throttling, retries). Callers read before they
    call and write after; the objects they loaded stay usable (``expire_on_commit=False``)."""
    db.commit()
    try:
        result, new_cache = run_graph(
            _settings(request),
            _identity(request),
            _connection(request, integration),
            work,
            verify_sign_in=verify,
        )
    except TokenFailure as failure:
        service.mark_failed(
            db=db, integration=integration, reason=failure.reason, detail=failure.description
        )
        db.commit()
        raise
    if new_cache:
        service.store_token_cache(box=_box(request), integration=integration, cache=new_cache)
        db.flush()
    return result


# ---------------------------------------------------------------------- list and detail
@router.get("/integrations")
def integrations_page(
    request: Request,
    caller: Annotated[Caller, Depends(current_caller)],
    db: DbSession,
) -> Response:
    items = service.list_integrations(db=db, workspace_id=caller.workspace_id)
    from postroom.sync.engine import stopped_mailboxes

    stopped = stopped_mailboxes(db, [item.id for item in items])
    return render(
        request,
        "integrations/list.html",
        nav="integrations",
        items=items,
        labels=LABELS,
        reasons=REASONS,
        stopped=stopped,
        shown={
            item.id: shown_status(item.status, [b.status for b in stopped.get(item.id, [])])
            for item in items
        },
    )


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


@router.get("/integrations/{integration_id}")
def integration_page(
    request: Request,
    integration_id: str,
    caller: Annotated[Caller, Depends(current_caller)],
    db: DbSession,
) -> Response:
    integration = load_integration(db, caller, integration_id)
    from postroom.sync.engine import folder_progress

    boxes = service.mailboxes(db=db, integration=integration)
    rows = folder_progress(db, integration.id)
    return render(
        request,
        "integrations/detail.html",
        nav="integrations",
        item=integration,
        folders=rows,
        sync_rows=sync_rows(db, _settings(request), rows, boxes),
        processed=_processed_counts(db, integration.id),
        labels=LABELS,
        reason=REASONS.get(integration.status_reason or ""),
        reasons=REASONS,
        status_shown=shown_status(integration.status, [b.status for b in boxes]),
        stopped=[b for b in boxes if b.status == "access_denied"],
        box_notes={
            b.id: notes_words(b.notes, integration_kind=integration.kind, mailbox_kind=b.kind)
            for b in boxes
        },
        mailboxes=boxes,
        categories=service.categories(db=db, integration=integration),
        colours=wizard.COLOURS,
        manage_colours=f"{GRAPH}/MailboxSettings.ReadWrite" in (integration.granted_scopes or [])
        or integration.kind == "organization",
    )


WELL_KNOWN_NAMES = {"inbox": "Inbox", "archive": "Archive", "junkemail": "Junk Email"}


@dataclass
class SyncRow:
    """One line of the integration page's Sync table, in people's words."""

    address: str
    folder: str
    watched: bool  # a category's folder, synced so that corrections there are learned
    mode: str
    why: str  # why the folder is polled ("" when notified in real time)
    processed: int | None
    last_synced: str
    progress: Any
    problem: str = ""
    lag_seconds: int = 0  # since the last successful sync (or the setup, if none yet)
    last_error: str = ""  # the last sync's failure, as a code ("" once a sync worked)
    last_error_at: str = ""

    @property
    def lag(self) -> str:
        seconds = self.lag_seconds
        if seconds < 120:
            return f"{seconds} s"
        return f"{seconds // 60} min" if seconds < 7200 else f"{seconds // 3600} h"


def folder_name(key: str, box: Mailbox | None) -> str:
    """A folder as its mailbox names it ("Inbox", not "inbox"); a watched category folder by
    its path."""
    from postroom.sync.engine import WATCH_PREFIX

    key = key.removeprefix(WATCH_PREFIX)
    for folder in box.folders if box is not None else []:
        if str(folder.get("key")) == key and folder.get("name"):
            return str(folder["name"])
    return WELL_KNOWN_NAMES.get(key.lower(), key)


def sync_rows(
    db: Session, settings: Settings, folders: list[Any], boxes: list[Mailbox]
) -> list[SyncRow]:
    """The Sync table: each folder in use, watched category folders last."""
    from postroom.sync.jobs import POLL_ACTIVE_SECONDS, poll_interval

    by_id = {b.id: b for b in boxes}
    quiet = poll_interval(settings, None, datetime.now(UTC))
    active = min(POLL_ACTIVE_SECONDS, quiet)
    rows = []
    for fs, address, progress in folders:
        if not fs.active:
            continue
        if fs.mode == "webhook":
            mode, why = "real time (Microsoft notifies Postroom)", ""
        else:
            mode = (
                f"checked every {active} s while mail is arriving, every {quiet} s when quiet"
                if active < quiet
                else f"checked every {quiet} s"
            )
            why = polling_reason(fs, boxes)
        rows.append(
            SyncRow(
                address=address,
                folder=folder_name(fs.folder_key, by_id.get(fs.mailbox_id)),
                watched=fs.watch,
                mode=mode,
                why=why,
                processed=None if fs.watch else fs.processed_count,
                last_synced=fs.last_synced_at.strftime("%Y-%m-%d %H:%M:%S")
                if fs.last_synced_at
                else "not yet",
                progress=None if fs.watch else progress,
                lag_seconds=int(fs.lag_seconds()),
                last_error=fs.last_error or "",
                last_error_at=fs.last_error_at.strftime("%Y-%m-%d %H:%M")
                if fs.last_error and fs.last_error_at
                else "",
            )
        )
    return sorted(rows, key=lambda r: (r.watched, r.address))


def _processed_counts(db: Session, integration_id: str) -> dict[str, tuple[int, int]]:
    """Mailbox id -> (emails processed, of which existing mail), from the ledger: the true
    count, whichever way an email came."""
    from sqlalchemy import func

    from postroom.processing.models import LedgerEntry

    rows = db.execute(
        select(
            LedgerEntry.mailbox_id,
            func.count(),
            func.count().filter(LedgerEntry.historical.is_(True)),
        )
        .where(LedgerEntry.integration_id == integration_id)
        .group_by(LedgerEntry.mailbox_id)
    ).all()
    return {mailbox_id: (int(total), int(old)) for mailbox_id, total, old in rows}


# ---------------------------------------------------------------------- connect
def _flag(value: str | None) -> bool:
    return value in ("on", "true", "1", "yes")


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


def _redirect_to_admin_consent(
    request: Request, db: Session, caller: Caller, *, pending: Any, proof: AdministratorProof
) -> Response:
    """The second step: admin consent for exactly the proven tenant, under a new ``state``
    bound to that tenant and administrator."""
    state = secrets.token_urlsafe(32)
    service.save_flow(
        db=db,
        box=_box(request),
        state=state,
        workspace_id=pending.workspace_id,
        user_id=pending.user_id,
        purpose="organization",
        options={"admin_oid": proof.oid, "admin": proof.username, "admin_name": proof.name},
        flow=None,
        integration_id=pending.integration_id,
        tenant_id=proof.tenant_id,
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
    service.restore_after_reconnect(db=db, integration=integration)
    target = f"/integrations/{integration.id}"
    if integration.finished_at is None:
        target += "/setup"
    else:
        _resume(request, db, integration)
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
            state = secrets.token_urlsafe(32)
            service.save_flow(
                db=db,
                box=_box(request),
                state=state,
                workspace_id=pending.workspace_id,
                user_id=pending.user_id,
                purpose="organization-confirm",
                options={"admin_oid": proof.oid, "admin": proof.username, "admin_name": proof.name},
                flow=None,
                tenant_id=proof.tenant_id,
            )
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
    options = pending.options or {}
    proof = AdministratorProof(
        tenant_id=pending.tenant_id,
        oid=str(options.get("admin_oid") or ""),
        username=str(options.get("admin") or ""),
        name=str(options.get("admin_name") or ""),
    )
    return _redirect_to_admin_consent(request, db, caller, pending=pending, proof=proof)


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
            service.restore_after_reconnect(db=db, integration=integration)
            _resume(request, db, integration)
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


@dataclass
class CheckLine:
    """One thing Check connection looked at, in people's words."""

    what: str
    ok: bool
    detail: str
    repaired: str = ""


def _resume(request: Request, db: Session, integration: Integration) -> bool:
    """After a reconnect or a repair: renew every subscription and catch up now, instead of
    waiting for the reconcile sweep. Commits first: the job reads the new token cache."""
    if integration.finished_at is None:
        return False
    db.commit()
    from anyio import from_thread

    from postroom.sync.jobs import defer_resume

    try:
        from_thread.run(defer_resume, request.app.state.runtime, integration.id)
    except Exception:  # saved anyway: the reconcile sweep catches up within minutes
        log.warning("integration %s: could not queue the resume now", integration.id)
        return False
    return True


@router.post("/integrations/{integration_id}/check")
def check_connection(
    request: Request,
    integration_id: str,
    caller: Annotated[Caller, Depends(current_caller)],
    db: DbSession,
    csrf_token: Field = "",
) -> Response:
    """Ask Microsoft now whether the connection works: the sign-in (token), each mailbox's
    access, each folder's subscription. Show what was checked and what was repaired."""
    check_csrf(request, csrf_token)
    integration = load_integration(db, caller, integration_id)
    from postroom.sync.models import FolderSync

    boxes = service.mailboxes(db=db, integration=integration)
    folders = list(
        db.scalars(
            select(FolderSync).where(
                FolderSync.integration_id == integration.id, FolderSync.active.is_(True)
            )
        )
    )
    addresses = {m.id: m.address for m in boxes}
    lines: list[CheckLine] = []
    reachable: set[str] = set()
    subscription_trouble = False

    async def probe(client: GraphClient) -> None:
        nonlocal subscription_trouble
        if integration.kind == "organization":
            await client.request("GET", "/users", mailbox=None, params={"$top": "1"})
        else:
            await client.me()
        lines.append(CheckLine("Sign-in", True, "Microsoft issued a token for this connection."))
        for box in boxes:
            try:
                await client.folder(box.graph_user_id, "inbox", select="id")
            except AccessDenied:
                lines.append(
                    CheckLine(f"Mailbox {box.address}", False, "Microsoft refused access.")
                )
                continue
            except NotFound:
                lines.append(
                    CheckLine(f"Mailbox {box.address}", False, "Microsoft does not find it.")
                )
                continue
            reachable.add(box.id)
            lines.append(CheckLine(f"Mailbox {box.address}", True, "Postroom can read it."))
        for fs in folders:
            where = f"{fs.folder_key} in {addresses.get(fs.mailbox_id, '?')}"
            if fs.mode != "webhook" or not fs.subscription_id:
                lines.append(
                    CheckLine(
                        f"Folder {where}",
                        True,
                        "Checked on a timer (polling): " + polling_reason(fs, boxes),
                    )
                )
                continue
            try:
                _, body, _ = await client.request(
                    "GET", f"/subscriptions/{fs.subscription_id}", mailbox=None
                )
            except NotFound:
                subscription_trouble = True
                lines.append(
                    CheckLine(
                        f"Folder {where}",
                        False,
                        "Microsoft no longer sends its notifications (the subscription is gone).",
                    )
                )
                continue
            lines.append(
                CheckLine(
                    f"Folder {where}",
                    True,
                    "Real-time notifications on, until "
                    + str(body.get("expirationDateTime", "?"))[:16].replace("T", " ")
                    + " UTC (renewed automatically).",
                )
            )

    try:
        graph_call(request, db, integration, probe, verify=True)
    except TokenFailure as failure:
        lines.insert(
            0, CheckLine("Sign-in", False, failure.reason.words + " " + failure.reason.fix)
        )
        return render(
            request, "integrations/check.html", nav="integrations", item=integration, lines=lines
        )
    except GraphError as exc:
        return render(
            request,
            "error.html",
            502,
            title="Microsoft did not answer as expected",
            message=f"Try again in a minute. ({exc.code or exc.status})",
        )
    was_failed = integration.status in ("needs_reconnect", "admin_consent_missing", "access_denied")
    if was_failed:
        service.restore_after_reconnect(db=db, integration=integration)
        lines[0].repaired = "The status was set back to " + LABELS[integration.status] + "."
    for box in boxes:
        if box.id in reachable and box.status == "access_denied":
            box.status, box.status_reason = "connected", None
            for line in lines:
                if line.what == f"Mailbox {box.address}":
                    line.repaired = "Processing of this mailbox resumes."
    if (was_failed or subscription_trouble) and _resume(request, db, integration):
        for line in lines:
            if line.what.startswith("Folder") and not line.ok:
                line.repaired = "A new subscription is being created; missed mail is caught up."
        if was_failed:
            lines.append(
                CheckLine(
                    "Catch-up",
                    True,
                    "Subscriptions are renewed and mail that arrived meanwhile is processed now.",
                    repaired="Queued.",
                )
            )
    return render(
        request, "integrations/check.html", nav="integrations", item=integration, lines=lines
    )


def polling_reason(fs: Any, boxes: list[Mailbox]) -> str:
    """Why a folder is polled instead of notified, in plain words."""
    kind = next((b.kind for b in boxes if b.id == fs.mailbox_id), "")
    if fs.subscription_error:
        return f"Microsoft refused real-time notifications ({fs.subscription_error})."
    if kind == "shared":
        return (
            "Microsoft does not send notifications for a shared mailbox on a personal "
            "connection; an organization-wide connection gets them."
        )
    return (
        "Real-time notifications are turned off for this installation (it has no public "
        "address Microsoft can reach)."
    )


# ---------------------------------------------------------------------- setup wizard
# After Finish the wizard is closed; each of its steps has a page of its own instead, which
# changes that part only (never the categories, rules and examples behind another).
AFTER_FINISH = {2: "mailboxes-and-folders", 3: "categories", 4: "existing-mail"}


def _after_finish(integration: Integration, step: int) -> Response:
    page = AFTER_FINISH.get(step)
    target = f"/integrations/{integration.id}" + (f"/{page}" if page else "")
    return RedirectResponse(target, status_code=303)


@router.get("/integrations/{integration_id}/setup")
def setup_resume(
    integration_id: str,
    caller: Annotated[Caller, Depends(current_caller)],
    db: DbSession,
) -> Response:
    integration = load_integration(db, caller, integration_id)
    if integration.finished_at is not None:
        return _after_finish(integration, 0)
    return RedirectResponse(
        f"/integrations/{integration.id}/setup/{integration.wizard_step}", status_code=303
    )


async def _account_facts(client: GraphClient, integration: Integration) -> dict[str, Any]:
    if integration.kind == "organization":
        users = await client.users()
        return {"tenant_id": integration.tenant_id, "mailbox_count": len(users)}
    me = await client.me()
    inbox = await client.folder("me", "inbox")
    return {
        "id": me["id"],
        "name": me.get("displayName") or "",
        "address": me.get("mail") or me.get("userPrincipalName") or "",
        "inbox_total": inbox.get("totalItemCount"),
    }


async def _sync_choices(client: GraphClient, integration: Integration) -> dict[str, Any]:
    if integration.kind == "organization":
        users = await client.users()
        primary = users[0]["id"] if users else None
        mailboxes = [
            {
                "id": u["id"],
                "address": u.get("mail") or u.get("userPrincipalName"),
                "name": u.get("displayName") or "",
            }
            for u in users
            if u.get("mail") or u.get("userPrincipalName")
        ]
    else:
        primary = "me"
        mailboxes = []
    folders: list[dict[str, str]] = [{"key": "inbox", "name": "Inbox"}]
    listed = primary is not None
    if primary is not None:
        try:
            for f in await client.child_folders(primary):
                name = str(f.get("displayName") or "")
                if _offerable(name):
                    folders.append({"key": name, "name": name})
        except GraphError:
            listed = False  # the inbox is always offered; the others are not known just now
    return {"mailboxes": mailboxes, "folders": folders, "listed": listed}


def _offerable(name: str) -> bool:
    """A folder beside the inbox that may be synced (never Deleted Items, Drafts, Sent…)."""
    key = name.lower().replace(" ", "")
    return bool(name) and len(name) <= 255 and key not in HIDDEN_FOLDERS and key != "inbox"


def _with_chosen(
    choices: dict[str, Any], chosen: list[str], form: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    """The folder choices to show, plus any folder chosen or offered on the form that came
    back (when Microsoft's listing fails on the way back, or a folder was renamed): a form
    never silently drops an option. Shown only: a submitted folder is checked against
    Microsoft's listing again (:func:`_parse_sync`)."""
    folders = list(choices.get("folders") or [{"key": "inbox", "name": "Inbox"}])
    known = {f["key"] for f in folders}
    for key in list(chosen) + list((form or {}).get("offered") or []):
        if key not in known and _offerable(key):
            folders.append({"key": key, "name": key})
            known.add(key)
    return {"mailboxes": [], **choices, "folders": folders}


def _render_step(
    request: Request,
    integration: Integration,
    step: int,
    *,
    errors: list[str] | None = None,
    fields: dict[str, list[str]] | None = None,
    confirm: bool = False,
    facts: dict[str, Any] | None = None,
    choices: dict[str, Any] | None = None,
    form: dict[str, list[str]] | None = None,
    status_code: int = 200,
) -> Response:
    data = integration.wizard_data or {}
    options = integration.options or {}
    values = wizard.step_values(step, data, form)
    later = wizard.later_steps_done(integration.wizard_step, step)
    if step == 2:
        choices = _with_chosen(choices or {}, values["folders"], form)
    return render(
        request,
        "integrations/setup.html",
        status_code,
        nav="integrations",
        item=integration,
        step=step,
        titles=wizard.TITLES,
        data=data,
        values=values,
        errors=errors or [],
        fields=fields or {},
        confirm=confirm,
        later=later,
        later_names=", ".join(f"{n} ({wizard.TITLES[n]})" for n in later),
        facts=facts or {},
        choices=choices or {},
        colours=wizard.COLOURS,
        colour_names=wizard.COLOUR_NAMES,
        forwarding_allowed=_forwarding_allowed(integration),
        manage_colours=integration.kind == "organization" or bool(options.get("manage_colours")),
        shared_access=bool(options.get("shared_access")),
        today=datetime.now(UTC).date().isoformat(),
    )


def _forwarding_allowed(integration: Integration) -> bool:
    if integration.kind == "organization":
        return True
    return f"{GRAPH}/Mail.Send" in (integration.granted_scopes or [])


@router.get("/integrations/{integration_id}/setup/{step}")
def setup_step(
    request: Request,
    integration_id: str,
    step: int,
    caller: Annotated[Caller, Depends(current_caller)],
    db: DbSession,
) -> Response:
    integration = load_integration(db, caller, integration_id)
    caller.require_manager()
    if integration.finished_at is not None:
        return _after_finish(integration, step)
    if step < 1 or step > integration.wizard_step or step > 5:
        return RedirectResponse(
            f"/integrations/{integration.id}/setup/{integration.wizard_step}", status_code=303
        )
    facts: dict[str, Any] = {}
    choices: dict[str, Any] = {}
    try:
        if step == 1:
            facts = graph_call(request, db, integration, lambda c: _account_facts(c, integration))
        elif step == 2:
            choices = graph_call(request, db, integration, lambda c: _sync_choices(c, integration))
    except TokenFailure:
        return RedirectResponse(f"/integrations/{integration.id}", status_code=303)
    except GraphError as exc:
        return _render_step(
            request,
            integration,
            step,
            status_code=502,
            errors=[
                f"Microsoft did not answer as expected ({exc.code or exc.status}). Reload to retry."
            ],
        )
    return _render_step(request, integration, step, facts=facts, choices=choices)


async def _verify_mailboxes(client: GraphClient, candidates: list[dict[str, str]]) -> list[str]:
    """Read each mailbox's inbox: the proof that Postroom can work in it."""
    problems = []
    for box in candidates:
        try:
            await client.folder(box["id"], "inbox")
        except AccessDenied as exc:
            if exc.by_policy:
                problems.append(
                    f"{box['address']}: access denied by your organization's policy "
                    "(an Exchange application access policy or RBAC for "
                    "Applications excludes it)."
                )
            else:
                problems.append(
                    f"{box['address']}: no access. The signed-in account needs Full "
                    "Access to this mailbox in Exchange."
                )
        except NotFound:
            problems.append(f"{box['address']}: no such mailbox.")
        except GraphError as exc:
            problems.append(f"{box['address']}: Microsoft answered {exc.code or exc.status}.")
    return problems


@router.post("/integrations/{integration_id}/setup/{step}")
async def setup_submit(
    request: Request,
    integration_id: str,
    step: int,
    caller: Annotated[Caller, Depends(current_caller)],
) -> Response:
    form = await request.form()
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(_setup_submit, request, integration_id, step, caller, form)


def _setup_submit(
    request: Request, integration_id: str, step: int, caller: Caller, form: Any
) -> Response:
    check_csrf(request, str(form.get("csrf_token") or ""))
    caller.require_manager()
    database = request.app.state.db
    with database.session() as db:
        integration = load_integration(db, caller, integration_id)
        if step < 1 or step > 5:
            raise HTTPException(404)
        if integration.finished_at is not None:
            return _after_finish(integration, step)  # changed on its own page, not here
        confirmed = form.get("confirm_reset") == "yes"
        try:
            value = _parse_step(request, db, integration, step, form)
            if step == 5:
                if integration.wizard_step < 5:
                    raise wizard.StepError(["Finish the earlier steps first."])
                service.finish_setup(db=db, integration=integration)
                from postroom.sync.engine import apply_folder_syncs

                apply_folder_syncs(db, integration.id)
                db.commit()
                # Subscriptions (or polling) and the first sync happen in the worker; existing
                # mail waits until the person starts it (their rules and examples come first).
                from anyio import from_thread

                from postroom.sync.jobs import defer_setup

                from_thread.run(defer_setup, request.app.state.runtime, integration.id)
                return RedirectResponse(f"/integrations/{integration.id}", status_code=303)
            data, next_step, needs_confirmation = wizard.apply_step(
                dict(integration.wizard_data or {}),
                integration.wizard_step,
                step,
                value,
                confirmed=confirmed,
            )
        except TokenFailure:
            return RedirectResponse(f"/integrations/{integration.id}", status_code=303)
        except wizard.StepError as exc:
            db.rollback()
            return _render_step(
                request,
                integration,
                step,
                errors=exc.errors,
                fields=exc.fields,
                form=_form_lists(form),
                status_code=400,
                choices=_choices_after_error(request, db, integration, step),
            )
        if needs_confirmation:
            return _render_step(
                request,
                integration,
                step,
                confirm=True,
                form=_form_lists(form),
                status_code=409,
                choices=_choices_after_error(request, db, integration, step),
            )
        service.save_wizard(db=db, integration=integration, data=data, step=next_step)
        return RedirectResponse(
            f"/integrations/{integration.id}/setup/{next_step}", status_code=303
        )


def _form_lists(form: Any) -> dict[str, list[str]]:
    """Every field of a submitted form with all its values, in order (what the person typed,
    to show again)."""
    return {key: [str(v) for v in form.getlist(key)] for key in form if key != "csrf_token"}


def _choices_after_error(
    request: Request, db: Session, integration: Integration, step: int
) -> dict[str, Any]:
    if step != 2:
        return {}
    try:
        result: dict[str, Any] = graph_call(
            request, db, integration, lambda c: _sync_choices(c, integration)
        )
        return result
    except (TokenFailure, GraphError):
        return {"mailboxes": [], "folders": [{"key": "inbox", "name": "Inbox"}]}


def _parse_step(
    request: Request, db: Session, integration: Integration, step: int, form: Any
) -> dict[str, Any]:
    if step == 1:
        facts = graph_call(request, db, integration, lambda c: _account_facts(c, integration))
        return {"confirmed": True, **{k: v for k, v in facts.items() if k != "inbox_total"}}
    if step == 2:
        return _parse_sync(request, db, integration, form)
    if step == 3:
        categories = wizard.parse_categories(
            [str(v) for v in form.getlist("name")],
            [str(v) for v in form.getlist("color")],
            [str(v) for v in form.getlist("folder")],
            [str(v) for v in form.getlist("forward_to")],
            forwarding_allowed=_forwarding_allowed(integration),
        )
        return {"categories": [c.to_dict() for c in categories]}
    if step == 4:
        return wizard.parse_backfill(
            str(form.get("mode") or ""),
            str(form.get("since") or ""),
            _flag(str(form.get("forward_history") or "")),
            today=datetime.now(UTC).date(),
        )
    return {}


def _parse_sync(
    request: Request, db: Session, integration: Integration, form: Any
) -> dict[str, Any]:
    """Mailboxes and folders (wizard step 2, or its page after Finish), each problem filed
    under the field it concerns."""
    choices = graph_call(request, db, integration, lambda c: _sync_choices(c, integration))
    chosen_keys = [k for k in form.getlist("folders") if isinstance(k, str)]
    folder_names = {f["key"]: f["name"] for f in choices["folders"]}
    # a folder in use that Microsoft did not list this time stays choosable
    for f in (integration.wizard_data or {}).get("sync", {}).get("folders", []):
        folder_names.setdefault(str(f.get("key")), str(f.get("name") or f.get("key")))
    unknown = [k for k in chosen_keys if k not in folder_names]
    if unknown and not choices.get("listed", True):
        raise wizard.StepError(
            [
                "Microsoft did not list your folders just now, so Postroom cannot check "
                f"“{unknown[0][:80]}”. Try again in a moment."
            ]
        ).under("folders")
    folders = [{"key": k, "name": folder_names[k]} for k in chosen_keys if k in folder_names]
    if not folders:
        raise wizard.StepError(["Choose at least one folder (Inbox is the usual choice)."]).under(
            "folders"
        )
    selected: list[dict[str, str]] = []
    field = "mailboxes"
    if integration.kind == "organization":
        by_id = {m["id"]: m for m in choices["mailboxes"]}
        for key in form.getlist("mailboxes"):
            if isinstance(key, str) and key in by_id:
                selected.append({**by_id[key], "kind": "tenant"})
        if not selected:
            raise wizard.StepError(["Choose at least one mailbox to process."]).under(field)
    else:
        own = integration.wizard_data.get("account", {})
        if _flag(str(form.get("own") or "")) and own.get("id"):
            selected.append(
                {
                    "id": own["id"],
                    "address": own.get("address", ""),
                    "name": own.get("name", ""),
                    "kind": "own",
                }
            )
        raw_shared = str(form.get("shared") or "")
        if raw_shared.strip():
            field = "shared"
            if not (integration.options or {}).get("shared_access"):
                raise wizard.StepError(
                    [
                        "This connection was made without access to shared mailboxes. Reconnect "
                        "with “Allow access to shared mailboxes” switched on to add them."
                    ]
                ).under(field)
            try:
                addresses = wizard.parse_emails(raw_shared)
            except wizard.StepError as exc:
                raise exc.under(field) from None
            selected += [{"id": a, "address": a, "name": "", "kind": "shared"} for a in addresses]
        if not selected:
            raise wizard.StepError(["Choose at least one mailbox to process."]).under("mailboxes")
    taken = service.mailboxes_taken(db=db, integration=integration, wanted=selected)
    if taken:
        raise wizard.StepError(taken).under(field)
    to_check = [m for m in selected if m["kind"] != "own"]
    problems = graph_call(request, db, integration, lambda c: _verify_mailboxes(c, to_check))
    if problems:
        raise wizard.StepError(problems).under(field)
    return {"mailboxes": selected, "folders": folders}


# ---------------------------------------------------------------------- after Finish
# What the wizard's steps 2 and 4 set, each on a page of its own: changing one never touches
# the categories, their rules or their examples.
def _finished(db: Session, caller: Caller, integration_id: str) -> Integration | Response:
    integration = load_integration(db, caller, integration_id)
    caller.require_manager()
    if integration.finished_at is None:
        return RedirectResponse(f"/integrations/{integration.id}/setup", status_code=303)
    return integration


def _render_sync_page(
    request: Request,
    integration: Integration,
    *,
    mailboxes: list[Mailbox],
    choices: dict[str, Any],
    form: dict[str, list[str]] | None = None,
    errors: list[str] | None = None,
    fields: dict[str, list[str]] | None = None,
    status_code: int = 200,
) -> Response:
    saved = {
        "mailboxes": [
            {"id": m.graph_user_id, "address": m.address, "kind": m.kind} for m in mailboxes
        ],
        "folders": [dict(f) for f in (mailboxes[0].folders if mailboxes else [])],
    }
    values = wizard.sync_values(saved, form)
    return render(
        request,
        "integrations/mailboxes_and_folders.html",
        status_code,
        nav="integrations",
        item=integration,
        values=values,
        choices=_with_chosen(choices, values["folders"], form),
        errors=errors or [],
        fields=fields or {},
        own_address=(integration.wizard_data or {}).get("account", {}).get("address", ""),
        shared_access=bool((integration.options or {}).get("shared_access")),
    )


@router.get("/integrations/{integration_id}/mailboxes-and-folders")
def mailboxes_and_folders_page(
    request: Request,
    integration_id: str,
    caller: Annotated[Caller, Depends(current_caller)],
    db: DbSession,
) -> Response:
    found = _finished(db, caller, integration_id)
    if isinstance(found, Response):
        return found
    integration = found
    mailboxes = service.mailboxes(db=db, integration=integration)
    try:
        choices = graph_call(request, db, integration, lambda c: _sync_choices(c, integration))
    except TokenFailure:
        return RedirectResponse(f"/integrations/{integration.id}", status_code=303)
    except GraphError as exc:
        return _render_sync_page(
            request,
            integration,
            mailboxes=mailboxes,
            choices={"mailboxes": [], "folders": [{"key": "inbox", "name": "Inbox"}]},
            errors=[
                f"Microsoft did not answer as expected ({exc.code or exc.status}). Reload to retry."
            ],
            status_code=502,
        )
    return _render_sync_page(request, integration, mailboxes=mailboxes, choices=choices)


@router.post("/integrations/{integration_id}/mailboxes-and-folders")
async def mailboxes_and_folders_submit(
    request: Request,
    integration_id: str,
    caller: Annotated[Caller, Depends(current_caller)],
) -> Response:
    form = await request.form()
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(
        _save_mailboxes_and_folders, request, integration_id, caller, form
    )


def _save_mailboxes_and_folders(
    request: Request, integration_id: str, caller: Caller, form: Any
) -> Response:
    """Change which mailboxes and folders are processed. Mailboxes and folders taken out stop
    (nothing is deleted: not in Outlook, not their history); new ones get their subscriptions
    from the setup job and start with new mail. Categories, rules and examples stay as they
    are."""
    check_csrf(request, str(form.get("csrf_token") or ""))
    from postroom.sync.engine import apply_folder_syncs, settle_backfill_status

    with request.app.state.db.session() as db:
        found = _finished(db, caller, integration_id)
        if isinstance(found, Response):
            return found
        integration = found
        try:
            chosen = _parse_sync(request, db, integration, form)
        except TokenFailure:
            return RedirectResponse(f"/integrations/{integration.id}", status_code=303)
        except wizard.StepError as exc:
            db.rollback()
            choices = _choices_after_error(request, db, integration, 2)
            return _render_sync_page(
                request,
                integration,
                mailboxes=service.mailboxes(db=db, integration=integration),
                choices=choices,
                form=_form_lists(form),
                errors=exc.errors,
                fields=exc.fields,
                status_code=400,
            )
        service.update_sync_choices(
            db=db, integration=integration, chosen=chosen["mailboxes"], folders=chosen["folders"]
        )
        data = dict(integration.wizard_data or {})
        data["sync"] = chosen
        integration.wizard_data = data
        apply_folder_syncs(db, integration.id)
        settle_backfill_status(db, integration.id)
        db.commit()
        from anyio import from_thread

        from postroom.sync.jobs import defer_setup

        try:
            from_thread.run(defer_setup, request.app.state.runtime, integration.id)
        except Exception:  # saved anyway: the reconcile sweep syncs the folders within minutes
            log.warning("integration %s: could not queue the setup now", integration.id)
        return RedirectResponse(f"/integrations/{integration.id}", status_code=303)


def _render_existing_mail(
    request: Request,
    db: Session,
    integration: Integration,
    *,
    form: dict[str, Any] | None = None,
    errors: list[str] | None = None,
    fields: dict[str, list[str]] | None = None,
    status_code: int = 200,
) -> Response:
    from postroom.sync.engine import backfill_pending, folder_progress

    today = datetime.now(UTC).date()
    planned = (integration.wizard_data or {}).get("backfill") or {}
    values = form or {
        "since": planned.get("since") or (today - timedelta(days=30)).isoformat(),
        "forward_history": bool(planned.get("forward_history")),
    }
    rows = [
        row for row in folder_progress(db, integration.id) if row[0].active and not row[0].watch
    ]
    boxes = {b.id: b for b in service.mailboxes(db=db, integration=integration)}
    return render(
        request,
        "integrations/existing_mail.html",
        status_code,
        nav="integrations",
        item=integration,
        values=values,
        errors=errors or [],
        fields=fields or {},
        folders=rows,
        folder_names={
            fs.id: folder_name(fs.folder_key, boxes.get(fs.mailbox_id)) for fs, _, _ in rows
        },
        running=backfill_pending(db, integration.id),
        rules_ready=any(c.rules for c in service.categories(db=db, integration=integration)),
        today=today.isoformat(),
    )


@router.get("/integrations/{integration_id}/existing-mail")
def existing_mail_page(
    request: Request,
    integration_id: str,
    caller: Annotated[Caller, Depends(current_caller)],
    db: DbSession,
) -> Response:
    found = _finished(db, caller, integration_id)
    if isinstance(found, Response):
        return found
    return _render_existing_mail(request, db, found)


@router.post("/integrations/{integration_id}/existing-mail")
def start_existing_mail(
    request: Request,
    integration_id: str,
    caller: Annotated[Caller, Depends(current_caller)],
    db: DbSession,
    csrf_token: Field = "",
    since: Field = "",
    forward_history: Field = "",
) -> Response:
    """Apply the categories to mail already in the folders, since a date: resumable (a cursor
    per folder), with progress, and exactly once (the ledger), however often it is run."""
    check_csrf(request, csrf_token)
    found = _finished(db, caller, integration_id)
    if isinstance(found, Response):
        return found
    integration = found
    from postroom.sync.engine import BackfillRunning, start_backfill

    typed = {"since": since, "forward_history": _flag(forward_history)}
    try:
        plan = wizard.parse_backfill(
            "since", since, _flag(forward_history), today=datetime.now(UTC).date()
        )
        day = date.fromisoformat(plan["since"])
        queued = start_backfill(db, integration.id, datetime.combine(day, datetime.min.time(), UTC))
    except wizard.StepError as exc:
        return _render_existing_mail(
            request,
            db,
            integration,
            form=typed,
            errors=exc.errors,
            fields=exc.fields,
            status_code=400,
        )
    except BackfillRunning:
        message = (
            "Existing mail is still being processed. Start the next run when this one is done."
        )
        return _render_existing_mail(
            request, db, integration, form=typed, errors=[message], status_code=409
        )
    service.record_existing_mail_run(
        db=db, integration=integration, since=day, forward_history=plan["forward_history"]
    )
    db.commit()
    from anyio import from_thread

    from postroom.sync.jobs import defer_backfill

    try:
        for sync_id, mailbox_id in queued:
            from_thread.run(defer_backfill, request.app.state.runtime, sync_id, mailbox_id)
    except Exception:  # saved anyway: the reconcile queues unfinished backfills each minute
        log.warning("integration %s: could not queue existing mail now", integration.id)
    return RedirectResponse(f"/integrations/{integration.id}/existing-mail", status_code=303)
