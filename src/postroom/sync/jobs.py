"""Procrastinate tasks: the job queue only carries hints to look now.

* ``sync_folder`` — one folder's delta (``lock`` per mailbox: one sync per mailbox at a time
  across every worker; ``queueing_lock`` per folder: a burst of notifications is one job);
* ``setup_integration`` — after Finish or a change of mailboxes and folders: folder syncs,
  subscriptions (or polling), first sync; never a backfill (the person starts "Apply to
  existing mail" once their rules and examples exist: ``backfill_folder``, resumable);
* ``renew_subscription`` — extend, or re-create when Graph forgot it;
* ``resume_integration`` — after a reconnect: renew every subscription and catch up at once;
* ``resume_stale_claims`` — emails a dead worker left claimed are read by id and finished;
* ``undo_message`` — the undo a person asked for in the activity view (``lock`` per mailbox;
  a request whose job was lost is queued again by the reconcile);
* ``poll`` (every 15 s) — syncs the folders Microsoft sends no notifications for (a shared
  mailbox on a personal connection; an installation without a public URL) when due: every
  15 s while mail is arriving there (an email in the last 10 minutes), every
  ``poll_interval_seconds`` when quiet (:func:`poll_interval`). A delta call that finds
  nothing costs one request: 40 per folder in 10 minutes at most, against a mailbox budget of
  10,000. Procrastinate defers a periodic task once per tick however many workers run, and
  ``queueing_lock`` per folder keeps a slow sync from piling up behind itself;
* ``reconcile`` (every minute) — polls polling folders, re-syncs any folder not synced within
  the reconcile interval (a lost notification or job costs at most one interval), renews
  subscriptions at half their lifetime, queues unfinished backfills again, and queues
  ``fold_decisions`` for integrations with decisions that stood uncorrected for
  ``learn_after_seconds`` or a model due a retrain;
* ``refit_model`` — rebuilds a model from what people configured after the editor, Retrain or
  Reset asked for it (``lock`` per model, shared with ``fold_decisions``); the reconcile
  re-queues a requested refit whose job was lost;
* ``fold_decisions`` — learns those decisions as examples and retrains the model when enough
  was learned since its last fit, corrections included (``lock`` per model: one at a time).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta

import procrastinate
import psycopg
import sqlalchemy.exc
from procrastinate.exceptions import AlreadyEnqueued
from sqlalchemy import func, or_, select

from postroom.alerts import service as alerts
from postroom.graph import TransientError
from postroom.integrations.models import Integration, Mailbox
from postroom.learning import service as learning
from postroom.processing import message_keys
from postroom.processing.models import LedgerEntry
from postroom.settings import Settings
from postroom.sync import (
    backfill,
    disconnect,
    engine,
    folder_syncs,
    stale_claims,
    stalled,
    undo,
)
from postroom.sync.models import FolderSync
from postroom.sync.runtime import Runtime, current

log = logging.getLogger("postroom.jobs")

RETRY = procrastinate.RetryStrategy(
    max_attempts=6,
    exponential_wait=2,
    # Microsoft's transient answers, and PostgreSQL gone for a moment (a restart, a failover,
    # a dropped connection): a job is safe to run again (the ledger claims each email once),
    # so it retries rather than waiting for the reconcile's repair.
    retry_exceptions={TransientError, sqlalchemy.exc.OperationalError, psycopg.OperationalError},
)


async def _defer(
    runtime: Runtime,
    task: str,
    *,
    queueing_lock: str,
    lock: str | None = None,
    priority: int = 0,
    **arguments: str,
) -> bool:
    """Queue ``postroom:{task}``; False when one with the same ``queueing_lock`` is already
    waiting (a burst of asks is one job)."""
    try:
        await runtime.queue.configure_task(
            f"postroom:{task}", lock=lock, queueing_lock=queueing_lock, priority=priority
        ).defer_async(**arguments)
    except AlreadyEnqueued:
        return False
    return True


async def defer_sync(runtime: Runtime, folder_sync_id: str, mailbox_id: str) -> bool:
    """Ask for a sync of this folder; False when one is already waiting (coalesced)."""
    return await _defer(
        runtime,
        "sync_folder",
        lock=f"mailbox:{mailbox_id}",
        queueing_lock=f"sync:{folder_sync_id}",
        folder_sync_id=folder_sync_id,
    )


async def defer_syncs(
    runtime: Runtime, folders: list[tuple[str, str]]
) -> dict[tuple[str, str], bool]:
    """Ask for a sync of each (folder sync id, mailbox id) with one INSERT; True for those
    queued. The webhook path's burst: one statement instead of one per folder, so a batch of
    notifications does not wait on a round trip per folder. One already waiting (another web
    process queued it since the caller looked) refuses the whole INSERT: then each is asked for
    on its own, and the waiting ones are coalesced as :func:`defer_sync` does."""
    if len(folders) <= 1:
        return {f: await defer_sync(runtime, *f) for f in folders}
    batch = [
        runtime.queue.configure_task(
            "postroom:sync_folder",
            lock=f"mailbox:{mailbox_id}",
            queueing_lock=f"sync:{sync_id}",
        ).make_new_job(folder_sync_id=sync_id)
        for sync_id, mailbox_id in folders
    ]
    try:
        await runtime.queue.job_manager.batch_defer_jobs_async(jobs=batch)
    except AlreadyEnqueued:
        return {f: await defer_sync(runtime, *f) for f in folders}
    return dict.fromkeys(folders, True)


async def defer_setup(runtime: Runtime, integration_id: str) -> None:
    await _defer(
        runtime,
        "setup_integration",
        queueing_lock=f"setup:{integration_id}",
        integration_id=integration_id,
    )


async def defer_renew(runtime: Runtime, folder_sync_id: str, mailbox_id: str) -> None:
    await _defer(
        runtime,
        "renew_subscription",
        lock=f"mailbox:{mailbox_id}",
        queueing_lock=f"renew:{folder_sync_id}",
        folder_sync_id=folder_sync_id,
    )


async def sync_folder(folder_sync_id: str) -> None:
    runtime = current()
    try:
        result = await engine.sync_folder(runtime, folder_sync_id)
    except Exception as exc:  # retried by the queue; the page and a lag alert show the code
        engine.note_sync_error(runtime, folder_sync_id, exc)
        raise
    if result.paused in alerts.STOPPING:
        engine.note_sync_error(runtime, folder_sync_id, result.paused)
    log.info(
        "sync %s: %d processed, %d skipped, %d pages%s",
        folder_sync_id,
        result.processed,
        result.skipped,
        result.pages,
        f", paused ({result.paused})" if result.paused else "",
    )


async def setup_integration(integration_id: str) -> None:
    """After Finish, or after the mailboxes and folders changed: a subscription (or polling)
    for each folder in use that has none yet, and a first sync; subscriptions of folders no
    longer in use are deleted. Existing mail waits for "Apply to existing mail"."""
    runtime = current()
    for sync_id in folder_syncs.create_folder_syncs(runtime, integration_id):
        with runtime.database.session() as db:
            fs = db.get(FolderSync, sync_id)
            mailbox_id = fs.mailbox_id if fs else ""
            subscribed = fs is not None and fs.subscription_id is not None
        if not subscribed and await engine.ensure_subscription(runtime, sync_id) == "paused":
            return  # the token failed: a status, never a retry storm
        await defer_sync(runtime, sync_id, mailbox_id)
    with runtime.database.session() as db:
        unused = folder_syncs.subscriptions_to_drop(db, integration_id)
    for sync_id in unused:
        await folder_syncs.drop_subscription(runtime, sync_id)


async def defer_backfill(runtime: Runtime, folder_sync_id: str, mailbox_id: str) -> None:
    await _defer(
        runtime,
        "backfill_folder",
        lock=f"mailbox:{mailbox_id}",
        queueing_lock=f"backfill:{folder_sync_id}",
        priority=-1,  # new mail first
        folder_sync_id=folder_sync_id,
    )


async def backfill_folder(folder_sync_id: str) -> None:
    runtime = current()
    if await backfill.backfill_folder(runtime, folder_sync_id):
        with runtime.database.session() as db:
            fs = db.get(FolderSync, folder_sync_id)
            mailbox_id = fs.mailbox_id if fs else ""
        await defer_backfill(runtime, folder_sync_id, mailbox_id)


async def renew_subscription(folder_sync_id: str) -> None:
    await engine.renew_subscription(current(), folder_sync_id)


async def defer_resume_stale(runtime: Runtime, folder_sync_id: str, mailbox_id: str) -> bool:
    return await _defer(
        runtime,
        "resume_stale_claims",
        lock=f"mailbox:{mailbox_id}",
        queueing_lock=f"stale:{mailbox_id}",
        folder_sync_id=folder_sync_id,
    )


async def resume_stale_claims(folder_sync_id: str) -> None:
    await stale_claims.resume_stale_claims(current(), folder_sync_id)


async def defer_undo(runtime: Runtime, entry_id: str, mailbox_id: str) -> bool:
    """Queue the undo a person asked for (under the mailbox's lock, like its syncs)."""
    return await _defer(
        runtime,
        "undo_message",
        lock=f"mailbox:{mailbox_id}",
        queueing_lock=f"undo:{entry_id}",
        entry_id=entry_id,
    )


async def undo_message(entry_id: str) -> None:
    await undo.run_undo(current(), entry_id)


async def defer_resume(runtime: Runtime, integration_id: str) -> None:
    await _defer(
        runtime,
        "resume_integration",
        queueing_lock=f"resume:{integration_id}",
        integration_id=integration_id,
    )


async def defer_disconnect(runtime: Runtime, integration_id: str) -> bool:
    return await _defer(
        runtime,
        "disconnect_integration",
        lock=f"disconnect:{integration_id}",  # never two at once (a re-queued one waits)
        queueing_lock=f"disconnect:{integration_id}",
        integration_id=integration_id,
    )


async def disconnect_integration(integration_id: str) -> None:
    await disconnect.run_disconnect(current(), integration_id)


async def resume_integration(integration_id: str) -> None:
    """After a reconnect, a repair by Check connection, or Resume: real time again at once.
    Every folder's subscription is renewed (a renewal also answers a
    ``reauthorizationRequired`` challenge, and one Graph forgot is created again), then a
    catch-up sync runs, and a backfill that a pause stopped carries on from its cursor."""
    runtime = current()
    with runtime.database.session() as db:
        rows = db.execute(
            select(FolderSync.id, FolderSync.mailbox_id).where(
                FolderSync.integration_id == integration_id, FolderSync.active.is_(True)
            )
        ).all()
    for sync_id, mailbox_id in rows:
        mode = await engine.renew_subscription(runtime, sync_id)
        if mode == "paused":
            return  # the token failed again: a status, never a retry storm
        await defer_sync(runtime, sync_id, mailbox_id)
    with runtime.database.session() as db:
        backfills = backfill.unfinished_backfills(db, integration_id)
    for sync_id, mailbox_id in backfills:
        await defer_backfill(runtime, sync_id, mailbox_id)


async def reconcile(timestamp: int) -> None:
    await reconcile_now(current())


POLL_CRON = "* * * * * */15"  # (croniter's sixth field: seconds)
POLL_ACTIVE_SECONDS = 15
POLL_ACTIVE_WINDOW = timedelta(minutes=10)
POLL_SLACK = timedelta(seconds=5)  # a folder synced one tick ago (minus the sync's time) is due


def poll_interval(settings: Settings, last_mail: datetime | None, now: datetime) -> int:
    """Seconds between two looks at a polled folder: every 15 s while mail is arriving (new
    mail processed in its mailbox in the last 10 minutes), the configured interval when quiet."""
    quiet = settings.poll_interval_seconds
    if last_mail is not None and now - last_mail < POLL_ACTIVE_WINDOW:
        return min(POLL_ACTIVE_SECONDS, quiet)
    return quiet


async def poll(timestamp: int) -> None:
    await poll_now(current())


async def poll_now(runtime: Runtime) -> int:
    """Queue a sync of each polled folder that is due (see :func:`poll_interval`); returns
    how many were queued."""
    now = datetime.now(UTC)
    latest = (
        select(func.max(LedgerEntry.claimed_at))
        .where(LedgerEntry.mailbox_id == FolderSync.mailbox_id, LedgerEntry.historical.is_(False))
        .correlate(FolderSync)
        .scalar_subquery()
    )
    with runtime.database.session() as db:
        rows = db.execute(
            select(FolderSync.id, FolderSync.mailbox_id, FolderSync.last_synced_at, latest)
            .join(Integration, Integration.id == FolderSync.integration_id)
            .join(Mailbox, Mailbox.id == FolderSync.mailbox_id)
            .where(
                FolderSync.active.is_(True),
                FolderSync.mode == "polling",
                Integration.status.in_(engine.ACTIVE),
                or_(Mailbox.status != "access_denied", Mailbox.status.is_(None)),
            )
        ).all()
    queued = 0
    for sync_id, mailbox_id, last_synced, last_mail in rows:
        interval = timedelta(seconds=poll_interval(runtime.settings, last_mail, now))
        if last_synced is None or last_synced < now - interval + POLL_SLACK:
            queued += int(await defer_sync(runtime, sync_id, mailbox_id))
    return queued


async def defer_fold(runtime: Runtime, integration_id: str) -> bool:
    return await _defer(
        runtime,
        "fold_decisions",
        lock=f"model:{integration_id}",
        queueing_lock=f"fold:{integration_id}",
        integration_id=integration_id,
    )


async def defer_refit(runtime: Runtime, integration_id: str) -> bool:
    """Ask for the requested refit of an integration's model (see
    :func:`postroom.learning.service.request_refit`); one at a time per model, folds too."""
    return await _defer(
        runtime,
        "refit_model",
        lock=f"model:{integration_id}",
        queueing_lock=f"refit:{integration_id}",
        integration_id=integration_id,
    )


async def refit_model(integration_id: str) -> None:
    """Rebuild a model from what people configured (CPU work, off the event loop)."""
    runtime = current()
    await asyncio.to_thread(refit_now, runtime, integration_id)


def refit_now(runtime: Runtime, integration_id: str) -> bool:
    started = time.monotonic()
    with runtime.database.session() as db:
        done = learning.refit(
            db, integration_id=integration_id, config=learning.classifier_config(runtime.settings)
        )
    if done:
        log.info(
            "integration %s: model refitted in %.1f s", integration_id, time.monotonic() - started
        )
    return done


async def fold_decisions(integration_id: str) -> None:
    """Learn settled decisions, retrain when due (CPU work, off the event loop)."""
    runtime = current()
    await asyncio.to_thread(fold_now, runtime, integration_id)


def fold_now(runtime: Runtime, integration_id: str) -> int:
    settled = datetime.now(UTC) - timedelta(seconds=runtime.settings.learn_after_seconds)
    with runtime.database.session() as db:
        learned = learning.fold(
            db,
            integration_id=integration_id,
            config=learning.classifier_config(runtime.settings),
            settled_before=settled,
            minimum=runtime.settings.learn_minimum_examples,
            decisions=runtime.settings.learn_from_decisions,
        )
    if learned:
        log.info("integration %s: learned %d settled decisions", integration_id, learned)
    return learned


def build_blueprint() -> procrastinate.Blueprint:
    """The tasks, on a fresh blueprint (one per queue app: a blueprint binds to one app)."""
    blueprint = procrastinate.Blueprint()
    blueprint.task(name="sync_folder", retry=RETRY)(sync_folder)
    blueprint.task(name="setup_integration", retry=RETRY)(setup_integration)
    blueprint.task(name="backfill_folder", retry=RETRY)(backfill_folder)
    blueprint.task(name="renew_subscription", retry=RETRY)(renew_subscription)
    blueprint.task(name="resume_integration", retry=RETRY)(resume_integration)
    blueprint.task(name="resume_stale_claims", retry=RETRY)(resume_stale_claims)
    blueprint.task(name="undo_message", retry=RETRY)(undo_message)
    blueprint.task(name="disconnect_integration", retry=RETRY)(disconnect_integration)
    blueprint.task(name="fold_decisions", retry=RETRY)(fold_decisions)
    blueprint.task(name="refit_model", retry=RETRY)(refit_model)
    blueprint.periodic(cron="* * * * *", periodic_id="reconcile")(
        blueprint.task(name="reconcile", queueing_lock="reconcile")(reconcile)
    )
    blueprint.periodic(cron=POLL_CRON, periodic_id="poll")(
        blueprint.task(name="poll", queueing_lock="poll")(poll)
    )
    return blueprint


async def reconcile_now(runtime: Runtime) -> dict[str, int]:
    settings = runtime.settings
    now = datetime.now(UTC)
    poll_due = now - timedelta(seconds=settings.poll_interval_seconds)
    reconcile_due = now - timedelta(minutes=settings.reconcile_minutes)
    renew_due = now + engine.RENEW_WHEN_LEFT
    counts = {"sync": 0, "renew": 0, "fold": 0, "refit": 0, "rekeyed": 0}
    # Jobs a killed worker left running hold their mailbox's lock: give them back first.
    counts["stalled"] = await stalled.recover_stalled_jobs(runtime.queue)
    with runtime.database.session() as db:
        # Message keys written before migration 0011 (plain sha256) become keyed ones.
        counts["rekeyed"] = message_keys.rekey_legacy(db, runtime.message_key_secret)
    with runtime.database.session() as db:
        rows = db.execute(
            select(
                FolderSync.id,
                FolderSync.mailbox_id,
                FolderSync.mode,
                FolderSync.last_synced_at,
                FolderSync.subscription_expires,
            )
            .join(Integration, Integration.id == FolderSync.integration_id)
            .join(Mailbox, Mailbox.id == FolderSync.mailbox_id)
            .where(
                FolderSync.active.is_(True),
                Integration.status.in_(engine.ACTIVE),
                or_(Mailbox.status != "access_denied", Mailbox.status.is_(None)),
            )
        ).all()
    for sync_id, mailbox_id, mode, last, expires in rows:
        due = poll_due if mode == "polling" else reconcile_due
        if last is None or last < due:
            counts["sync"] += int(await defer_sync(runtime, sync_id, mailbox_id))
        if mode == "webhook" and expires is not None and expires < renew_due:
            await defer_renew(runtime, sync_id, mailbox_id)
            counts["renew"] += 1
    # Emails a dead worker left claimed (after the move, no delta page shows them again).
    with runtime.database.session() as db:
        stale = stale_claims.stale_claims(db, now, timedelta(seconds=settings.stale_claim_seconds))
    counts["stale"] = 0
    for sync_id, mailbox_id in stale:
        counts["stale"] += int(await defer_resume_stale(runtime, sync_id, mailbox_id))
    # Undo requests whose job was lost (a worker died, or the queue was unreachable).
    with runtime.database.session() as db:
        standing = undo.standing_requests(db, now)
    counts["undo"] = 0
    for entry_id, mailbox_id in standing:
        counts["undo"] += int(await defer_undo(runtime, entry_id, mailbox_id))
    # Disconnects whose job was lost.
    with runtime.database.session() as db:
        disconnecting = disconnect.lost_requests(db, now)
    counts["disconnect"] = 0
    for integration_id in disconnecting:
        counts["disconnect"] += int(await defer_disconnect(runtime, integration_id))
    with runtime.database.session() as db:
        backfills = backfill.unfinished_backfills(db)
    for sync_id, mailbox_id in backfills:  # a lost job or a pause resumes from the cursor
        await defer_backfill(runtime, sync_id, mailbox_id)
    settled = now - timedelta(seconds=settings.learn_after_seconds)
    with runtime.database.session() as db:
        integrations = learning.integrations_to_fold(
            db, settled, decisions=settings.learn_from_decisions
        )
    for integration_id in integrations:
        counts["fold"] += int(await defer_fold(runtime, integration_id))
    with runtime.database.session() as db:
        asked = learning.integrations_to_refit(db)
    for integration_id in asked:  # (normally deferred by the request that asked)
        counts["refit"] += int(await defer_refit(runtime, integration_id))
    try:  # tell owners and admins what stopped, lags or recovered (postroom.alerts)
        counts["alerts_sent"] = (await alerts.check_now(runtime))["sent"]
    except Exception as exc:  # alerting must never stop the reconcile's repairs
        log.error("alerts: the check failed (%s)", type(exc).__name__)
    return counts
