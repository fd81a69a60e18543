"""model_states.retrain_due (corrections alone make the reconcile queue a retrain) and
conversation_memory.by_person (a conversation a person or a rule filed is always followed)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24 21:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "model_states",
        sa.Column("retrain_due", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column(
        "conversation_memory",
        sa.Column("by_person", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.drop_column("conversation_memory", "by_person")
    op.drop_column("model_states", "retrain_due")
