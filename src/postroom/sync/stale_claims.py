"""Emails a dead worker left ``claimed``: found by the reconcile, finished by a job.

A worker SIGKILLed (or a machine lost) between a Graph action and its ledger record leaves
the row ``claimed``. When the action was the move, the email has left the synced folder and
no delta page brings it back, so nothing else would finish it. After
``POSTROOM_STALE_CLAIM_SECONDS`` the reconcile (:func:`postroom.sync.jobs.reconcile_now`)
queues :func:`resume_stale_claims` for the mailbox, under the mailbox's lock like every sync.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, text

from postroom.graph import AccessDenied, NotFound
from postroom.integrations.graph_access import IntegrationTokens, TokenFailure
from postroom.integrations.models import Integration, Mailbox
from postroom.processing.executor import settle
from postroom.processing.models import LedgerEntry
from postroom.sync.engine import (
    ACTIVE,
    SYNC_SELECT,
    _graph,
    _mailbox_status,
    _pause,
    _store_cache,
    load_work,
    process_message,
)
from postroom.sync.models import FolderSync
from postroom.sync.runtime import Runtime

log = logging.getLogger(__name__)


def stale_claims(db: Any, now: datetime, stale_after: timedelta) -> list[tuple[str, str]]:
    """(folder sync id, mailbox row id) per mailbox with ledger rows still ``claimed`` long
    after a worker claimed them (``stale_after``, ``POSTROOM_STALE_CLAIM_SECONDS``): the worker
    died between an action and its record, and when the action was the move the email has left
    the folder, so no delta page brings it back."""
    rows = db.execute(
        select(FolderSync.id, FolderSync.mailbox_id)
        .join(LedgerEntry, LedgerEntry.mailbox_id == FolderSync.mailbox_id)
        .join(Integration, Integration.id == FolderSync.integration_id)
        .join(Mailbox, Mailbox.id == FolderSync.mailbox_id)
        .where(
            LedgerEntry.state == "claimed",
            or_(
                LedgerEntry.claimed_at < now - stale_after,
                text("ledger.plan->>'went_live' = 'true'"),
            ),
            FolderSync.active.is_(True),
            FolderSync.watch.is_(False),
            Integration.status.in_(ACTIVE),
            or_(Mailbox.status != "access_denied", Mailbox.status.is_(None)),
        )
        .order_by(FolderSync.mailbox_id, FolderSync.id)
    ).all()
    first: dict[str, str] = {}
    for sync_id, mailbox_id in rows:
        first.setdefault(mailbox_id, sync_id)  # one job per mailbox
    return [(sync_id, mailbox_id) for mailbox_id, sync_id in first.items()]


async def resume_stale_claims(runtime: Runtime, sync_id: str, *, limit: int = 50) -> int:
    """Finish ledger rows of this folder sync's mailbox that a dead worker left ``claimed``
    (run under the mailbox's lock, so no live sync holds them): read each message by its
    immutable id and process it again; the executor skips what is recorded and checks the
    mailbox before repeating a step whose record was lost. Also the suggestions a person asked
    to file on Go live (:mod:`postroom.sync.shadow`). Returns how many were resumed."""
    work = load_work(runtime, sync_id)
    if work is None or work.status not in ACTIVE:
        return 0
    cutoff = datetime.now(UTC) - timedelta(seconds=runtime.settings.stale_claim_seconds)
    with runtime.database.session() as db:
        rows = db.execute(
            select(LedgerEntry.id, LedgerEntry.message_id, LedgerEntry.historical)
            .where(
                LedgerEntry.mailbox_id == work.mailbox_row_id,
                LedgerEntry.state == "claimed",
                # a suggestion to file after Go live (sync.shadow) does not wait
                or_(LedgerEntry.claimed_at < cutoff, text("ledger.plan->>'went_live' = 'true'")),
            )
            .order_by(LedgerEntry.claimed_at)
            .limit(limit)
        ).all()
    resumed = 0
    tokens = IntegrationTokens(runtime.identity, work.connection)
    try:
        async with _graph(runtime, tokens) as graph:
            for entry_id, message_id, historical in rows:
                try:
                    data = await graph.message(work.mailbox, message_id, select=SYNC_SELECT)
                except NotFound:
                    settle(runtime.database, entry_id, "skipped", "not_found")
                    continue
                await process_message(
                    runtime, graph, work, data, historical=bool(historical), resumed=True
                )
                resumed += 1
    except TokenFailure as failure:
        _pause(runtime, work.integration_id, failure)
    except AccessDenied as denied:
        reason = "policy_denied" if denied.by_policy else "mailbox_access_denied"
        _mailbox_status(runtime, work.mailbox_row_id, "access_denied", reason)
    finally:
        if tokens.new_cache:
            _store_cache(runtime, work.integration_id, tokens.new_cache)
    if resumed:
        log.info("folder sync %s: resumed %d emails left claimed", sync_id, resumed)
    return resumed
