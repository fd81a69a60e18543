"""Suggest only and Go live, on the integration's page (:mod:`postroom.sync.shadow`).

``POST /integrations/{id}/suggest-only`` turns Suggest only on for all categories or one;
``POST /integrations/{id}/go-live`` turns it off - acting on new mail only, unless the person
ticks "also file the N emails suggested so far that nobody filed", which queues them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from postroom.integrations import service
from postroom.integrations.models import Category, Integration
from postroom.integrations.web import load_integration
from postroom.sync import shadow
from postroom.sync.models import FolderSync
from postroom.web.deps import DbSession, current_caller
from postroom.web.security import Caller, check_csrf

router = APIRouter()
log = logging.getLogger("postroom.integrations")

Field = Annotated[str, Form(max_length=200)]
CallerDep = Annotated[Caller, Depends(current_caller)]


@dataclass(frozen=True)
class ShadowRow:
    """One category's line in the page's Suggest only card."""

    category_id: str
    name: str
    suggesting: bool
    suggested: int
    filed: int
    agreed: int
    unfiled: int  # suggestions nobody filed yet (what Go live may also file)

    @property
    def rate(self) -> str:
        return f"{round(100 * self.agreed / self.filed)} %" if self.filed else "—"


def shadow_rows(db: Session, integration: Integration) -> list[ShadowRow]:
    """The Suggest only card: every category, whether it suggests, and its agreement."""
    categories = service.categories(db=db, integration=integration)
    suggesting = {c.id for c in shadow.suggesting(integration, categories)}
    figures: dict[str, shadow.Agreement] = {}
    unfiled: dict[str, int] = {}
    if suggesting or (integration.options or {}).get("suggested_ever"):
        # (never in Suggest only: nothing to count, no query over its ledger)
        figures = {k.casefold(): v for k, v in shadow.agreement(db, integration.id).items()}
        unfiled = shadow.unfiled_counts(db, integration.id)
    rows = []
    for category in categories:
        key = category.name.strip().casefold()
        seen = figures.get(key)
        rows.append(
            ShadowRow(
                category_id=category.id,
                name=category.name,
                suggesting=category.id in suggesting,
                suggested=seen.suggested if seen else 0,
                filed=seen.filed if seen else 0,
                agreed=seen.agreed if seen else 0,
                unfiled=unfiled.get(key, 0),
            )
        )
    return rows


def suggesting_days(integration: Integration) -> int | None:
    """Whole days since Suggest only was turned on (None: not on, or not recorded)."""
    since = (integration.options or {}).get("suggest_since")
    try:
        started = datetime.fromisoformat(str(since)) if since else None
    except ValueError:
        return None
    return None if started is None else (datetime.now(UTC) - started).days


def _category(db: Session, integration: Integration, category_id: str) -> str | None:
    """ "" for all categories, else the id of one of this integration's categories."""
    if not category_id:
        return None
    found = db.scalar(
        select(Category.id).where(
            Category.id == category_id, Category.integration_id == integration.id
        )
    )
    if found is None:
        raise HTTPException(404, "No such category in this integration.")
    return str(found)


@router.post("/integrations/{integration_id}/suggest-only")
def suggest_only(
    request: Request,
    integration_id: str,
    caller: CallerDep,
    db: DbSession,
    csrf_token: Field = "",
    category_id: Field = "",
) -> Response:
    """Suggest only from now on: decided and recorded, nothing touched in the mailbox."""
    check_csrf(request, csrf_token)
    caller.require_manager()
    integration = load_integration(db, caller, integration_id, lock=True)
    chosen = _category(db, integration, category_id)
    categories = service.categories(db=db, integration=integration)
    shadow.set_suggest_only(integration, categories, category_id=chosen, on=True)
    db.commit()
    return RedirectResponse(f"/integrations/{integration.id}?saved=suggest#suggest", 303)


@router.post("/integrations/{integration_id}/go-live")
def go_live(
    request: Request,
    integration_id: str,
    caller: CallerDep,
    db: DbSession,
    csrf_token: Field = "",
    category_id: Field = "",
    file_suggested: Field = "",
) -> Response:
    """Act on new mail from now on; with ``file_suggested``, also file the suggestions of
    these categories nobody filed yet (each exactly once, as planned)."""
    check_csrf(request, csrf_token)
    caller.require_manager()
    if file_suggested not in ("", "on"):
        raise HTTPException(400, "“Also file the mail suggested so far” is a tick box.")
    integration = load_integration(db, caller, integration_id, lock=True)
    chosen = _category(db, integration, category_id)
    categories = service.categories(db=db, integration=integration)
    going = [
        c.name
        for c in shadow.suggesting(integration, categories)
        if chosen is None or c.id == chosen
    ]
    shadow.set_suggest_only(integration, categories, category_id=chosen, on=False)
    mailboxes: set[str] = set()
    if file_suggested == "on" and going:
        rows = shadow.unfiled_suggestions(db, integration.id, going)
        mailboxes = shadow.file_suggestions(db, rows)
    db.commit()
    if mailboxes:
        _queue(request, db, mailboxes)
    return RedirectResponse(f"/integrations/{integration.id}?saved=live#suggest", 303)


def _queue(request: Request, db: Session, mailboxes: set[str]) -> None:
    from anyio import from_thread

    from postroom.sync.jobs import defer_resume_stale

    for mailbox_id in sorted(mailboxes):
        sync_id = db.scalar(
            select(FolderSync.id)
            .where(
                FolderSync.mailbox_id == mailbox_id,
                FolderSync.active.is_(True),
                FolderSync.watch.is_(False),
            )
            .order_by(FolderSync.id)
            .limit(1)
        )
        if sync_id is None:
            continue
        try:
            from_thread.run(defer_resume_stale, request.app.state.runtime, sync_id, mailbox_id)
        except Exception:  # recorded anyway: the reconcile queues claimed rows again
            log.warning("mailbox %s: could not queue the suggestions to file now", mailbox_id)
