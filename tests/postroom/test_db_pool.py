"""The connection pool pings only a connection that may be dead (``postroom.db.ping_when_idle``).

SQLAlchemy's ``pool_pre_ping`` pinged on every checkout, a round trip per transaction; a busy
worker now makes none, and a connection the server ended while it sat in the pool is still
replaced before anyone uses it. Real PostgreSQL: the session's test server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from postroom.db import Database, ping_when_idle


@pytest.fixture
def engine(database: Database) -> Iterator[Engine]:
    made = create_engine(database.url, pool_size=2, max_overflow=0, pool_use_lifo=True)
    ping_when_idle(made)
    yield made
    made.dispose()


def _pings(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    seen: list[int] = []
    real = engine.dialect.do_ping

    def counted(dbapi_connection: Any) -> bool:
        seen.append(1)
        return real(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    return seen


def _backend(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_a_busy_connection_is_not_pinged(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _backend(engine)  # a new connection: pinged once, then warm
    pings = _pings(engine, monkeypatch)
    assert {_backend(engine) for _ in range(50)} == {first}
    assert pings == []


def test_a_connection_the_server_ended_is_replaced_before_use(
    engine: Engine, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = _backend(engine)
    pings = _pings(engine, monkeypatch)
    with database.engine.connect() as admin:
        admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": victim})
        admin.commit()
    time.sleep(0.3)  # the server's goodbye reaches the idle connection's socket
    # used a moment ago, so only its socket tells: without the check this statement failed
    after = _backend(engine)
    assert after != victim
    assert 1 <= len(pings) <= 2  # the dead one (and the new one, a first checkout)


def test_a_long_idle_connection_is_pinged(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = create_engine(database.url, pool_size=1, max_overflow=0)
    ping_when_idle(made, idle_seconds=0.2)
    try:
        first = _backend(made)
        pings = _pings(made, monkeypatch)
        time.sleep(0.3)
        assert _backend(made) == first  # alive: pinged, kept
        assert pings == [1]
    finally:
        made.dispose()
