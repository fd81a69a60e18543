"""The ``disconnect_integration`` job's body: what Disconnect does at Microsoft and here.

A person asked for it on the integration's page (:mod:`postroom.integrations.removal`), which
set the status ``disconnecting`` (outside ``ACTIVE``: from then on no sync, backfill, renewal
or undo acts) and recorded the request in ``Integration.disconnect``. This job, in order:

1. cancels the integration's queued jobs (a sync or backfill already running checks the status
   between pages and stops after the page in hand; it never writes the tokens back);
2. deletes Postroom's Graph subscriptions, one by one, each forgotten as soon as it is gone
   (a retry after a crash skips what is done; one Microsoft already forgot counts as gone);
3. only if the person ticked it, deletes from each mailbox's master category list the names
   Postroom itself created there (``created_master_categories``) - never a person's own, never a
   folder, never an email: emails keep the category name, Outlook shows it without a colour;
4. forgets the tokens (the encrypted MSAL cache, the consent record, this process's access
   token), takes every folder out of use, closes open incidents without a "works again"
   message, and records a summary the page shows: what was removed, and what was deliberately
   left.

A token that no longer works (the usual reason to disconnect) is not an error: the
subscriptions it could not delete lapse at Microsoft within three days (their notifications are
ignored: their folders are out of use), and the summary says so. A transient error (429, 5xx)
propagates: the job's retry goes on from where it stopped. Reconnecting later starts every
folder from a fresh baseline (:func:`postroom.integrations.web.restart_after_disconnect`):
mail that arrived meanwhile is not processed, and mail processed before is never processed
again (the ledger remembers it).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.orm import Session

from postroom.alerts.models import Incident
from postroom.crypto import DecryptionFailed
from postroom.graph import GraphClient, GraphError, NotFound, TransientError
from postroom.integrations import service as integrations
from postroom.integrations.graph_access import (
    Connection,
    IntegrationTokens,
    TokenFailure,
    forget_token,
)
from postroom.integrations.models import Integration, Mailbox
from postroom.integrations.statuses import DISCONNECTED, DISCONNECTING
from postroom.processing.models import CreatedMasterCategory, LedgerEntry
from postroom.processing.undo import NOTE_DISCONNECTED
from postroom.sync.engine import _connection, _graph
from postroom.sync.models import FolderSync
from postroom.sync.runtime import Runtime

log = logging.getLogger("postroom.sync")


REQUEST_RETRY = timedelta(minutes=2)
"""A disconnect still unfinished this long after it was asked for is queued again."""


def lost_requests(db: Session, now: datetime) -> list[str]:
    """Integrations still disconnecting :data:`REQUEST_RETRY` after the status was set."""
    return list(
        db.scalars(
            select(Integration.id).where(
                Integration.status == DISCONNECTING,
                Integration.status_changed_at < now - REQUEST_RETRY,
            )
        )
    )


def pending(integration: Integration) -> bool:
    """A disconnect was asked for and has not finished."""
    request = integration.disconnect or {}
    return integration.status == DISCONNECTING and not request.get("done_at")


async def run_disconnect(runtime: Runtime, integration_id: str) -> dict[str, Any] | None:
    """Carry out the integration's disconnect; returns the summary (None: nothing to do)."""
    with runtime.database.session() as db:
        integration = db.get(Integration, integration_id)
        if integration is None or not pending(integration):
            return None
        try:
            connection: Connection | None = _connection(runtime, integration)
        except DecryptionFailed:  # the key changed: the tokens are gone already
            connection = None
        subscriptions = [
            (sync_id, str(subscription_id))
            for sync_id, subscription_id in db.execute(
                select(FolderSync.id, FolderSync.subscription_id).where(
                    FolderSync.integration_id == integration_id,
                    FolderSync.subscription_id.is_not(None),
                )
            ).all()
        ]
        asked = integration.disconnect or {}
        refused = set(asked.get("refused_ids", []))  # tried before this job was retried
        created = [
            row
            for row in (_created(db, integration_id) if asked.get("remove_categories") else [])
            if row["id"] not in refused
        ]
    cancelled = await _cancel_jobs(runtime, integration_id)
    problem: str | None = None
    if connection is None:
        problem = "no_account"
    elif subscriptions or created:
        tokens = IntegrationTokens(runtime.identity, connection)
        try:
            async with _graph(runtime, tokens) as graph:
                for sync_id, subscription_id in subscriptions:
                    await _delete_subscription(runtime, graph, sync_id, subscription_id)
                for row in created:
                    await _remove_category(runtime, graph, integration_id, row)
        except TokenFailure as failure:
            problem = failure.reason.code
            log.info("integration %s: disconnect without a token (%s)", integration_id, problem)
        finally:
            forget_token(runtime.identity, connection)
    with runtime.database.session() as db:
        return _finish(db, integration_id, cancelled=cancelled, problem=problem)


def _created(db: Session, integration_id: str) -> list[dict[str, str]]:
    return [
        {
            "id": row_id,
            "name": name,
            "graph_id": graph_id,
            "mailbox": graph_user_id,
            "address": address,
        }
        for row_id, name, graph_id, graph_user_id, address in db.execute(
            select(
                CreatedMasterCategory.id,
                CreatedMasterCategory.name,
                CreatedMasterCategory.graph_id,
                Mailbox.graph_user_id,
                Mailbox.address,
            )
            .join(Mailbox, Mailbox.id == CreatedMasterCategory.mailbox_id)
            .where(Mailbox.integration_id == integration_id)
            .order_by(Mailbox.address, CreatedMasterCategory.name)
        ).all()
    ]


async def _cancel_jobs(runtime: Runtime, integration_id: str) -> int:
    """Cancel the integration's jobs still waiting in the queue (one running finishes its
    step and stops: the status is outside ACTIVE)."""
    with runtime.database.session() as db:
        ids = list(
            db.execute(
                text(
                    "SELECT j.id FROM procrastinate_jobs j WHERE j.status = 'todo' AND ("
                    " j.args->>'integration_id' = :id"
                    " OR j.args->>'folder_sync_id' IN"
                    "  (SELECT f.id FROM folder_syncs f WHERE f.integration_id = :id)"
                    " OR j.args->>'entry_id' IN (SELECT l.id FROM ledger l JOIN mailboxes m"
                    "  ON m.id = l.mailbox_id WHERE m.integration_id = :id"
                    "  AND l.undo_state = 'requested'))"
                ),
                {"id": integration_id},
            ).scalars()
        )
    cancelled = 0
    for job_id in ids:
        if await runtime.queue.job_manager.cancel_job_by_id_async(int(job_id)):
            cancelled += 1
    return cancelled


async def _delete_subscription(
    runtime: Runtime,
    graph: GraphClient,
    sync_id: str,
    subscription_id: str,
) -> None:
    try:
        await graph.delete_subscription(subscription_id)
    except NotFound:
        pass  # Microsoft forgot it already (expired, or removed): gone is what we want
    except TransientError:
        raise
    except GraphError as exc:
        log.info("folder sync %s: subscription not deleted (%s)", sync_id, type(exc).__name__)
        return  # left to lapse; counted in subscriptions_left
    with runtime.database.session() as db:
        db.execute(
            update(FolderSync)
            .where(FolderSync.id == sync_id)
            .values(subscription_id=None, client_state_hash=None, subscription_expires=None)
        )


async def _remove_category(
    runtime: Runtime, graph: GraphClient, integration_id: str, row: dict[str, str]
) -> None:
    """Delete one master category Postroom created; what happened is recorded at once (with
    the record's removal, in one transaction), so a retry neither repeats nor forgets it."""
    path = f"{graph.mailbox_path(row['mailbox'])}/outlook/masterCategories"
    entry = {"name": row["name"], "mailbox": row["address"]}
    try:
        await graph.request(
            "DELETE",
            f"{path}/{quote(row['graph_id'], safe='')}",
            mailbox=row["mailbox"],
            idempotent=True,
        )
        key, kept = "categories_removed", entry
    except NotFound:
        key, kept = "categories_kept", {**entry, "why": "already_gone"}
    except TransientError:
        raise
    except GraphError as exc:
        key, kept = "categories_kept", {**entry, "why": (exc.code or "refused")[:60]}
    with runtime.database.session() as db:
        integration = db.get(Integration, integration_id, with_for_update=True)
        if integration is None:
            return
        request = dict(integration.disconnect or {})
        request[key] = [*request.get(key, []), kept]
        if key == "categories_removed" or kept.get("why") == "already_gone":
            db.execute(delete(CreatedMasterCategory).where(CreatedMasterCategory.id == row["id"]))
        else:  # refused: kept on record (a later disconnect may try again), not retried now
            request["refused_ids"] = [*request.get("refused_ids", []), row["id"]]
        integration.disconnect = request


def _finish(
    db: Session, integration_id: str, *, cancelled: int, problem: str | None
) -> dict[str, Any]:
    integration = db.get(Integration, integration_id, with_for_update=True)
    if integration is None or not pending(integration):
        return dict(integration.disconnect or {}) if integration is not None else {}
    request = dict(integration.disconnect or {})
    now = datetime.now(UTC)
    left = int(
        db.scalar(
            select(func.count())
            .select_from(FolderSync)
            .where(
                FolderSync.integration_id == integration_id,
                FolderSync.subscription_id.is_not(None),
            )
        )
        or 0
    )
    request["subscriptions_left"] = left
    request["subscriptions_deleted"] = max(0, int(request.get("subscriptions", 0)) - left)
    request["jobs_cancelled"] = int(request.get("jobs_cancelled", 0)) + cancelled
    if problem is not None:
        request["token_problem"] = problem
        if request.get("remove_categories"):
            refused = set(request.get("refused_ids", []))
            request["categories_kept"] = [
                *request.get("categories_kept", []),
                *(
                    {"name": row["name"], "mailbox": row["address"], "why": "no_access"}
                    for row in _created(db, integration_id)
                    if row["id"] not in refused
                ),
            ]
    request.pop("refused_ids", None)
    # An unfinished backfill stops here: after a reconnect it would reach up to the new
    # baseline, processing mail that arrived while disconnected.
    stopped = db.execute(
        update(FolderSync)
        .where(
            FolderSync.integration_id == integration_id,
            FolderSync.backfill_since.is_not(None),
            FolderSync.backfill_finished_at.is_(None),
        )
        .values(backfill_finished_at=now)
    )
    request["backfills_stopped"] = int(getattr(stopped, "rowcount", 0) or 0)
    # Undo requests no job will carry out now (their jobs were cancelled): ended, and said so,
    # instead of "under way" for good. What a run had reversed already stays reversed.
    ended = db.execute(
        update(LedgerEntry)
        .where(LedgerEntry.integration_id == integration_id, LedgerEntry.undo_state == "requested")
        .values(undo_state="failed", undo_note=NOTE_DISCONNECTED)
    )
    request["undos_stopped"] = int(getattr(ended, "rowcount", 0) or 0)
    request["done_at"] = now.isoformat()
    integration.disconnect = request
    integration.token_cache = None
    integration.consent = None
    integrations.set_status(db=db, integration=integration, status=DISCONNECTED)
    db.execute(
        update(FolderSync)
        .where(FolderSync.integration_id == integration_id)
        .values(
            active=False,
            delta_link=None,
            subscription_id=None,
            client_state_hash=None,
            subscription_expires=None,
        )
    )
    db.execute(
        update(Incident)
        .where(Incident.integration_id == integration_id, Incident.resolved_at.is_(None))
        .values(resolved_at=now, resolved_sent=["superseded"])
    )
    log.info(
        "integration %s disconnected: %d subscriptions deleted, %d left to lapse, "
        "%d categories removed",
        integration_id,
        request["subscriptions_deleted"],
        left,
        len(request.get("categories_removed", [])),
    )
    return request
