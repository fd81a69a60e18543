"""ledger message ids keyed with a deployment secret (issue 12)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 15:00:00

``message_key`` in ``ledger``, ``pending_examples`` and ``learning_events`` held the plain
sha256 of the message's internetMessageId. From now on it holds
HMAC-SHA256(deployment secret, that sha256) (:mod:`postroom.processing.message_keys`). A
migration has no access to the secret (it lives outside the database), so it only marks every
existing row ``legacy_key`` (the column's server default: a writer of the old version that
does not know the column is marked too); the periodic reconcile job then rekeys those rows in
place, and lookups accept both forms meanwhile. Exactly-once is untouched: the ledger's unique
key is (mailbox_id, message_id). A partial index finds the legacy rows left without a scan.

Downgrade drops the marker; rows rekeyed since keep their keyed value, which the old version
treats as an opaque key (it never looks ledger rows up by it).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

TABLES = ("ledger", "pending_examples", "learning_events")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(
            table,
            sa.Column("legacy_key", sa.Boolean(), server_default=sa.true(), nullable=False),
        )
        op.create_index(
            f"ix_{table}_legacy_key",
            table,
            ["id"],
            unique=False,
            postgresql_where=sa.text("legacy_key"),
        )


def downgrade() -> None:
    for table in TABLES:
        op.drop_index(f"ix_{table}_legacy_key", table_name=table)
        op.drop_column(table, "legacy_key")
