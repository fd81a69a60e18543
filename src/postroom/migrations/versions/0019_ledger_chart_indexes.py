"""ledger: indexes for the charts page — the integration's rows by claim time, and its undo
requests by the time they were asked (issue 18, "Charts people read at a glance")

Without them each chart query read every ledger row of the integration (the ledger is never
pruned): 0.55 s at 250,000 rows, growing with its age; with them, the last 35 days' rows only.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-03 08:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_ledger_integration_claimed", "ledger", ["integration_id", "claimed_at"])
    op.create_index(
        "ix_ledger_integration_undo_asked",
        "ledger",
        ["integration_id", "undo_requested_at"],
        postgresql_where=sa.text("undo_requested_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_ledger_integration_undo_asked", table_name="ledger")
    op.drop_index("ix_ledger_integration_claimed", table_name="ledger")
