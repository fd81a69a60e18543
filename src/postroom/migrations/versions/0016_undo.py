"""ledger: the move's source and destination folder ids, and Undo's state (issue 18)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02 18:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ledger", sa.Column("source_folder_id", sa.String(512), nullable=True))
    op.add_column("ledger", sa.Column("filed_folder_id", sa.String(512), nullable=True))
    op.add_column("ledger", sa.Column("undo_state", sa.String(20), nullable=True))
    op.add_column("ledger", sa.Column("undo_done", sa.JSON(), nullable=False, server_default="[]"))
    op.add_column("ledger", sa.Column("undo_note", sa.String(200), nullable=True))
    op.add_column(
        "ledger", sa.Column("undo_requested_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("ledger", sa.Column("undone_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_ledger_undo_requested",
        "ledger",
        ["id"],
        postgresql_where=sa.text("undo_state = 'requested'"),
    )


def downgrade() -> None:
    op.drop_index("ix_ledger_undo_requested", table_name="ledger")
    for column in (
        "undone_at",
        "undo_requested_at",
        "undo_note",
        "undo_done",
        "undo_state",
        "filed_folder_id",
        "source_folder_id",
    ):
        op.drop_column("ledger", column)
