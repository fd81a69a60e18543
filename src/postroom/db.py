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
import stat
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, MetaData, create_engine
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
    # to the statement, which may be a person's input or a token cache.
    engine = create_engine(
        url, pool_pre_ping=True, pool_size=10, max_overflow=10, hide_parameters=True
    )
    return Database(
        engine=engine,
        sessions=sessionmaker(engine, expire_on_commit=False),
        url=url,
        embedded=embedded,
    )


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
