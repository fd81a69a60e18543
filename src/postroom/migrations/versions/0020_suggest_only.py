"""categories: Suggest only, per category; ledger: an index of suggested rows (issue 18,
shadow mode), and the plain integration_id index dropped (0019's covers it)

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-03 07:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "categories",
        sa.Column("suggest_only", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    # the integration page's agreement counts read only the suggested rows
    op.create_index(
        "ix_ledger_suggested",
        "ledger",
        ["integration_id"],
        postgresql_where=sa.text("(plan->>'suggested') = 'true'"),
    )
    # ix_ledger_integration_claimed (0019) starts with integration_id: this one is redundant,
    # and one index fewer to keep up to date per email
    op.drop_index("ix_ledger_integration_id", table_name="ledger")


def downgrade() -> None:
    op.create_index("ix_ledger_integration_id", "ledger", ["integration_id"], unique=False)
    op.drop_index("ix_ledger_suggested", table_name="ledger")
    op.drop_column("categories", "suggest_only")
