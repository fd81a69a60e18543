"""Workers as separate processes on the shared database: `postroom worker` processes the queue,
two workers never sync one mailbox at the same time, and SIGTERM lets the running job finish."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from sqlalchemy import select, text, update

from m365sim.state import EmulatorState
from postroom.sync.models import FolderSync
from tests.postroom.conftest import Postroom
from tests.postroom.test_sync import folder_of, setup_personal


def _worker(postroom: Postroom, tmp_path: Path, name: str) -> subprocess.Popen[str]:
    env = dict(os.environ)
    settings = postroom.settings
    env.update(
        {
            "DATABASE_URL": postroom.database.url,
            "POSTROOM_DATA_DIR": str(settings.data_dir),
            "POSTROOM_MS_CLIENT_ID": settings.ms_client_id,
            "POSTROOM_MS_CLIENT_SECRET": settings.ms_client_secret.get_secret_value()  # type: ignore[union-attr]
            if settings.ms_client_secret
            else "",
            "POSTROOM_AUTHORITY_HOST": settings.authority_host,
            "POSTROOM_GRAPH_BASE_URL": settings.graph_base_url,
            "POSTROOM_CA_BUNDLE": str(settings.ca_bundle),
            "POSTROOM_PUBLIC_BASE_URL": settings.public_base_url,
        }
    )
    exe = str(Path(sys.executable).parent / "postroom")
    with open(tmp_path / f"{name}.log", "w") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [exe, "worker", "--concurrency", "2"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )


def _last_worker_id(postroom: Postroom) -> int:
    with postroom.database.engine.connect() as conn:
        last = conn.execute(text("SELECT coalesce(max(id), 0) FROM procrastinate_workers"))
        return int(last.scalar_one())


def _wait_registered(postroom: Postroom, count: int, after: int, timeout: float = 60) -> None:
    """Until ``count`` workers started after worker id ``after`` have registered."""
    deadline = time.monotonic() + timeout
    while True:
        with postroom.database.engine.connect() as conn:
            found = conn.execute(
                text("SELECT count(*) FROM procrastinate_workers WHERE id > :after"),
                {"after": after},
            ).scalar_one()
        if found >= count or time.monotonic() > deadline:
            assert found >= count, f"{found} of {count} workers registered"
            return
        time.sleep(0.1)


def _jobs(postroom: Postroom) -> list[tuple[object, ...]]:
    """Each job's task, status and events (what a failure message shows)."""
    with postroom.database.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT j.task_name, j.status, j.attempts, "
                "array_agg(e.type::text || '@' || to_char(e.at, 'MI:SS.MS') ORDER BY e.at) "
                "FROM procrastinate_jobs j LEFT JOIN procrastinate_events e ON e.job_id = j.id "
                "GROUP BY j.id ORDER BY j.id"
            )
        ).all()
    return [tuple(r) for r in rows]


def _todo(postroom: Postroom) -> int:
    with postroom.database.engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')")
            ).scalar_one()
        )


def test_separate_workers_process_the_queue_and_stop_gracefully(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState, tmp_path: Path
) -> None:
    org = postroom.org(sim)
    setup_personal(web, postroom, org)
    postroom.drain()
    # Every delta call takes 1.5 s: long enough to send SIGTERM while a sync runs.
    sim.faults.add({"path": "/messages/delta", "method": "GET", "latency_ms": 1500})
    registered = _last_worker_id(postroom)
    workers = [_worker(postroom, tmp_path, "a"), _worker(postroom, tmp_path, "b")]
    try:
        # Both workers up first (registered: their SIGTERM handling is installed). A process
        # killed while still importing, on a busy machine, is not what this test is about.
        _wait_registered(postroom, 2, registered)
        msg = org.deliver(org.alice, subject="Invoice during shutdown")
        deadline = time.monotonic() + 60
        started = False
        while time.monotonic() < deadline and not started:
            with postroom.database.engine.connect() as conn:
                started = bool(  # the sync (a reconcile may be running too)
                    conn.execute(
                        text(
                            "SELECT count(*) FROM procrastinate_jobs WHERE status = 'doing' "
                            "AND task_name = 'postroom:sync_folder'"
                        )
                    ).scalar_one()
                )
            time.sleep(0.05)
        assert started, (tmp_path / "a.log").read_text()[-2000:]
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker, name in zip(workers, "ab", strict=True):
            try:
                code = worker.wait(timeout=40)
            except subprocess.TimeoutExpired:
                code = None
            assert code == 0, (tmp_path / f"{name}.log").read_text()[-3000:]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        sim.faults.clear()
    # The job running at SIGTERM was finished, not dropped.
    assert folder_of(org.alice, msg.immutable_id) == "Invoices", _jobs(postroom)
    # Nothing was abandoned half-way (a hint that arrived during shutdown may wait for the
    # next worker: our own label and move notify too).
    with postroom.database.engine.connect() as conn:
        doing = conn.execute(
            text("SELECT count(*) FROM procrastinate_jobs WHERE status = 'doing'")
        ).scalar_one()
    assert doing == 0


def test_two_workers_never_sync_one_mailbox_at_the_same_time(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState, tmp_path: Path
) -> None:
    org = postroom.org(sim)
    setup_personal(web, postroom, org)
    postroom.drain()
    with postroom.database.session() as db:
        fs = db.scalar(select(FolderSync))
        assert fs is not None
        mailbox_id = fs.mailbox_id
    # A second folder of the same mailbox: two sync jobs, one mailbox lock.
    with postroom.database.session() as db:
        db.add(
            FolderSync(
                integration_id=fs.integration_id,
                mailbox_id=mailbox_id,
                folder_key="archive",
                baseline_at=fs.baseline_at,
            )
        )
    with postroom.database.session() as db:
        db.execute(update(FolderSync).values(last_synced_at=None))
    sim.faults.add({"path": "/messages/delta", "method": "GET", "latency_ms": 400})
    in_flight_peak = 0
    workers = [_worker(postroom, tmp_path, "a"), _worker(postroom, tmp_path, "b")]
    try:
        from postroom.sync.jobs import reconcile_now
        from tests.postroom.test_sync import _run

        counts = _run(postroom, reconcile_now)
        assert counts["sync"] == 2
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _todo(postroom):
            key = (postroom.settings.ms_client_id, org.alice.id)
            in_flight_peak = max(in_flight_peak, sim.throttle.in_flight(key))
            with postroom.database.engine.connect() as conn:
                doing = conn.execute(
                    text(
                        "SELECT count(*) FROM procrastinate_jobs WHERE status = 'doing' "
                        "AND lock = :lock"
                    ),
                    {"lock": f"mailbox:{mailbox_id}"},
                ).scalar_one()
            assert doing <= 1
            time.sleep(0.02)
        assert _todo(postroom) == 0
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
        sim.faults.clear()
    with postroom.database.session() as db:
        synced = [f.last_synced_at for f in db.scalars(select(FolderSync))]
    assert all(synced)
