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
from tests.postroom.test_sync import folder_of, setup_personal, wait_for_jobs


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
    workers = [_worker(postroom, tmp_path, "a"), _worker(postroom, tmp_path, "b")]
    try:
        msg = org.deliver(org.alice, subject="Invoice during shutdown")
        assert wait_for_jobs(postroom) >= 1
        deadline = time.monotonic() + 20
        started = False
        while time.monotonic() < deadline and not started:
            with postroom.database.engine.connect() as conn:
                started = bool(
                    conn.execute(
                        text("SELECT count(*) FROM procrastinate_jobs WHERE status = 'doing'")
                    ).scalar_one()
                )
            time.sleep(0.05)
        assert started, (tmp_path / "a.log").read_text()[-2000:]
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            assert worker.wait(timeout=40) == 0
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
        sim.faults.clear()
    # The job running at SIGTERM was finished, not dropped.
    assert folder_of(org.alice, msg.immutable_id) == "Invoices"
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
