"""Postroom test fixtures: a real PostgreSQL, the real web app over HTTP, m365sim over HTTPS.

* ``database``: the embedded PostgreSQL (pgserver) in a temporary directory, or the server in
  ``DATABASE_URL`` when set (CI runs the suite once more against Debian's PostgreSQL); migrated
  once, emptied before each test that asks for ``clean_db``.
* ``postroom``: the FastAPI app served by uvicorn in a thread, configured like a real
  deployment pointed at m365sim (authority, Graph base URL, CA bundle, client id/secret of a
  multi-tenant "Postroom" app registered in the emulator).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import text

import postroom.accounts.models  # noqa: F401  (every table, for TRUNCATE)
import postroom.alerts.models  # noqa: F401
import postroom.integrations.models  # noqa: F401
import postroom.learning.models  # noqa: F401
import postroom.processing.models  # noqa: F401
import postroom.sync.models  # noqa: F401
from m365sim.server import EmulatorServer
from m365sim.store import App
from postroom.db import Database
from postroom.settings import Settings
from postroom.web.app import create_app
from tests.helpers import APPLICATION_ALL, DELEGATED_ALL, SECRET, Org, make_org
from tests.postroom.smtp import INBOX, SmtpServer


@dataclass
class Postroom:
    url: str
    settings: Settings
    app_registration: App
    database: Database
    app: Any = None
    sim: Any = None  # the in-process emulator's EmulatorState
    folder_cache: Any = None  # kept across drains within a test, as a worker process keeps it

    def drain(self) -> int:
        """Run queued jobs (sync, setup, renew) to completion in a worker of this thread;
        returns the number of jobs that were waiting."""
        from postroom.sync.queue import make_runtime

        runtime = make_runtime(self.settings, self.database, self.app.state.box)
        if self.folder_cache is None:
            self.folder_cache = runtime.folder_cache
        runtime.folder_cache = self.folder_cache

        async def run() -> int:
            async with runtime.queue.open_async(), runtime.shared_graph_http():
                waiting = await _waiting_jobs(self.database)
                await runtime.queue.run_worker_async(
                    wait=False,
                    concurrency=1,
                    install_signal_handlers=False,
                    listen_notify=False,
                )
                return waiting

        from postroom.sync import runtime as runtime_module

        previous = runtime_module._current
        runtime_module.install(runtime)
        try:
            return asyncio.run(run())
        finally:
            if previous is not None:
                runtime_module.install(previous)

    def org(self, sim_state: object, *, consent: bool = False) -> Org:
        """A customer tenant in the emulator; ``consent`` pre-grants admin consent."""
        from m365sim.state import EmulatorState

        assert isinstance(sim_state, EmulatorState)
        org = make_org(sim_state, consent=False)
        org.app = self.app_registration
        org.admin.is_admin = True  # type: ignore[attr-defined]
        if consent:
            sim_state.store.grant_admin_consent(org.tenant, self.app_registration)
        return org


async def _waiting_jobs(database: Database) -> int:
    with database.engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'")
            ).scalar_one()
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[SmtpServer]:
    """A real SMTP server (aiosmtpd) on 127.0.0.1: Postroom's emails arrive in its inbox."""
    server = SmtpServer(_free_port(), inbox=INBOX).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postroom_server(
    database: Database,
    sim_server: EmulatorServer,
    smtp_server: SmtpServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Postroom]:
    port = _free_port()
    base = f"http://localhost:{port}"
    store = sim_server.state.store
    home = store.add_tenant(display_name="Postroom Software", domain="postroom-vendor.test")
    registration = store.add_app(
        display_name="Postroom",
        home_tenant_id=home.id,
        redirect_uris=[f"{base}/auth/callback", f"{base}/auth/admin-consent/callback"],
        secret=SECRET,
        delegated_permissions=DELEGATED_ALL,
        application_permissions=APPLICATION_ALL,
    )
    # directory roles (``wids``) in tokens: how Postroom proves an administrator (issue 12)
    registration.group_membership_claims = "DirectoryRole"
    settings = Settings(
        data_dir=Path(tmp_path_factory.mktemp("postroom-data")),
        public_base_url=base,
        ms_client_id=registration.client_id,
        ms_client_secret=SECRET,
        authority_host=sim_server.base_url,
        graph_base_url=f"{sim_server.base_url}/v1.0",
        ca_bundle=sim_server.ca_file,
        smtp_url=smtp_server.url,
    )
    app = create_app(settings, database=database)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="info",
            lifespan="on",
            access_log=True,
            log_config=None,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True, name="postroom")
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("postroom did not start")
        time.sleep(0.02)
    yield Postroom(base, settings, registration, database, app, sim=sim_server.state)
    # pytest's log capture is closing: keep uvicorn's goodbye lines out of closed streams
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.WARNING)
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def postroom(postroom_server: Postroom, clean_db: Database) -> Postroom:
    INBOX.clear()
    postroom_server.folder_cache = None  # a worker's cache starts cold with each test
    return postroom_server


@pytest.fixture
def web(postroom: Postroom, ssl_context: ssl.SSLContext) -> Iterator[httpx.Client]:
    """A browser-like HTTP client for Postroom and m365sim's pages (cookies kept, redirects
    not followed, the emulator's CA trusted)."""
    with httpx.Client(
        base_url=postroom.url, timeout=30, trust_env=False, verify=ssl_context
    ) as client:
        yield client
