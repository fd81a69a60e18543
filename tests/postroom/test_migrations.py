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
