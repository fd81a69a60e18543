"""conversation memory: where each conversation's mail went last (keyed hashes only)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 19:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "conversation_memory",
        sa.Column("integration_id", sa.String(length=36), nullable=False),
        sa.Column("key_hash", sa.LargeBinary(length=16), nullable=False),
        sa.Column("category", sa.String(length=255), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["integration_id"], ["integrations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("integration_id", "key_hash"),
    )
    op.create_index(
        "ix_conversation_memory_updated", "conversation_memory", ["integration_id", "updated_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_conversation_memory_updated", table_name="conversation_memory")
    op.drop_table("conversation_memory")
