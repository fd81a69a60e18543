"""Disconnect: the master categories Postroom created in each mailbox, and what a disconnect
did (issue 18)

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-03 07:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "created_master_categories",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "mailbox_id",
            sa.String(36),
            sa.ForeignKey("mailboxes.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("graph_id", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("mailbox_id", "name", name="uq_created_master_categories"),
    )
    op.add_column("integrations", sa.Column("disconnect", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("integrations", "disconnect")
    op.drop_table("created_master_categories")
