"""learning: model states, learning events, category examples, watched folders

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 15:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "folder_syncs",
        sa.Column("watch", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.create_table(
        "model_states",
        sa.Column("integration_id", sa.String(length=36), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("needs_review", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(["integration_id"], ["integrations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("integration_id"),
    )
    op.create_table(
        "learning_events",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("integration_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("category", sa.String(length=255), nullable=False),
        sa.Column("predicted", sa.String(length=255), nullable=True),
        sa.Column("decided_by", sa.String(length=20), nullable=True),
        sa.Column("message_key", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["integration_id"], ["integrations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_learning_events_integration_id"), "learning_events", ["integration_id"]
    )
    op.create_table(
        "category_examples",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("integration_id", sa.String(length=36), nullable=False),
        sa.Column("category_id", sa.String(length=36), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["category_id"], ["categories.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["integration_id"], ["integrations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_category_examples_category_id"), "category_examples", ["category_id"])
    op.create_index(
        op.f("ix_category_examples_integration_id"), "category_examples", ["integration_id"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_category_examples_integration_id"), table_name="category_examples")
    op.drop_index(op.f("ix_category_examples_category_id"), table_name="category_examples")
    op.drop_table("category_examples")
    op.drop_index(op.f("ix_learning_events_integration_id"), table_name="learning_events")
    op.drop_table("learning_events")
    op.drop_table("model_states")
    op.drop_column("folder_syncs", "watch")
