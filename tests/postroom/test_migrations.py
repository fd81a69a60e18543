"""The migrations build the schema the models describe (alembic's autogenerate finds no
difference), so a column added to a model without a migration fails here, not in production."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from postroom.db import Base, Database


def test_migrations_match_the_models(database: Database) -> None:
    with database.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        differences = [
            d
            for d in compare_metadata(context, Base.metadata)
            if "procrastinate" not in repr(d)  # the job queue's own schema
        ]
    assert differences == []


def test_processes_starting_together_migrate_one_after_another(database: Database) -> None:
    """Web and workers on several machines all run ``migrate`` when they start (docs/deploy.md):
    on an empty database, four at once must all succeed and leave the schema at head once."""
    import threading

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from postroom.db import migrate

    name = "postroom_migrate_race"
    admin = create_engine(database.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        conn.execute(text(f"CREATE DATABASE {name}"))
    engine = create_engine(make_url(database.url).set(database=name), pool_size=5)
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def run() -> None:
        start.wait()
        try:
            migrate(engine)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert errors == []
        with engine.connect() as conn:
            assert len(conn.execute(text("SELECT version_num FROM alembic_version")).all()) == 1
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()
