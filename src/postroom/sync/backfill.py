"""Backfill: historical mail since a date, oldest first, resumable from a cursor, started only
when the person asks ("Apply to existing mail"); exactly once through the ledger like new mail.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from postroom.graph.client import PREFER_TEXT_BODY
from postroom.integrations import service as integrations
from postroom.integrations.graph_access import IntegrationTokens, TokenFailure
from postroom.integrations.models import Integration, Mailbox
from postroom.sync.engine import (
    ACTIVE,
    SYNC_SELECT,
    PageModel,
    _graph,
    _pause,
    _resolve_folder,
    _save,
    _store_cache,
    load_work,
    message_view,
    process_message,
    still_active,
)
from postroom.sync.models import FolderSync
from postroom.sync.runtime import Runtime

log = logging.getLogger("postroom.sync")

# ---------------------------------------------------------------------- backfill
BACKFILL_PAGE = 50


@dataclass
class BackfillProgress:
    done: int
    total: int | None
    finished: bool
    rate_per_minute: float | None
    eta_seconds: float | None


def backfill_progress(fs: FolderSync, now: datetime | None = None) -> BackfillProgress | None:
    """done/total, rate and ETA of a folder's backfill, from its row (pure)."""
    if fs.backfill_since is None:
        return None
    now = now or datetime.now(UTC)
    rate = None
    eta = None
    if fs.backfill_started_at is not None and fs.backfill_done:
        minutes = max((now - fs.backfill_started_at).total_seconds() / 60, 1 / 60)
        rate = fs.backfill_done / minutes
        if fs.backfill_total is not None and rate > 0 and fs.backfill_finished_at is None:
            eta = max(fs.backfill_total - fs.backfill_done, 0) / rate * 60
    return BackfillProgress(
        done=fs.backfill_done,
        total=fs.backfill_total,
        finished=fs.backfill_finished_at is not None,
        rate_per_minute=rate,
        eta_seconds=eta,
    )


async def backfill_folder(runtime: Runtime, sync_id: str, *, max_pages: int = 20) -> bool:
    """Process historical mail since the chosen date, oldest first, one bounded slice per job.
    Returns True when more remains (the caller re-queues). Resumes from the stored cursor;
    the ledger makes re-reading the boundary message harmless. Historical mail is labelled
    and filed; it is forwarded only if the person opted in."""
    work = load_work(runtime, sync_id)
    with runtime.database.session() as db:
        fs = db.get(FolderSync, sync_id)
        integration = db.get(Integration, fs.integration_id) if fs else None
        if fs is None or integration is None or fs.backfill_since is None:
            return False
        if fs.backfill_finished_at is not None:
            return False
        cursor = fs.backfill_cursor or fs.backfill_since
        total = fs.backfill_total
        forward_history = bool(
            (integration.wizard_data or {}).get("backfill", {}).get("forward_history")
        )
        if fs.backfill_started_at is None:
            fs.backfill_started_at = datetime.now(UTC)
        if integration.status == "connected":
            integrations.set_status(db=db, integration=integration, status="backfilling")
    if work is None or work.status not in ACTIVE:
        return False
    tokens = IntegrationTokens(runtime.identity, work.connection)
    more = True
    try:
        async with _graph(runtime, tokens) as graph:
            if work.folder_id is None:
                work.folder_id = await _resolve_folder(graph, work)
                _save(runtime, sync_id, folder_id=work.folder_id)
            path = f"{graph.mailbox_path(work.mailbox)}/mailFolders/{work.folder_id}/messages"
            until = _stamp(work.baseline)

            def window(since: datetime) -> str:
                return f"receivedDateTime ge {_stamp(since)} and receivedDateTime lt {until}"

            if total is None:
                _, counted, _ = await graph.request(
                    "GET",
                    path,
                    mailbox=work.mailbox,
                    params={
                        "$filter": window(cursor),
                        "$count": "true",
                        "$top": "1",
                        "$select": "id",
                    },
                )
                total = int(counted.get("@odata.count", 0))
                _save(runtime, sync_id, backfill_total=total)

            def query(since: datetime) -> dict[str, str]:
                return {
                    "$filter": window(since),
                    "$orderby": "receivedDateTime asc",
                    "$top": str(BACKFILL_PAGE),
                    "$select": SYNC_SELECT,
                }

            url: str | None = path
            params: dict[str, str] | None = query(cursor)
            looked_at: set[str] = set()  # ids read again at the boundary are not counted twice
            pages = 0
            while url and pages < max_pages:
                if pages and still_active(runtime, work.integration_id) is not None:
                    break  # paused or disconnected meanwhile: the cursor keeps the place
                _, page, _ = await graph.request(
                    "GET",
                    url,
                    mailbox=work.mailbox,
                    params=params,
                    headers={"Prefer": PREFER_TEXT_BODY},  # SYNC_SELECT has the body
                )
                params = None
                pages += 1
                seen = 0
                last = cursor
                model = PageModel(
                    page.get("value", []), runtime=runtime, work=work, historical=True
                )
                for data in page.get("value", []):
                    # Mail already in the ledger (a run before, or real-time processing) is
                    # passed over by the claim: never acted on twice.
                    await process_message(
                        runtime,
                        graph,
                        work,
                        data,
                        historical=True,
                        forward_historical=forward_history,
                        page=model,
                    )
                    message_id = str(data.get("id", ""))
                    seen += message_id not in looked_at
                    looked_at.add(message_id)
                    received = message_view(data).received
                    if received is not None and received > last:
                        last = received
                url = page.get("@odata.nextLink")
                if url is not None and _stamp(last) > _stamp(cursor):
                    # Filed mail leaves the folder, and Graph's nextLink is an offset ($skip)
                    # into what is left: following it would pass over as many emails as were
                    # just moved (half of a fully filed history). Ask again from the newest
                    # date seen; the ledger passes over the few read twice at the boundary.
                    url, params = path, query(last)
                cursor = last
                # progress counts the emails looked at, so done reaches total on a second run
                _save(
                    runtime,
                    sync_id,
                    backfill_cursor=last,
                    backfill_done=FolderSync.backfill_done + seen,
                )
            if url is None:
                more = False
                _save(runtime, sync_id, backfill_finished_at=datetime.now(UTC))
                _backfill_finished(runtime, work.integration_id)
    except TokenFailure as failure:
        _pause(runtime, work.integration_id, failure)
        return False
    finally:
        if tokens.new_cache:
            _store_cache(runtime, work.integration_id, tokens.new_cache)
    return more


def _backfill_finished(runtime: Runtime, integration_id: str) -> None:
    """Back to Connected once every folder's backfill is done."""
    with runtime.database.session() as db:
        settle_backfill_status(db, integration_id)


def settle_backfill_status(db: Session, integration_id: str) -> None:
    """ "Backfilling" ends when no folder in use has a backfill left (finished, or its folder
    was taken out of the integration)."""
    integration = db.get(Integration, integration_id)
    if (
        integration is not None
        and integration.status == "backfilling"
        and not backfill_pending(db, integration_id)
    ):
        integrations.set_status(db=db, integration=integration, status="connected")


def backfill_pending(db: Session, integration_id: str) -> bool:
    """Whether a run of "Apply to existing mail" is still going in a folder in use."""
    return (
        db.scalar(
            select(FolderSync.id)
            .where(
                FolderSync.integration_id == integration_id,
                FolderSync.active.is_(True),
                FolderSync.watch.is_(False),
                FolderSync.backfill_since.is_not(None),
                FolderSync.backfill_finished_at.is_(None),
            )
            .limit(1)
        )
        is not None
    )


class BackfillRunning(Exception):
    """A run of "Apply to existing mail" is still going; start the next when it is done."""


def start_backfill(db: Session, integration_id: str, since: datetime) -> list[tuple[str, str]]:
    """Start "Apply to existing mail" from ``since`` in every folder in use: each folder's
    window is [``since``, its baseline) — everything older than real-time processing — read
    oldest first from a fresh cursor. Mail already in the ledger (from an earlier run or from
    real-time processing) is passed over by the claim, so running it again is exactly once.
    Returns the (folder sync id, mailbox row id) pairs to queue. Raises
    :class:`BackfillRunning` while an earlier run is unfinished (its cursor would be lost)."""
    if backfill_pending(db, integration_id):
        raise BackfillRunning()
    rows = list(
        db.scalars(
            select(FolderSync).where(
                FolderSync.integration_id == integration_id,
                FolderSync.active.is_(True),
                FolderSync.watch.is_(False),
            )
        )
    )
    for fs in rows:
        fs.backfill_since = since
        fs.backfill_cursor = None
        fs.backfill_total = None
        fs.backfill_done = 0
        fs.backfill_started_at = None
        fs.backfill_finished_at = None
    db.flush()
    return [(fs.id, fs.mailbox_id) for fs in rows]


def unfinished_backfills(db: Session, integration_id: str | None = None) -> list[tuple[str, str]]:
    """Folders in use whose backfill is unfinished, in integrations that run (the reconcile
    queues them again: a lost job or a pause resumes from the cursor; Resume does at once, for
    its ``integration_id``)."""
    query = (
        select(FolderSync.id, FolderSync.mailbox_id)
        .join(Integration, Integration.id == FolderSync.integration_id)
        .where(
            FolderSync.active.is_(True),
            FolderSync.watch.is_(False),
            FolderSync.backfill_since.is_not(None),
            FolderSync.backfill_finished_at.is_(None),
            Integration.status.in_(ACTIVE),
        )
    )
    if integration_id is not None:
        query = query.where(FolderSync.integration_id == integration_id)
    return [(sync_id, mailbox_id) for sync_id, mailbox_id in db.execute(query).all()]


def folder_progress(runtime_db: Any, integration_id: str) -> list[tuple[FolderSync, str, Any]]:
    """(folder sync, mailbox address, backfill progress) for an integration's page."""
    rows = runtime_db.execute(
        select(FolderSync, Mailbox.address)
        .join(Mailbox, Mailbox.id == FolderSync.mailbox_id)
        .where(FolderSync.integration_id == integration_id)
        .order_by(Mailbox.address, FolderSync.folder_key)
    ).all()
    return [(fs, address, backfill_progress(fs)) for fs, address in rows]


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
