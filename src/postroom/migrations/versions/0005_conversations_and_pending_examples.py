"""conversation memory (keyed hashes only) and pending examples (decisions not yet corrected)

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
    op.create_table(
        "pending_examples",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("integration_id", sa.String(length=36), nullable=False),
        sa.Column("message_key", sa.String(length=64), nullable=False),
        sa.Column("category", sa.String(length=255), nullable=False),
        sa.Column("features", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["integration_id"], ["integrations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("integration_id", "message_key"),
    )
    op.create_index(
        op.f("ix_pending_examples_integration_id"), "pending_examples", ["integration_id"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_pending_examples_integration_id"), table_name="pending_examples")
    op.drop_table("pending_examples")
    op.drop_index("ix_conversation_memory_updated", table_name="conversation_memory")
    op.drop_table("conversation_memory")
