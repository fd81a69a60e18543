"""workspaces: the workspace's own alert webhook, encrypted, and its last failure (issue 15)

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-03 07:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("workspaces", sa.Column("alert_webhook", sa.LargeBinary(), nullable=True))
    op.add_column(
        "workspaces", sa.Column("alert_webhook_error", sa.String(length=200), nullable=True)
    )
    op.add_column(
        "workspaces",
        sa.Column("alert_webhook_error_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    for column in ("alert_webhook_error_at", "alert_webhook_error", "alert_webhook"):
        op.drop_column("workspaces", column)
