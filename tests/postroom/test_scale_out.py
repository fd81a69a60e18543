"""Scale-out, shown (issue 14): three ``postroom worker`` processes on one PostgreSQL share 50
mailboxes under a steady stream of mail; one is SIGKILLed while it runs a job. Every email is
processed exactly once (one ledger row, one label, in its folder) and none is stuck: the dead
worker's job, which held its mailbox's lock, is given back by the reconcile
(:mod:`postroom.sync.stalled`) once the worker's heartbeat is 30 s old, and an email it had
claimed but not finished (perhaps already moved out of the synced folder, so no delta page
brings it back) is read by id and finished once its claim is ``POSTROOM_STALE_CLAIM_SECONDS``
old (:func:`postroom.sync.stale_claims.resume_stale_claims`).

Before: the killed worker's job stayed ``doing`` for good, and with it the lock of its mailbox:
that mailbox's later syncs never ran and its new mail was never processed.

Real processes (``postroom web``, three ``postroom worker``), m365sim over HTTPS, the embedded
PostgreSQL (:mod:`benchmarks.processing_env`, the benchmarks' deployment).
"""

from __future__ import annotations

import asyncio
import signal
import time
from urllib.parse import unquote

import pytest
from benchmarks.processing_env import INVOICE_RULES, CategorySpec, Pacer, ProcessingEnv, wait_until
from sqlalchemy import text

from postroom.sync.stalled import STALLED_AFTER

pytestmark = pytest.mark.slow

MAILBOXES = 50
STALE_CLAIM = 15  # seconds (POSTROOM_STALE_CLAIM_SECONDS; 600 by default)
RATE = 8.0  # emails per second
SECONDS = 15.0


def _worker_ids(env: ProcessingEnv) -> set[int]:
    with env.database.engine.connect() as conn:
        return {
            int(i) for i in conn.execute(text("SELECT id FROM procrastinate_workers")).scalars()
        }


def _running_on(env: ProcessingEnv, worker_id: int, *, or_none: bool = False) -> int:
    """Jobs ``doing`` on this worker; ``or_none``: also those left with no worker (a live
    worker may prune a dead one's row before a reconcile gives its jobs back)."""
    owner = "(worker_id = :w OR worker_id IS NULL)" if or_none else "worker_id = :w"
    with env.database.engine.connect() as conn:
        return int(
            conn.execute(
                text(f"SELECT count(*) FROM procrastinate_jobs WHERE status = 'doing' AND {owner}"),
                {"w": worker_id},
            ).scalar_one()
        )


def test_three_workers_share_fifty_mailboxes_and_a_killed_one_loses_nothing() -> None:
    settings = {"POSTROOM_STALE_CLAIM_SECONDS": str(STALE_CLAIM)}
    with ProcessingEnv(mailboxes=MAILBOXES, settings=settings) as env:
        env.connect([CategorySpec("Invoices", "Finance/Invoices", INVOICE_RULES)])
        victim = env.start_workers(1)[0]
        assert wait_until(lambda: len(_worker_ids(env)) == 1, 30)
        (victim_id,) = _worker_ids(env)
        env.start_workers(2)
        env.setup()

        sent: list[str] = []
        count = int(RATE * SECONDS)
        stream = Pacer(RATE).run(
            count,
            lambda n: sent.append(
                env.deliver(env.users[n % MAILBOXES], subject=f"Invoice {n}").immutable_id
            ),
        )
        time.sleep(SECONDS / 3)
        # SIGKILL the first worker while it runs a job (it holds that mailbox's lock). A job
        # takes milliseconds, so it is frozen first (SIGSTOP) and killed only if it still runs
        # one; else it goes on and is caught at its next job (a job seen running could finish
        # between the look and the kill: the kill then tested nothing).
        deadline = time.monotonic() + 30
        while True:
            assert time.monotonic() < deadline, "the first worker ran no job to kill it in"
            if not wait_until(lambda: _running_on(env, victim_id) > 0, 5, 0.005):
                continue
            victim.send_signal(signal.SIGSTOP)
            time.sleep(0.05)  # (a commit already sent lands before the look)
            if _running_on(env, victim_id) > 0:
                break
            victim.send_signal(signal.SIGCONT)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        killed_at = time.monotonic()
        stream.join()

        held = _running_on(env, victim_id)
        assert held >= 1  # the dead worker's job, with its mailbox's lock

        # The reconcile (every minute on a live worker) gives the job back once the dead
        # worker's heartbeat is STALLED_AFTER seconds old; run it now rather than wait a tick.
        # An email the dead worker had claimed (perhaps moved, but not yet recorded) is finished
        # by the same reconcile once its claim is STALE_CLAIM seconds old (< STALLED_AFTER).
        time.sleep(max(0.0, killed_at + STALLED_AFTER + 2 - time.monotonic()))
        from postroom.sync.jobs import reconcile_now

        runtime = env.runtime()

        async def reconcile() -> dict[str, int]:
            async with runtime.queue.open_async():
                return await reconcile_now(runtime)

        # Under load the dead worker's heartbeat may need a few more seconds to count as old.
        # A live worker's own reconcile tick may give the job back first: a dead worker's job
        # leaves ``doing`` only that way, whoever ran it.
        # (A live worker may also prune the dead one's row, which leaves its job ``doing``
        # with no worker: that counts as still held.)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            asyncio.run(reconcile())
            if _running_on(env, victim_id, or_none=True) == 0:
                break
            time.sleep(5)
        assert _running_on(env, victim_id, or_none=True) == 0, (
            "the dead worker's job was not given back"
        )

        assert wait_until(
            lambda: len(env.ledger_done().keys() & set(sent)) == len(sent), 60, 0.5
        ), env.ledger_states()

        # exactly once: one ledger row each, done; one label; filed
        with env.database.engine.connect() as conn:
            rows = conn.execute(text("SELECT message_id, state FROM ledger")).all()
        by_message = {}
        for message_id, state in rows:
            assert message_id not in by_message, "two ledger rows for one email"
            by_message[message_id] = state
        assert all(by_message[m] == "done" for m in sent)
        patches: dict[str, int] = {}
        for record in list(env.sim.request_log):
            if record.method == "PATCH" and record.status == 200:
                message_id = unquote(record.path.rsplit("/", 1)[-1])
                patches[message_id] = patches.get(message_id, 0) + 1
        for user_index, message_id in enumerate(sent):
            mailbox = env.users[user_index % MAILBOXES].mailbox
            msg = mailbox.messages[message_id]
            assert msg.categories == ["Invoices"]
            assert mailbox.folders[msg.folder_id].display_name == "Invoices"
        assert {m: patches.get(m, 0) for m in sent} == dict.fromkeys(sent, 1)

        # none stuck: nothing left running or waiting once the stream is done
        assert wait_until(lambda: env.waiting_jobs() == 0, 30, 0.5)
        assert sum(1 for d in env.sim.store.deletions) == 0
