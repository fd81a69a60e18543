"""PostgreSQL: the embedded default, the engine, short sessions and migrations.

* :func:`open_database` uses ``settings.database_url`` when set; otherwise it starts an embedded
  PostgreSQL from the ``pgserver`` wheel in ``<data_dir>/pg`` (the same engine as production,
  nothing to install) and :meth:`Database.dispose` stops it (so does the process's exit).
* :func:`session_scope` is the one way to talk SQL: commit on success, roll back on error, and
  never held across a network call (read from Graph first, then open a short session to write).
* :func:`migrate` brings the schema to the newest Alembic revision.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import select
import stat
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, MetaData, create_engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from postroom.settings import Settings

log = logging.getLogger("postroom.db")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


@dataclass
class Database:
    engine: Engine
    sessions: sessionmaker[Session]
    url: str
    embedded: Any = None  # the pgserver handle when embedded

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        with session_scope(self.sessions) as session:
            yield session

    @contextlib.contextmanager
    def statement(self) -> Iterator[Connection]:
        """A connection without a transaction (autocommit), for one statement that is a
        transaction on its own: one round trip where ``BEGIN`` + statement + ``COMMIT`` take
        three. Only for a single statement; anything else uses :meth:`session`."""
        with self.engine.connect() as connection:
            yield connection.execution_options(isolation_level="AUTOCOMMIT")

    def dispose(self) -> None:
        """Close the connections and let go of the embedded PostgreSQL: pgserver stops it when
        the last process that started or joined it lets go (also on SIGTERM: see the CLI)."""
        self.engine.dispose()
        if self.embedded is not None:
            embedded, self.embedded = self.embedded, None
            embedded.cleanup()


@contextlib.contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def start_embedded(data_dir: Path, *, cleanup_mode: str | None = "stop") -> tuple[str, Any]:
    """Start (or join) the embedded PostgreSQL in ``data_dir/pg``; return (url, handle)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on servers
        import pgserver  # type: ignore[import-untyped,unused-ignore]

    pg_dir = (data_dir / "pg").resolve()
    pg_dir.parent.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0 and not _reachable_by_others(pg_dir.parent):
        # As root, pgserver runs PostgreSQL as its own unprivileged user, which cannot enter
        # a private directory (e.g. under /root). Keep the cluster in a reachable place.
        digest = hashlib.sha256(str(pg_dir).encode()).hexdigest()[:12]
        fallback = Path("/var/tmp") / f"postroom-pg-{digest}"
        fallback.mkdir(mode=0o755, exist_ok=True)
        log.warning("%s is not reachable by the PostgreSQL user; using %s", pg_dir, fallback)
        pg_dir = fallback / "pg"
    server = pgserver.get_server(pg_dir, cleanup_mode=cleanup_mode)  # type: ignore[attr-defined]
    uri: str = server.get_uri()
    return uri.replace("postgresql://", "postgresql+psycopg://", 1), server


def _reachable_by_others(path: Path) -> bool:
    for part in [path, *path.parents]:
        try:
            if not part.stat().st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


def normalize_url(url: str) -> str:
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def open_database(settings: Settings) -> Database:
    embedded = None
    if settings.database_url:
        url = normalize_url(settings.database_url)
    else:
        url, embedded = start_embedded(settings.data_dir)
    # hide_parameters: an error's text (in a log or a traceback) never carries the values bound
    # to the statement, which may be a person's input or a token cache. LIFO: the connections
    # in use stay few and warm, the rest idle (and are pinged before their next use).
    engine = create_engine(
        url, pool_size=10, max_overflow=10, pool_use_lifo=True, hide_parameters=True
    )
    ping_when_idle(engine)
    return Database(
        engine=engine,
        sessions=sessionmaker(engine, expire_on_commit=False),
        url=url,
        embedded=embedded,
    )


IDLE_PING_SECONDS = 10.0
"""A pooled connection idle longer than this is pinged before it is handed out, whatever its
socket says."""


def ping_when_idle(engine: Engine, idle_seconds: float = IDLE_PING_SECONDS) -> None:
    """Pessimistic disconnect handling that costs a busy process nothing. SQLAlchemy's
    ``pool_pre_ping`` pings on *every* checkout: a round trip per transaction, 12 % of a
    worker's time under load. A server that ends a connection (a restart, a failover, an
    ``idle_session_timeout``, a proxy) tells the client first: an error message, then the
    socket closes, so the idle connection's socket turns readable. Here a connection is pinged
    only when its socket has something to read (a healthy idle connection has nothing) or it
    sat idle for ``idle_seconds`` (a peer gone without a word); the check itself is one
    ``select`` with no wait. A dead connection is replaced before use (``DisconnectionError``:
    the pool connects anew), as with ``pool_pre_ping``."""
    from sqlalchemy import event, exc

    @event.listens_for(engine, "checkin")
    def _checked_in(dbapi_connection: Any, record: Any) -> None:
        record.info["checked_in"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.get("checked_in")
        if since is not None and time.monotonic() - since < idle_seconds:
            if not _has_news(dbapi_connection):
                return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:  # unusable, whatever the reason: the pool connects anew
            raise exc.DisconnectionError() from error


def _has_news(dbapi_connection: Any) -> bool:
    """Whether an idle connection's socket has something to read (or cannot be checked)."""
    try:
        readable, _, _ = select.select([dbapi_connection.fileno()], [], [], 0)
    except (OSError, ValueError, AttributeError):
        return True  # closed, or not a socket we can watch: ping it
    return bool(readable)


MIGRATION_LOCK = 0x706F7374726F6F6D  # "postroom": the advisory lock migrations take


def migrate(engine: Engine) -> None:
    """Upgrade the schema to the newest revision (idempotent). Several processes starting at
    once (web and workers on several machines, docs/deploy.md) take turns: a transaction-level
    advisory lock serializes them, and the later ones find the schema already at head."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as connection:
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
