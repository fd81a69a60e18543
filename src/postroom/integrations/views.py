"""Integration pages: the list, an integration's page (status, sync, mailboxes) and Check
connection. Connecting is :mod:`.connect`, the setup wizard and the changes after it :mod:`.setup`.

Views stay thin: parse, call Microsoft first, then one short database session to write, then
render (STYLE rule 6).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from postroom.graph import AccessDenied, GraphClient, GraphError, NotFound
from postroom.integrations import service, wizard
from postroom.integrations.graph_access import TokenFailure
from postroom.integrations.models import Mailbox
from postroom.integrations.oauth import (
    GRAPH,
)
from postroom.integrations.removal import summary_lines
from postroom.integrations.shadow_views import shadow_rows, suggesting_days
from postroom.integrations.statuses import (
    LABELS,
    REASONS,
    notes_words,
    shown_status,
)
from postroom.integrations.web import _settings, graph_call, load_integration, resume
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


@router.get("/integrations/{integration_id}")
def integration_page(
    request: Request,
    integration_id: str,
    caller: Annotated[Caller, Depends(current_caller)],
    db: DbSession,
) -> Response:
    integration = load_integration(db, caller, integration_id)
    from postroom.sync.backfill import folder_progress

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
        disconnect_summary=summary_lines(integration),
        shadow_rows=shadow_rows(db, integration),
        suggesting_days=suggesting_days(integration),
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


@dataclass
class CheckLine:
    """One thing Check connection looked at, in people's words."""

    what: str
    ok: bool
    detail: str
    repaired: str = ""


@router.post("/integrations/{integration_id}/pause")
def pause_integration(
    request: Request,
    integration_id: str,
    caller: Annotated[Caller, Depends(current_caller)],
    db: DbSession,
    csrf_token: Field = "",
) -> Response:
    """Pause: no email is processed until Resume. Nothing is lost: new mail waits in the
    mailbox, and Resume catches up through delta from where processing stopped."""
    check_csrf(request, csrf_token)
    caller.require_manager()
    integration = load_integration(db, caller, integration_id)
    if not service.pause(db=db, integration=integration):
        raise HTTPException(409, "Only a running integration can be paused.")
    db.commit()
    return RedirectResponse(f"/integrations/{integration.id}", status_code=303)


@router.post("/integrations/{integration_id}/resume")
def resume_integration(
    request: Request,
    integration_id: str,
    caller: Annotated[Caller, Depends(current_caller)],
    db: DbSession,
    csrf_token: Field = "",
) -> Response:
    """Resume a paused integration: subscriptions renewed (or made again) and every folder
    caught up through delta at once, so mail that arrived while paused is processed."""
    check_csrf(request, csrf_token)
    caller.require_manager()
    integration = load_integration(db, caller, integration_id)
    if not service.unpause(db=db, integration=integration):
        raise HTTPException(409, "Only a paused integration can be resumed.")
    resume(request, db, integration)
    db.commit()
    return RedirectResponse(f"/integrations/{integration.id}", status_code=303)


@router.post("/integrations/{integration_id}/settings")
def save_integration_settings(
    request: Request,
    integration_id: str,
    caller: Annotated[Caller, Depends(current_caller)],
    db: DbSession,
    csrf_token: Field = "",
    respect_filed: Field = "",
) -> Response:
    """Settings of how mail is treated: leave alone mail that already has a category of its
    own (ticked by default; unticked, Postroom adds its category beside the person's)."""
    check_csrf(request, csrf_token)
    caller.require_manager()
    integration = load_integration(db, caller, integration_id)
    if respect_filed not in ("", "on"):
        raise HTTPException(400, "The setting is a tick box: on or off.")
    integration.options = {**(integration.options or {}), "respect_filed": respect_filed == "on"}
    db.commit()
    return RedirectResponse(f"/integrations/{integration.id}?saved=settings", status_code=303)


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
    if (was_failed or subscription_trouble) and resume(request, db, integration):
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
