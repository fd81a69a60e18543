"""A whole Postroom deployment on this machine, for the processing benchmarks and the scale-out
test: m365sim over HTTPS (in this process, so its request counters can be read), the embedded
PostgreSQL, ``postroom web`` and any number of ``postroom worker`` processes on one
``DATABASE_URL`` — the shape of docs/deploy.md, with the emulator in place of Microsoft.

The organization is an organization-wide connection made directly in the database (the wizard
is not what is measured): one tenant with ``mailboxes`` users, the Postroom app consented, and
categories with rules. :meth:`ProcessingEnv.setup` then runs the real setup job (folder syncs,
one change-notification subscription per inbox pointing at the web process's webhook).

Nothing here is imported by Postroom; it imports Postroom and m365sim like a test does.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from m365sim.config import EmulatorConfig
from m365sim.server import EmulatorServer
from m365sim.state import EmulatorState, new_state
from m365sim.store import App, Message, Recipient, Tenant, User

SECRET = "bench-secret-value~0123456789"
APPLICATION = ["Mail.ReadWrite", "Mail.Send", "MailboxSettings.ReadWrite", "User.Read.All"]
INVOICE_RULES = {
    "mode": "any",
    "items": [{"field": "Subject", "operator": "CONTAINS", "value": "invoice"}],
}
VENV_BIN = Path(sys.executable).parent

Counts = Counter[tuple[str, str, str]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class CategorySpec:
    name: str
    folder: str | None
    rules: dict[str, Any] | None = None
    forward_to: tuple[str, ...] = ()
    color: str = "preset7"


@dataclass
class ProcessingEnv:
    """Start with :meth:`start`, end with :meth:`stop` (or use it as a context manager)."""

    mailboxes: int = 1
    emulator: EmulatorConfig | None = None
    quiet: bool = True
    settings: dict[str, str] = field(default_factory=dict)
    """More ``POSTROOM_*`` variables for every process (and :meth:`runtime`)."""
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="postroom-bench-")))
    sim: EmulatorState = field(init=False)
    users: list[User] = field(init=False, default_factory=list)
    tenant: Tenant = field(init=False)
    app: App = field(init=False)
    integration_id: str = field(init=False, default="")
    web_url: str = field(init=False, default="")
    _server: EmulatorServer | None = field(init=False, default=None)
    _web: subprocess.Popen[bytes] | None = field(init=False, default=None)
    workers: list[subprocess.Popen[bytes]] = field(init=False, default_factory=list)
    _db: Any = field(init=False, default=None)

    # ------------------------------------------------------------------ life cycle
    def __enter__(self) -> ProcessingEnv:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.root.chmod(0o755)  # pgserver runs PostgreSQL as its own user when we are root
        sim_dir = self.root / "m365sim"
        sim_dir.mkdir()
        self.sim = new_state(data_dir=sim_dir, config=self.emulator or EmulatorConfig())
        self._server = EmulatorServer(self.sim, tls_dir=sim_dir).start_in_thread()
        self._make_tenant()
        from postroom.db import migrate, open_database
        from postroom.settings import Settings

        (self.root / "data").mkdir()
        (self.root / "data").chmod(0o755)
        # Its own embedded PostgreSQL, also when DATABASE_URL is set (CI's second run): these
        # processes must not share a database with the suite's in-process tests.
        self._db = open_database(Settings(data_dir=self.root / "data", database_url=None))
        migrate(self._db.engine)
        port = free_port()
        self.web_url = f"http://localhost:{port}"
        self._web = self._spawn(["web", "--host", "127.0.0.1", "--port", str(port)], "web")
        self._wait_for_web()

    def stop(self) -> None:
        for proc in [*self.workers, *([self._web] if self._web else [])]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [*self.workers, *([self._web] if self._web else [])]:
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.workers = []
        if self._server is not None:
            self._server.stop()
        if self._db is not None:
            self._db.dispose()
            if self._db.embedded is not None:
                self._db.embedded.cleanup()
        shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------------ processes
    @property
    def database(self) -> Any:
        return self._db

    def environment(self) -> dict[str, str]:
        assert self._server is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("POSTROOM_")}
        env.update(
            {
                "DATABASE_URL": self._db.url,
                "POSTROOM_DATA_DIR": str(self.root / "data"),
                "POSTROOM_PUBLIC_BASE_URL": self.web_url,
                "POSTROOM_MS_CLIENT_ID": self.app.client_id,
                "POSTROOM_MS_CLIENT_SECRET": SECRET,
                "POSTROOM_AUTHORITY_HOST": self._server.base_url,
                "POSTROOM_GRAPH_BASE_URL": f"{self._server.base_url}/v1.0",
                "POSTROOM_CA_BUNDLE": str(self._server.ca_file),
                "POSTROOM_RECONCILE_MINUTES": "60",
                **self.settings,
            }
        )
        return env

    def _spawn(self, args: list[str], name: str) -> subprocess.Popen[bytes]:
        with open(self.root / f"{name}.log", "ab") as log:  # (the child keeps its own copy)
            return subprocess.Popen(
                [str(VENV_BIN / "postroom"), *args],
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def postgres_processes(self) -> list[Any]:
        """The embedded PostgreSQL's processes (psutil), for CPU accounting."""
        import psutil

        embedded = getattr(self._db, "embedded", None)
        if embedded is None:
            return []
        pid_file = Path(embedded.pgdata) / "postmaster.pid"
        try:
            master = psutil.Process(int(pid_file.read_text().split()[0]))
            return [master, *master.children(recursive=True)]
        except (OSError, ValueError, psutil.Error):
            return []

    @property
    def web_pid(self) -> int:
        assert self._web is not None
        return self._web.pid

    def _wait_for_web(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._web is not None
            if self._web.poll() is not None:
                raise RuntimeError(f"postroom web exited: {self.log('web')[-2000:]}")
            try:
                httpx.get(self.web_url + "/login", timeout=2)
                return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("postroom web did not start")

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start_workers(self, count: int, *, concurrency: int = 4) -> list[subprocess.Popen[bytes]]:
        started = []
        for _ in range(count):
            n = len(self.workers)
            proc = self._spawn(["worker", "--concurrency", str(concurrency)], f"worker{n}")
            self.workers.append(proc)
            started.append(proc)
        deadline = time.monotonic() + 60
        for n, proc in enumerate(self.workers):
            while "Postroom worker on" not in self.log(f"worker{n}"):
                if proc.poll() is not None:
                    raise RuntimeError(f"worker {n} exited: {self.log(f'worker{n}')[-2000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"worker {n} did not start")
                time.sleep(0.1)
        return started

    def stop_workers(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.workers = []

    # ------------------------------------------------------------------ organization
    def _make_tenant(self) -> None:
        store = self.sim.store
        self.tenant = store.add_tenant(display_name="Bench", domain="bench.test")
        self.users = [
            store.add_user(
                self.tenant,
                user_principal_name=f"user{n}@bench.test",
                display_name=f"User {n}",
                password="pw",
            )
            for n in range(self.mailboxes)
        ]
        self.app = store.add_app(
            display_name="Postroom",
            home_tenant_id=self.tenant.id,
            redirect_uris=["http://localhost/auth/callback"],
            secret=SECRET,
            delegated_permissions=[],
            application_permissions=APPLICATION,
        )
        store.grant_admin_consent(self.tenant, self.app)

    def connect(self, categories: list[CategorySpec], users: list[User] | None = None) -> str:
        """An organization-wide integration over ``users`` (default: all), connected, with
        ``categories``; returns its id. Run :meth:`setup` next."""
        from postroom.accounts.models import Workspace
        from postroom.integrations.models import Category, Integration, Mailbox

        with self._db.session() as db:
            workspace = Workspace(name="Bench")
            db.add(workspace)
            db.flush()
            integration = Integration(
                workspace_id=workspace.id,
                kind="organization",
                status="connected",
                tenant_id=self.tenant.id,
                granted_scopes=[f"https://graph.microsoft.com/{p}" for p in APPLICATION],
                finished_at=datetime.now(UTC),
                wizard_step=5,
            )
            db.add(integration)
            db.flush()
            for user in users if users is not None else self.users:
                db.add(
                    Mailbox(
                        integration_id=integration.id,
                        graph_user_id=user.id,
                        address=user.user_principal_name,
                        display_name=user.display_name,
                        kind="tenant",
                        folders=[{"key": "inbox"}],
                    )
                )
            for position, spec in enumerate(categories):
                db.add(
                    Category(
                        integration_id=integration.id,
                        name=spec.name,
                        color=spec.color,
                        folder=spec.folder,
                        rules=spec.rules,
                        forward_to=list(spec.forward_to),
                        position=position,
                    )
                )
            self.integration_id = integration.id
        return self.integration_id

    def setup(self, *, timeout: float = 300.0) -> None:
        """The real setup job (folder syncs, subscriptions, first syncs), run by the workers
        when some are running, else in this process."""
        from postroom.sync import jobs

        runtime = self.runtime()

        async def defer() -> None:
            async with runtime.queue.open_async():
                await jobs.defer_setup(runtime, self.integration_id)

        asyncio.run(defer())
        if not self.workers:
            self.drain()
        deadline = time.monotonic() + timeout
        while self.waiting_jobs() and time.monotonic() < deadline:
            time.sleep(0.2)

    # ------------------------------------------------------------------ in-process work
    def runtime(self) -> Any:
        from postroom.crypto import SecretBox, load_or_create_key
        from postroom.settings import Settings

        try:
            from postroom.sync.queue import make_runtime
        except ImportError:  # older layout
            from postroom.sync.runtime import make_runtime  # type: ignore[attr-defined,no-redef]
        env = self.environment()
        settings = Settings(
            data_dir=Path(env["POSTROOM_DATA_DIR"]),
            database_url=env["DATABASE_URL"],
            public_base_url=env["POSTROOM_PUBLIC_BASE_URL"],
            ms_client_id=env["POSTROOM_MS_CLIENT_ID"],
            ms_client_secret=SECRET,
            authority_host=env["POSTROOM_AUTHORITY_HOST"],
            graph_base_url=env["POSTROOM_GRAPH_BASE_URL"],
            ca_bundle=Path(env["POSTROOM_CA_BUNDLE"]),
            **{k.removeprefix("POSTROOM_").lower(): v for k, v in self.settings.items()},
        )
        box = SecretBox(load_or_create_key(None, settings.data_dir / "token.key"))
        return make_runtime(settings, self._db, box)

    def drain(self, runtime: Any = None) -> None:
        """Run every queued job to completion in this process (one worker, concurrency 1)."""
        from postroom.sync import runtime as runtime_module

        runtime = runtime or self.runtime()

        async def run() -> None:
            async with runtime.queue.open_async(), runtime.shared_graph_http():
                await runtime.queue.run_worker_async(
                    wait=False, concurrency=1, install_signal_handlers=False, listen_notify=False
                )

        previous = runtime_module._current
        runtime_module.install(runtime)
        try:
            asyncio.run(run())
        finally:
            if previous is not None:
                runtime_module.install(previous)

    def settle(
        self, *, quiet_for: float = 1.5, timeout: float = 120.0, runtime: Any = None
    ) -> None:
        """Drain (in this process) until no job was queued for ``quiet_for`` seconds: the
        notifications of Postroom's own writes are synced too."""
        deadline = time.monotonic() + timeout
        idle_since = time.monotonic()
        while time.monotonic() < deadline:
            if self.waiting_jobs():
                self.drain(runtime)
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > quiet_for:
                return
            time.sleep(0.1)

    # ------------------------------------------------------------------ database views
    def waiting_jobs(self) -> int:
        with self._db.engine.connect() as conn:
            return int(
                conn.execute(
                    text(
                        "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
                    )
                ).scalar_one()
            )

    def ledger_done(self) -> dict[str, datetime]:
        """message id -> done_at of every finished ledger row."""
        with self._db.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT message_id, done_at FROM ledger WHERE state = 'done'")
            ).all()
        return {str(m): d for m, d in rows}

    def ledger_states(self) -> Counter[str]:
        with self._db.engine.connect() as conn:
            rows = conn.execute(text("SELECT state, count(*) FROM ledger GROUP BY state")).all()
        return Counter({str(s): int(n) for s, n in rows})

    # ------------------------------------------------------------------ mail
    def deliver(
        self,
        user: User,
        *,
        subject: str,
        body: str = "Please find the document attached.",
        categories: list[str] | None = None,
        received: datetime | None = None,
    ) -> Message:
        store = self.sim.store
        mailbox = user.mailbox
        inbox = mailbox.folder("inbox")
        assert inbox is not None
        msg = store.new_message(
            mailbox,
            inbox,
            subject=subject,
            body=body,
            sender=Recipient("Billing", "billing@fabrikam.test"),
            to=[Recipient(user.display_name, user.user_principal_name)],
            received=received,
        )
        msg.categories = list(categories or [])
        return store.insert_message(self.tenant, mailbox, msg)

    def counters(self) -> Counts:
        return Counter(self.sim.counters)

    def requests_since(self, before: Counts, users: list[User]) -> Counts:
        """Requests addressed to these mailboxes since ``before`` (``$batch`` items counted
        one by one, as Graph counts them against a mailbox's limit)."""
        ids = {u.id for u in users}
        now = self.counters()
        return Counter({k: n - before[k] for k, n in now.items() if k[0] in ids and n > before[k]})


def wait_until(predicate: Any, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


class Pacer:
    """Calls at a steady rate from a thread (open loop: late calls are not skipped)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate

    def run(self, count: int, action: Any) -> threading.Thread:
        def loop() -> None:
            start = time.monotonic()
            for n in range(count):
                wait = start + n * self.interval - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                action(n)

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        return thread
