"""The ``undo_message`` job's body: one requested undo, with the integration's Graph access.

:mod:`postroom.processing.undo` does the steps; this module finds the mailbox's connection,
opens the Graph client, and teaches the model "not this category" through the same path as a
category taken off in Outlook (:func:`postroom.sync.engine._learn_correction`). Run under the
mailbox's lock like every sync, so it never races the processing of the same email.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from postroom.graph import AccessDenied
from postroom.integrations.graph_access import IntegrationTokens, TokenFailure
from postroom.integrations.models import Integration, Mailbox
from postroom.learning.corrections import Correction
from postroom.processing.decide import NONE_OF_THESE
from postroom.processing.models import LedgerEntry
from postroom.processing.undo import UndoResult, fix_of, undo
from postroom.sync.engine import (
    ACTIVE,
    SYNC_SELECT,
    FolderWork,
    _graph,
    _learn_correction,
    _mailbox_status,
    _pause,
    _store_cache,
    load_work,
)
from postroom.sync.models import FolderSync
from postroom.sync.runtime import Runtime

log = logging.getLogger(__name__)

REQUEST_RETRY = timedelta(minutes=2)
"""A request still standing this long after it was made is queued again by the reconcile."""


def _work_for(runtime: Runtime, entry_id: str) -> tuple[LedgerEntry, FolderWork] | None:
    with runtime.database.session() as db:
        entry = db.get(LedgerEntry, entry_id)
        if entry is None:
            return None
        sync_id = db.scalar(
            select(FolderSync.id)
            .where(FolderSync.mailbox_id == entry.mailbox_id, FolderSync.active.is_(True))
            .order_by(FolderSync.watch, FolderSync.id)
            .limit(1)
        )
        db.expunge(entry)
    work = load_work(runtime, sync_id) if sync_id is not None else None
    return None if work is None else (entry, work)


async def run_undo(runtime: Runtime, entry_id: str) -> UndoResult | None:
    """Carry out the standing undo request of ledger row ``entry_id`` (None: nothing to do
    now — no such row, or its integration is paused; the request stays for later)."""
    found = _work_for(runtime, entry_id)
    if found is None:
        return None
    entry, work = found
    if work.status not in ACTIVE:
        return None
    plan = entry.plan or {}

    tokens = IntegrationTokens(runtime.identity, work.connection)
    try:
        async with _graph(runtime, tokens) as graph:

            async def learn(_: dict[str, Any]) -> None:
                """The model learns it (needs the subject, sender and body: one read)."""
                data = await graph.message(work.mailbox, entry.message_id, select=SYNC_SELECT)
                fix = fix_of(entry)
                previous = plan.get("category")
                correction = Correction(
                    str(previous) if previous else None,
                    str(fix["category"]) if fix is not None else NONE_OF_THESE,
                    str(plan.get("decided_by") or "") or None,
                )
                await _learn_correction(runtime, graph, work, data, entry.id, correction)

            result = await undo(
                graph=graph,
                database=runtime.database,
                entry_id=entry.id,
                mailbox=work.mailbox,
                learn=learn,
                folder_cache=runtime.folder_cache,
            )
    except TokenFailure as failure:
        _pause(runtime, work.integration_id, failure)
        return None
    except AccessDenied as denied:
        reason = "policy_denied" if denied.by_policy else "mailbox_access_denied"
        _mailbox_status(runtime, work.mailbox_row_id, "access_denied", reason)
        return None
    finally:
        if tokens.new_cache:
            _store_cache(runtime, work.integration_id, tokens.new_cache)
    log.info("undo of ledger %s: %s (%s)", entry.id, result.state, result.note or "-")
    return result


def standing_requests(db: Any, now: datetime) -> list[tuple[str, str]]:
    """(ledger id, mailbox row id) of undo requests made more than :data:`REQUEST_RETRY` ago
    and not finished: their job was lost (a worker died, the queue was cleared)."""
    rows = db.execute(
        select(LedgerEntry.id, LedgerEntry.mailbox_id)
        .join(Mailbox, Mailbox.id == LedgerEntry.mailbox_id)
        .join(Integration, Integration.id == Mailbox.integration_id)
        .where(
            LedgerEntry.undo_state == "requested",
            LedgerEntry.undo_requested_at < now - REQUEST_RETRY,
            Integration.status.in_(ACTIVE),  # a paused one's requests wait for Resume
        )
    ).all()
    return [(str(entry_id), str(mailbox_id)) for entry_id, mailbox_id in rows]
