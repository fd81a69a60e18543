"""The job loop of ``postroom worker`` and ``postroom serve``: restarted when the database
drops it, and never left holding a job whose retry could not be queued.

Procrastinate stops its worker as soon as one of its side tasks fails: the notification
listener, the heartbeat or the periodic deferrer. A restart or failover of PostgreSQL does
exactly that — the listener reconnects at once, finds the server still shutting down, and the
worker ends (found by the chaos soak, ``benchmarks/soak.py``). ``postroom worker`` then exited
and ``postroom serve`` kept answering web requests with no worker at all, so mail stopped
until someone restarted the process.

:func:`run_worker` runs procrastinate's worker again after a pause (1 s, doubling up to 30 s,
back to 1 s once a run lasted a minute) until it is cancelled; cancelling it is the graceful
stop it was before (running jobs finish within the grace). Nothing is lost in between: a job
is only a hint, and the jobs of a run that could not unregister are given back by the reconcile
(:mod:`postroom.sync.stalled`).

:class:`JobManager` (installed by :func:`postroom.sync.queue.build_queue`) fixes the other way
a worker lost a mailbox for good, also found by the soak. A job that fails with a retryable
error is put back to ``todo`` by procrastinate; when another job with the same
``queueing_lock`` is already waiting (a notification for the same folder came meanwhile),
that update violates the queueing lock's unique index, procrastinate's job task dies with it
and the job stays ``doing`` on a live worker — holding its mailbox's ``lock``, so no later sync
of that mailbox ever ran, and the stalled-job recovery never saw it (the worker's heartbeat is
fresh). Upstream: procrastinate issues #1446 and #1543 (open). Here the retry gives way: the
job ends ``failed`` and the waiting one, the same work, runs instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import procrastinate
from procrastinate import exceptions, manager
from procrastinate.jobs import Job, Status

log = logging.getLogger("postroom.worker")

FIRST_PAUSE = 1.0
MAX_PAUSE = 30.0
HEALTHY_RUN = 60.0  # seconds: a run this long resets the pause


async def run_worker(queue: procrastinate.App, **options: Any) -> None:
    """``queue.run_worker_async(**options)``, run again whenever it ends on its own."""
    me = asyncio.current_task()
    pause = FIRST_PAUSE
    while True:
        started = time.monotonic()
        try:
            await queue.run_worker_async(**options)
            why = "a side task failed"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the database went away under it
            why = type(exc).__name__
        if me is not None and me.cancelling():
            raise asyncio.CancelledError  # asked to stop while it was shutting down
        if not options.get("wait", True):
            return  # a drain: it ends when the queue is empty
        if time.monotonic() - started >= HEALTHY_RUN:
            pause = FIRST_PAUSE
        log.warning("the job worker stopped (%s); starting it again in %.0f s", why, pause)
        await asyncio.sleep(pause)
        pause = min(pause * 2, MAX_PAUSE)


class JobManager(manager.JobManager):
    """procrastinate's job manager, whose retry gives way to a job already waiting with the
    same queueing lock (see the module docstring)."""

    async def retry_job(self, job: Job, *args: Any, **kwargs: Any) -> None:
        try:
            await super().retry_job(job, *args, **kwargs)
        except exceptions.UniqueViolation as exc:
            if exc.constraint_name != manager.QUEUEING_LOCK_CONSTRAINT:
                raise
            log.info("job %s: the same work is waiting already; not retried", job.id)
            await self.finish_job(job=job, status=Status.FAILED, delete_job=False)
