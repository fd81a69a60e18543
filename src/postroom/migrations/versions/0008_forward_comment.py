"""categories.forward_comment: the comment Postroom puts above a forwarded email

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25 02:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "categories",
        sa.Column("forward_comment", sa.Text(), nullable=False, server_default=""),
    )


def downgrade() -> None:
    op.drop_column("categories", "forward_comment")
