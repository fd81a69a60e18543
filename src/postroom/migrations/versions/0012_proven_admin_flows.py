"""organization flows bound to a proven administrator (issue 12)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 15:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Flows started before this revision were never bound to a proven administrator: drop
    # them (they live 15 minutes; a person in the middle of one simply starts again).
    op.execute("DELETE FROM oauth_flows WHERE purpose = 'organization'")
    op.add_column("oauth_flows", sa.Column("tenant_id", sa.String(64), nullable=True))


def downgrade() -> None:
    op.drop_column("oauth_flows", "tenant_id")
