"""Alembic environment: run migrations on the connection Postroom hands over (db.migrate)."""

from __future__ import annotations

from alembic import context

import postroom.accounts.models  # noqa: F401  (register tables)
import postroom.accounts.sessions  # noqa: F401
import postroom.accounts.throttle  # noqa: F401
import postroom.alerts.models  # noqa: F401
import postroom.integrations.models  # noqa: F401
import postroom.learning.models  # noqa: F401
import postroom.processing.models  # noqa: F401
import postroom.sync.models  # noqa: F401
from postroom.db import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through postroom.db.migrate()")

context.configure(connection=connection, target_metadata=Base.metadata, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
