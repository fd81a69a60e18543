"""A worker never loses a mailbox for good (two bugs the chaos soak found, issue 15).

**A restart of PostgreSQL does not stop the workers.**

Procrastinate stops its worker when a side task fails; the notification listener fails when it
reconnects to a server that is still shutting down. ``postroom worker`` then exited (and
``postroom serve`` ran on without a worker), so no mail was processed until someone restarted
the process. :func:`postroom.sync.worker.run_worker` starts the job loop again.

Real processes (``postroom web``, ``postroom worker``), m365sim over HTTPS, the embedded
PostgreSQL restarted with ``pg_ctl restart -m fast`` (:mod:`benchmarks.processing_env`).

**A retry gives way to the same job waiting already.** A sync that fails with a retryable
error while a notification has queued the next sync of the same folder (same
``queueing_lock``) made procrastinate's retry violate the queueing lock's unique index; the job
stayed ``doing`` on a live worker with its mailbox's ``lock``, and that mailbox's mail was
never processed again (:class:`postroom.sync.worker.JobManager`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from benchmarks.processing_env import INVOICE_RULES, CategorySpec, ProcessingEnv, wait_until
from benchmarks.soak import restart_postgres
from sqlalchemy import text

from postroom.db import Database
from postroom.graph import TransientError
from postroom.sync import worker as worker_module
from postroom.sync.jobs import RETRY
from postroom.sync.queue import build_queue


@pytest.mark.slow
def test_a_worker_keeps_processing_mail_after_postgresql_restarts() -> None:
    with ProcessingEnv(mailboxes=1) as env:
        if env.database.embedded is None:
            pytest.skip("PostgreSQL from DATABASE_URL: not ours to restart")
        env.connect([CategorySpec("Invoices", "Finance/Invoices", INVOICE_RULES)])
        (proc,) = env.start_workers(1)
        env.setup()
        user = env.users[0]
        before = env.deliver(user, subject="Invoice 1")
        assert wait_until(lambda: before.immutable_id in env.ledger_done(), 60)

        restart_postgres(env)
        after = env.deliver(user, subject="Invoice 2")

        # Before: the worker process exited ("Side task listener failed ... stopping worker").
        assert wait_until(lambda: after.immutable_id in env.ledger_done(), 60), env.log("worker0")[
            -3000:
        ]
        assert proc.poll() is None
        assert "starting it again" in env.log("worker0")
        msg = user.mailbox.messages[after.immutable_id]
        assert msg.categories == ["Invoices"]
        assert user.mailbox.folders[msg.folder_id].display_name == "Invoices"


class _Queue:
    """Stands in for procrastinate's app: its worker ends on its own twice (once returning,
    once raising, as a side-task failure and a failed unregister do), then runs until
    cancelled."""

    def __init__(self) -> None:
        self.runs = 0
        self.cancelled = False

    async def run_worker_async(self, **options: Any) -> None:
        self.runs += 1
        if self.runs == 1:
            return
        if self.runs == 2:
            raise OSError("connection refused")
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled = True
            raise


def test_the_job_loop_runs_again_until_it_is_cancelled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_module, "FIRST_PAUSE", 0.01)
    queue = _Queue()

    async def scenario() -> None:
        task = asyncio.create_task(worker_module.run_worker(queue))  # type: ignore[arg-type]
        for _ in range(500):
            if queue.runs == 3:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert queue.runs == 3
    assert queue.cancelled  # cancelling is the graceful stop it always was


def test_a_drain_is_not_run_again() -> None:
    queue = _Queue()
    asyncio.run(worker_module.run_worker(queue, wait=False))  # type: ignore[arg-type]
    assert queue.runs == 1


def test_a_failed_job_whose_retry_is_already_queued_ends_and_frees_its_lock(
    clean_db: Database,
) -> None:
    queue = build_queue(clean_db)
    locks = {"lock": "mailbox:m1", "queueing_lock": "sync:f1"}
    runs: list[str] = []

    @queue.task(name="test_sync", retry=RETRY)
    async def test_sync(name: str) -> None:
        runs.append(name)
        if name == "first":
            # a notification for the same folder while this sync runs: the next one waits
            await test_sync.configure(**locks).defer_async(name="second")
            raise TransientError("serviceNotAvailable")

    async def scenario() -> None:
        async with queue.open_async():
            await test_sync.configure(**locks).defer_async(name="first")
            await queue.run_worker_async(
                wait=False, concurrency=1, install_signal_handlers=False, listen_notify=False
            )

    asyncio.run(scenario())
    with clean_db.engine.connect() as conn:
        jobs = dict(
            conn.execute(
                text(
                    "SELECT args->>'name', status::text FROM procrastinate_jobs "
                    "WHERE task_name = 'test_sync'"
                )
            ).all()
        )
    # Before: {"first": "doing", "second": "todo"} for good — the mailbox's lock never freed.
    assert jobs == {"first": "failed", "second": "succeeded"}
    assert runs == ["first", "second"]


def test_a_job_that_lost_postgresql_is_retried_and_a_bug_is_not() -> None:
    """A sync that failed because PostgreSQL went away for a moment runs again in seconds
    (it waited for the reconcile's repair, up to a minute); a bug is not retried."""
    import psycopg
    import sqlalchemy.exc
    from procrastinate.jobs import Job

    from postroom.graph import TransientError

    def decision(error: BaseException, attempts: int = 0) -> object:
        job = Job(
            queue="default",
            lock=None,
            queueing_lock=None,
            task_name="sync_folder",
            attempts=attempts,
        )
        return RETRY.get_retry_decision(exception=error, job=job)

    gone = sqlalchemy.exc.OperationalError(
        "SELECT 1", {}, psycopg.OperationalError("server closed the connection unexpectedly")
    )
    for error in (gone, psycopg.OperationalError("connection refused"), TransientError("503")):
        assert decision(error) is not None, error
    assert decision(gone, attempts=RETRY.max_attempts) is None
    assert decision(KeyError("bug")) is None
    assert decision(sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("dup"))) is None
