"""Jobs of a worker that died: given back, so no mailbox waits behind them.

A worker that is killed (SIGKILL, out of memory, a lost machine) leaves its running jobs in
``doing``. Procrastinate never runs them again by itself, and a ``doing`` job keeps its
``lock``: every later sync of that mailbox (``lock`` = ``mailbox:<id>``) would wait behind it
for good. Workers send a heartbeat every 10 s; :func:`recover_stalled_jobs` (run by the
reconcile, every minute, on whichever worker gets it) finds the ``doing`` jobs of workers
silent for :data:`STALLED_AFTER` seconds, ends each ``failed`` (which frees its lock) and queues
the same task again with the same locks. That is safe because a job is only a hint to look
now (ARCHITECTURE.md): a sync repeats from the stored delta link, and the ledger makes every
action it repeats happen once.
"""

from __future__ import annotations

import logging

import procrastinate
from procrastinate.exceptions import AlreadyEnqueued
from procrastinate.jobs import Status

log = logging.getLogger("postroom.jobs")

STALLED_AFTER = 30.0  # seconds without a heartbeat (workers send one every 10 s)


async def recover_stalled_jobs(
    app: procrastinate.App, *, seconds_since_heartbeat: float = STALLED_AFTER
) -> int:
    """End the ``doing`` jobs of silent workers and queue them again; returns how many."""
    manager = app.job_manager
    stalled = await manager.get_stalled_jobs(seconds_since_heartbeat=seconds_since_heartbeat)
    recovered = 0
    for job in stalled:
        assert job.id is not None
        await manager.finish_job_by_id_async(job.id, Status.FAILED, delete_job=False)
        recovered += 1
        if job.queueing_lock is None:
            continue  # a periodic tick (reconcile, poll): the next tick does its work
        try:
            await app.configure_task(
                job.task_name,
                lock=job.lock,
                queueing_lock=job.queueing_lock,
                priority=job.priority,
            ).defer_async(**job.task_kwargs)
        except AlreadyEnqueued:
            pass  # the same work is queued already
        log.warning("job %s (%s) of a stopped worker queued again", job.id, job.task_name)
    return recovered
