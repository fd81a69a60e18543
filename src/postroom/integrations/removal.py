"""Disconnect and Delete: leaving Postroom, with a confirmation that names what goes.

**Disconnect** (owners and admins, any integration not already disconnected): the page says
what will happen and offers one tick box - also remove from each mailbox's category list the
categories Postroom created there. Confirming sets the status ``disconnecting`` (nothing is
processed from that moment), records the request and queues the ``disconnect_integration``
job (:mod:`postroom.sync.disconnect`), which deletes the subscriptions, removes the ticked
categories, forgets the tokens and records a summary the integration's page shows. A lost job
is queued again by the reconcile.

**Delete** (a disconnected integration, or one whose setup was never finished): after a
confirmation that lists what is stored for it, removes the integration and everything Postroom
stored for it (mailboxes chosen, categories, rules and examples, the learned model and its
corrections, the activity records, incidents). Nothing in Microsoft 365 is touched by Delete.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from postroom.alerts.models import Incident
from postroom.integrations.models import Category, Integration, Mailbox, OAuthFlow
from postroom.integrations.statuses import DISCONNECTED, DISCONNECTING, LABELS
from postroom.integrations.web import load_integration
from postroom.learning.models import ConversationMemory, LearningEvent, ModelState
from postroom.processing.models import CreatedMasterCategory, LedgerEntry
from postroom.sync.models import FolderSync
from postroom.web.deps import DbSession, current_caller, render
from postroom.web.security import Caller, check_csrf

router = APIRouter()
log = logging.getLogger("postroom.integrations")

Field = Annotated[str, Form(max_length=200)]
CallerDep = Annotated[Caller, Depends(current_caller)]
DELETABLE = (DISCONNECTED, "setup")
KEPT_WHY = {
    "already_gone": "someone had removed it already",
    "no_access": "Postroom could no longer sign in to remove it",
    "ErrorAccessDenied": "Microsoft refused the change",
    "ErrorItemNotFound": "someone had removed it already",
}


def _count(db: Session, model: Any, *where: Any) -> int:
    return int(db.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def _created_categories(db: Session, integration_id: str) -> list[tuple[str, str]]:
    return [
        (str(address), str(name))
        for address, name in db.execute(
            select(Mailbox.address, CreatedMasterCategory.name)
            .join(Mailbox, Mailbox.id == CreatedMasterCategory.mailbox_id)
            .where(Mailbox.integration_id == integration_id)
            .order_by(Mailbox.address, CreatedMasterCategory.name)
        ).all()
    ]


# ---------------------------------------------------------------------- disconnect
@router.get("/integrations/{integration_id}/disconnect")
def disconnect_page(
    request: Request, integration_id: str, caller: CallerDep, db: DbSession
) -> Response:
    caller.require_manager()
    integration = load_integration(db, caller, integration_id)
    if integration.status in (DISCONNECTING, DISCONNECTED):
        return RedirectResponse(f"/integrations/{integration.id}", status_code=303)
    return render(
        request,
        "integrations/disconnect.html",
        nav="integrations",
        item=integration,
        subscriptions=_count(
            db,
            FolderSync,
            FolderSync.integration_id == integration.id,
            FolderSync.subscription_id.is_not(None),
        ),
        created=_created_categories(db, integration.id),
    )


@router.post("/integrations/{integration_id}/disconnect")
def disconnect(
    request: Request,
    integration_id: str,
    caller: CallerDep,
    db: DbSession,
    csrf_token: Field = "",
    remove_categories: Field = "",
) -> Response:
    """Stop at once (status ``disconnecting``) and queue the disconnect job."""
    check_csrf(request, csrf_token)
    caller.require_manager()
    if remove_categories not in ("", "on"):
        raise HTTPException(400, "“Remove the categories Postroom created” is a tick box.")
    integration = load_integration(db, caller, integration_id, lock=True)
    if integration.status in (DISCONNECTING, DISCONNECTED):
        return RedirectResponse(f"/integrations/{integration.id}", status_code=303)
    from postroom.integrations import service

    integration.disconnect = {
        "requested_by": caller.user_email,
        "remove_categories": remove_categories == "on",
        "subscriptions": _count(
            db,
            FolderSync,
            FolderSync.integration_id == integration.id,
            FolderSync.subscription_id.is_not(None),
        ),
        "was": integration.status,
    }
    service.set_status(db=db, integration=integration, status=DISCONNECTING)
    db.commit()
    _queue(request, integration.id)
    return RedirectResponse(f"/integrations/{integration.id}", status_code=303)


def _queue(request: Request, integration_id: str) -> None:
    from anyio import from_thread

    from postroom.sync.jobs import defer_disconnect

    try:
        from_thread.run(defer_disconnect, request.app.state.runtime, integration_id)
    except Exception:  # recorded anyway: the reconcile queues a lost disconnect again
        log.warning("integration %s: could not queue the disconnect now", integration_id)


def summary_lines(integration: Integration) -> list[str]:
    """What a finished disconnect did, in people's words (the integration's page)."""
    done = integration.disconnect or {}
    if not done.get("done_at"):
        return []
    lines = []
    deleted = int(done.get("subscriptions_deleted", 0))
    left = int(done.get("subscriptions_left", 0))
    lines.append(
        f"Deleted {deleted} Microsoft subscription{'' if deleted == 1 else 's'} "
        "(Postroom is no longer told about new mail)."
    )
    if left:
        why_left = (
            "Postroom could no longer sign in" if done.get("token_problem") else "Microsoft refused"
        )
        lines.append(
            f"{left} subscription{' was' if left == 1 else 's were'} not deleted "
            f"({why_left}): they lapse by themselves within three days, and Postroom "
            "ignores them meanwhile."
        )
    lines.append("Forgot the sign-in (tokens) and stopped all of Postroom's work on this mail.")
    if done.get("backfills_stopped"):
        lines.append(
            "Stopped the unfinished processing of existing mail; after a reconnect, start it "
            "again under Apply to existing mail if you want it."
        )
    undos = int(done.get("undos_stopped") or 0)
    if undos:
        lines.append(
            f"{undos} undo{' was' if undos == 1 else 's were'} still waiting and "
            f"{'was' if undos == 1 else 'were'} not carried out: the activity page marks "
            f"{'it' if undos == 1 else 'them'}."
        )
    removed = done.get("categories_removed") or []
    if removed:
        names = ", ".join(f"{r['name']} ({r['mailbox']})" for r in removed)
        lines.append(
            f"Removed from the category list: {names}. Emails keep the category's name; "
            "Outlook shows it without a colour."
        )
    for kept in done.get("categories_kept") or []:
        why = KEPT_WHY.get(str(kept.get("why")), "Microsoft refused the change")
        lines.append(f"Not removed: {kept['name']} ({kept['mailbox']}): {why}.")
    if not done.get("remove_categories"):
        lines.append("Left the categories Postroom created on the category list, as asked.")
    lines.append(
        "Left deliberately: every folder and every email, and the categories on emails. "
        "Postroom never deletes mail."
    )
    if integration.kind == "organization":
        lines.append(
            "Microsoft still lists Postroom as consented in your organization: an administrator "
            "removes it under Microsoft Entra ID → Enterprise applications, if wanted."
        )
    return lines


# ---------------------------------------------------------------------- delete
def stored_for(db: Session, integration: Integration) -> list[str]:
    """Everything Delete removes, counted, in people's words."""
    iid = integration.id
    counts = [
        (_count(db, Mailbox, Mailbox.integration_id == iid), "mailbox chosen", "mailboxes chosen"),
        (
            _count(db, Category, Category.integration_id == iid),
            "category with its rules, colour, folder and examples",
            "categories with their rules, colours, folders and examples",
        ),
        (
            _count(db, LedgerEntry, LedgerEntry.integration_id == iid),
            "activity record (what Postroom did to an email)",
            "activity records (what Postroom did to each email)",
        ),
        (
            _count(db, ModelState, ModelState.integration_id == iid),
            "learned model",
            "learned models",
        ),
        (
            _count(db, LearningEvent, LearningEvent.integration_id == iid),
            "learning record (corrections and examples)",
            "learning records (corrections and examples)",
        ),
        (
            _count(db, ConversationMemory, ConversationMemory.integration_id == iid),
            "remembered conversation",
            "remembered conversations",
        ),
        (
            _count(db, Incident, Incident.integration_id == iid),
            "alert record",
            "alert records",
        ),
    ]
    lines = [f"{n} {one if n == 1 else many}" for n, one, many in counts if n]
    lines.append("its settings and the record of how it was connected")
    return lines


@router.get("/integrations/{integration_id}/delete")
def delete_page(
    request: Request, integration_id: str, caller: CallerDep, db: DbSession
) -> Response:
    caller.require_manager()
    integration = load_integration(db, caller, integration_id)
    return render(
        request,
        "integrations/delete.html",
        nav="integrations",
        item=integration,
        deletable=integration.status in DELETABLE,
        labels=LABELS,
        stored=stored_for(db, integration),
    )


@router.post("/integrations/{integration_id}/delete")
def delete_integration(
    request: Request,
    integration_id: str,
    caller: CallerDep,
    db: DbSession,
    csrf_token: Field = "",
    confirm: Field = "",
) -> Response:
    """Remove a disconnected (or never finished) integration and all Postroom stored for it."""
    check_csrf(request, csrf_token)
    caller.require_manager()
    integration = load_integration(db, caller, integration_id, lock=True)
    if integration.status not in DELETABLE:
        raise HTTPException(
            409, "Disconnect the integration first: only a disconnected one can be deleted."
        )
    if confirm != "delete":
        return render(
            request,
            "integrations/delete.html",
            nav="integrations",
            item=integration,
            deletable=True,
            labels=LABELS,
            stored=stored_for(db, integration),
            error="Tick the box to confirm that all of this goes.",
            status_code=400,
        )
    name = integration.name
    db.execute(delete(OAuthFlow).where(OAuthFlow.integration_id == integration.id))
    db.delete(integration)  # the rest goes with it (ON DELETE CASCADE)
    db.commit()
    log.info("integration %s deleted by user %s", integration_id, caller.user_id)
    from urllib.parse import urlencode

    return RedirectResponse(f"/integrations?{urlencode({'deleted': name})}", status_code=303)
