"""Issue 15, metrics and health: ``/metrics`` in Prometheus format behind a bearer token, its
counters moving as mail is processed for real (m365sim over HTTPS, the webhook, the queue), its
labels free of addresses and mail content; ``/readyz`` with a real worker's heartbeat."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy import select, text

from m365sim.identity import events
from m365sim.state import EmulatorState
from postroom import metrics
from postroom.integrations.models import Integration
from postroom.sync.models import FolderSync
from tests.postroom.conftest import Postroom
from tests.postroom.test_sync import folder_of, setup_personal, wait_for_jobs

TOKEN = "scrape-me-" + "x" * 24
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(web: httpx.Client) -> tuple[Samples, str]:
    response = web.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text[:500]
    assert response.headers["content-type"].startswith("text/plain")
    found: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found, response.text


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of ``name`` whose labels include ``labels``."""
    return sum(
        v for (n, found), v in samples.items() if n == name and set(labels.items()) <= set(found)
    )


@contextlib.contextmanager
def token_configured(postroom: Postroom) -> Iterator[None]:
    """The running app with ``POSTROOM_METRICS_TOKEN`` set (its settings swapped meanwhile)."""
    state = postroom.app.state
    original = state.settings
    state.settings = original.model_copy(update={"metrics_token": SecretStr(TOKEN)})
    try:
        yield
    finally:
        state.settings = original


@pytest.fixture
def metrics_on(postroom: Postroom) -> Iterator[Postroom]:
    with token_configured(postroom):
        yield postroom


def test_metrics_is_404_without_a_token_and_401_without_the_right_one(
    web: httpx.Client, postroom: Postroom
) -> None:
    assert web.get("/metrics").status_code == 404
    with token_configured(postroom):
        assert_refused_without_the_token(web)
    assert web.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404


def assert_refused_without_the_token(web: httpx.Client) -> None:
    assert web.get("/metrics").status_code == 401
    for header in (f"Bearer {TOKEN}x", "Bearer x", f"Basic {TOKEN}", TOKEN):
        refused = web.get("/metrics", headers={"Authorization": header})
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert "postroom_" not in refused.text
    assert web.get("/metrics", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200


def test_counters_move_as_mail_is_processed(
    web: httpx.Client, metrics_on: Postroom, sim: EmulatorState
) -> None:
    postroom = metrics_on
    org = postroom.org(sim)
    setup_personal(web, postroom, org, forward_to=org.bob.user_principal_name)
    postroom.drain()
    before, _ = scrape(web)

    # Two emails through the real webhook: one a rule files (and forwards), one nobody decides.
    # The first delta read is throttled once (429, Retry-After 1 s).
    sim.faults.add(
        {
            "path": "/messages/delta",
            "method": "GET",
            "status": 429,
            "retry_after": 1,
            "count": 1,
        }
    )
    invoice = org.deliver(org.alice, subject="Invoice 5150 from Contoso Widgets")
    org.deliver(org.alice, subject="Lunch at the harbour on Friday?")
    assert wait_for_jobs(postroom) >= 1
    # A spoofed notification and a malformed body.
    with postroom.database.session() as db:
        fs = db.scalar(select(FolderSync))
        assert fs is not None and fs.subscription_id
        subscription_id = fs.subscription_id
    spoofed = web.post(
        "/webhooks/graph",
        json={"value": [{"subscriptionId": subscription_id, "clientState": "guessed"}]},
    )
    assert spoofed.status_code == 202
    malformed = web.post(
        "/webhooks/graph", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert malformed.status_code == 400
    postroom.drain()
    sim.faults.clear()
    assert folder_of(org.alice, invoice.immutable_id) == "Invoices"

    after, exposition = scrape(web)

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    emails = "postroom_emails_processed_total"
    assert delta(emails, outcome="done", decided_by="rule") == 1
    assert delta(emails, outcome="done", decided_by="none") == 1
    assert delta(emails) == 2
    requests = "postroom_graph_requests_total"
    assert delta(requests, family="delta", method="GET", status="429") == 1
    assert delta(requests, family="delta", method="GET", status="200") >= 1
    assert (
        delta(requests, family="move", method="POST", status="200")
        + delta(requests, family="move", method="POST", status="201")
        == 1
    )
    assert delta(requests, family="forward", method="POST") == 1
    assert delta(requests, family="send", method="POST") == 1
    assert delta("postroom_graph_request_duration_seconds_count", family="delta") >= 2
    assert delta("postroom_graph_throttle_delay_seconds_count", family="delta") == 1
    assert delta("postroom_graph_throttle_delay_seconds_sum", family="delta") == pytest.approx(1)
    webhooks = "postroom_webhook_notifications_total"
    assert delta(webhooks, result="accepted") >= 1
    assert delta(webhooks, result="spoofed") == 1
    assert delta(webhooks, result="malformed") == 1
    assert delta("postroom_job_duration_seconds_count", task="sync_folder", result="ok") >= 1

    # State read from PostgreSQL at scrape time.
    with postroom.database.session() as db:
        integration = db.scalar(select(Integration))
        assert integration is not None
        integration_id = integration.id
    assert value(after, "postroom_database_up") == 1
    assert value(after, "postroom_integrations", status="connected") == 1
    lag = value(after, "postroom_sync_lag_seconds", integration=integration_id)
    assert 0 <= lag < 60
    assert ("postroom_sync_lag_seconds", (("integration", integration_id),)) in after
    # a queued job shows in the queue depth
    org.deliver(org.alice, subject="Invoice 5151")
    assert wait_for_jobs(postroom) >= 1
    queued, _ = scrape(web)
    assert value(queued, "postroom_queue_jobs", task="sync_folder", status="todo") >= 1
    postroom.drain()

    # No address, subject or other content in any label value.
    for (_, labels), _v in after.items():
        for _key, label in labels:
            assert "@" not in label
            assert "Contoso" not in label and "harbour" not in label.lower()
    assert "Contoso" not in exposition and "alice" not in exposition.lower()


def test_token_refresh_failures_are_counted_by_reason(
    web: httpx.Client, metrics_on: Postroom, sim: EmulatorState
) -> None:
    postroom = metrics_on
    org = postroom.org(sim)
    setup_personal(web, postroom, org)
    postroom.drain()
    before, _ = scrape(web)
    events.revoke_sign_in_sessions(sim, org.alice)
    sim.clock.advance(3700)  # the cached access token expires; the refresh is refused
    org.deliver(org.alice, subject="Invoice while disconnected")
    wait_for_jobs(postroom)
    postroom.drain()
    after, _ = scrape(web)
    name = "postroom_token_refresh_failures_total"
    assert (
        value(after, name, reason="sessions_revoked")
        - value(before, name, reason="sessions_revoked")
        >= 1
    )
    assert value(after, "postroom_integrations", status="needs_reconnect") == 1


def test_endpoint_families_carry_no_ids_or_names() -> None:
    cases = {
        "/users/alice@contoso.test/mailFolders/AAMk%3D/messages/delta": "delta",
        "https://graph.test/v1.0/users/x/mailFolders('a')/messages/delta?$deltatoken=z": "delta",
        "/users/alice@contoso.test/messages/AAMkAD==/move": "move",
        "/me/messages/AAMk/createForward": "forward",
        "/users/u/messages/AAMk/send": "send",
        "/users/u/messages/AAMk": "messages",
        "/users/u/mailFolders/inbox/childFolders": "folders",
        "/users/u/outlook/masterCategories": "categories",
        "/subscriptions/1234": "subscriptions",
        "/$batch": "batch",
        "/users/alice@contoso.test": "directory",
        "/me": "directory",
        "/something/else": "other",
    }
    for path, family in cases.items():
        assert metrics.endpoint_family(path) == family, path
    assert metrics.decider("model", ("model:A:0.9>=0.6", "via:conversation")) == "conversation"
    assert metrics.decider("model", ("model:A:0.9>=0.6",)) == "model"
    assert metrics.decider("whatever") == "none"


# -- /readyz -----------------------------------------------------------------------------------
def test_readyz_needs_the_database_at_head_and_a_worker_heartbeat(
    web: httpx.Client, postroom: Postroom, tmp_path: Path
) -> None:
    from tests.postroom.test_workers import _worker

    assert web.get("/healthz").status_code == 200
    with postroom.database.engine.begin() as conn:
        conn.execute(text("DELETE FROM procrastinate_workers"))
    idle = web.get("/readyz")
    assert idle.status_code == 503
    body = idle.json()
    assert body["status"] == "not ready"
    assert body["checks"]["database"]["ok"] and body["checks"]["migrations"]["ok"]
    assert body["checks"]["worker"] == {"ok": False, "detail": "no worker is running"}

    worker = _worker(postroom, tmp_path, "ready")
    try:
        deadline = time.monotonic() + 60
        ready = web.get("/readyz")
        while ready.status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.25)
            ready = web.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "ready"

        # a schema behind this version's newest migration: not ready
        with postroom.database.engine.begin() as conn:
            head = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
            conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
        try:
            behind = web.get("/readyz")
            assert behind.status_code == 503
            assert behind.json()["checks"]["migrations"]["ok"] is False
        finally:
            with postroom.database.engine.begin() as conn:
                conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": head})
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    # the worker unregistered on its way out: not ready again
    assert web.get("/readyz").status_code == 503


def test_readyz_and_metrics_answer_when_the_database_does_not(
    postroom: Postroom, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database that cannot be reached: /readyz 503 and /metrics postroom_database_up 0,
    never a 500."""
    from sqlalchemy import create_engine

    from postroom.db import Database
    from postroom.web.health import readiness

    dead = create_engine(
        "postgresql+psycopg://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 2}
    )
    database = Database(engine=dead, sessions=None, url="")  # type: ignore[arg-type]
    checks = readiness(database, postroom.settings)
    assert checks["database"]["ok"] is False and checks["worker"]["ok"] is False
    samples: Samples = {}
    registry = metrics.database_registry(database)
    for family in text_string_to_metric_families(metrics.exposition(registry).decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    assert value(samples, "postroom_database_up") == 0
    dead.dispose()


def test_a_separate_worker_serves_its_own_counters(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState, tmp_path: Path
) -> None:
    """``postroom worker --metrics-port``: the worker's counters (jobs, Graph, emails) on its
    own port, behind the same bearer token."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    org = postroom.org(sim)
    setup_personal(web, postroom, org)
    postroom.drain()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = postroom.settings
    env = dict(os.environ)
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
            "POSTROOM_METRICS_TOKEN": TOKEN,
        }
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    exe = str(Path(sys.executable).parent / "postroom")
    with open(tmp_path / "worker.log", "w") as log:
        worker = subprocess.Popen(
            [exe, "worker", "--concurrency", "2", "--metrics-port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        invoice = org.deliver(org.alice, subject="Invoice 8080 for the worker")
        deadline = time.monotonic() + 60
        while folder_of(org.alice, invoice.immutable_id) != "Invoices":
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-2000:]
            time.sleep(0.2)
        with httpx.Client(trust_env=False, timeout=10) as client:
            assert client.get(url).status_code == 401
            samples: Samples = {}
            while time.monotonic() < deadline:
                response = client.get(url, headers={"Authorization": f"Bearer {TOKEN}"})
                assert response.status_code == 200
                samples = {
                    (s.name, tuple(sorted(s.labels.items()))): s.value
                    for f in text_string_to_metric_families(response.text)
                    for s in f.samples
                }
                if total(samples, "postroom_job_duration_seconds_count", task="sync_folder"):
                    break
                time.sleep(0.2)
        name = "postroom_emails_processed_total"
        assert value(samples, name, outcome="done", decided_by="rule") == 1
        assert total(samples, "postroom_graph_requests_total", family="move") == 1
        assert total(samples, "postroom_job_duration_seconds_count", task="sync_folder") >= 1
        assert "postroom_sync_lag_seconds" not in response.text  # (the web's /metrics has it)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()


def test_multiprocess_mode_adds_up_every_process_on_the_machine(tmp_path: Path) -> None:
    """With PROMETHEUS_MULTIPROC_DIR (web and workers on one machine), one scrape sees the
    counters of every process, added up — also of a process that has exited."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    count = "from postroom import metrics; metrics.email_processed('done', 'model')"
    for _ in range(2):  # two "workers"
        subprocess.run([sys.executable, "-c", count], env=env, check=True, timeout=60)
    scrape = (
        "from postroom import metrics; "
        "print(metrics.exposition(metrics.process_registry()).decode())"
    )
    shown = subprocess.run(
        [sys.executable, "-c", scrape],
        env=env,
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    ).stdout
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(shown)
        for s in f.samples
    }
    name = "postroom_emails_processed_total"
    assert value(samples, name, outcome="done", decided_by="model") == 2
