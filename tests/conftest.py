"""Shared fixtures: one running emulator over real HTTPS for the whole session.

Each test gets a fresh organization (:func:`org`), so tests are isolated without restarting the
server; faults and configuration are reset after every test.
"""

from __future__ import annotations

import os
import shutil
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

import postroom.accounts.models  # noqa: F401  (every table, for TRUNCATE)
import postroom.alerts.models  # noqa: F401
import postroom.integrations.models  # noqa: F401
import postroom.learning.models  # noqa: F401
import postroom.processing.models  # noqa: F401
import postroom.sync.models  # noqa: F401
from m365sim.config import EmulatorConfig
from m365sim.server import EmulatorServer
from m365sim.state import EmulatorState, new_state
from postroom.db import Base, Database, migrate, open_database
from postroom.settings import Settings
from tests.helpers import Org, make_org


@pytest.fixture(scope="session")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("m365sim")


@pytest.fixture(scope="session")
def sim_server(sim_dir: Path) -> Iterator[EmulatorServer]:
    state = new_state(data_dir=sim_dir)
    server = EmulatorServer(state, tls_dir=sim_dir).start_in_thread()
    yield server
    server.stop()


@pytest.fixture
def sim(sim_server: EmulatorServer) -> Iterator[EmulatorState]:
    state = sim_server.state
    yield state
    state.clock.reset()  # a test that moved time on must not age the next test's tokens
    state.faults.clear()
    state.config.__dict__.update(EmulatorConfig().__dict__)


@pytest.fixture
def ca_file(sim_server: EmulatorServer) -> Path:
    return sim_server.ca_file


@pytest.fixture
def base_url(sim_server: EmulatorServer) -> str:
    return sim_server.base_url


@pytest.fixture
def graph_url(base_url: str) -> str:
    return f"{base_url}/v1.0"


@pytest.fixture
def org(sim: EmulatorState) -> Org:
    return make_org(sim)


@pytest.fixture(scope="session")
def ssl_context(sim_server: EmulatorServer) -> ssl.SSLContext:
    """Trusts the emulator's local CA (and nothing from the environment)."""
    return ssl.create_default_context(cafile=str(sim_server.ca_file))


@pytest.fixture
def http(sim_server: EmulatorServer, ssl_context: ssl.SSLContext) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=sim_server.base_url, verify=ssl_context, timeout=10, trust_env=False
    ) as client:
        yield client


# ---------------------------------------------------------------------- PostgreSQL (Postroom)
@pytest.fixture(scope="session")
def database() -> Iterator[Database]:
    # Not under pytest's 0700 tmp tree: as root, pgserver runs PostgreSQL as its own user,
    # which must be able to reach the data directory.
    data_dir = Path(tempfile.mkdtemp(prefix="postroom-test-db-"))
    data_dir.chmod(0o755)
    settings = Settings(data_dir=data_dir, database_url=os.environ.get("DATABASE_URL") or None)
    db = open_database(settings)
    if settings.database_url:
        # a shared server: start from an empty schema
        with db.engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    migrate(db.engine)
    yield db
    db.dispose()
    if db.embedded is not None:
        db.embedded.cleanup()
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def clean_db(database: Database) -> Database:
    tables = ", ".join(
        [t.name for t in reversed(Base.metadata.sorted_tables)]
        + ["procrastinate_jobs", "procrastinate_events", "procrastinate_periodic_defers"]
    )
    with database.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} CASCADE"))
    return database
