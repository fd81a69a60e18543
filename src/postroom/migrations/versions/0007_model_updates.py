"""model_updates: a correction appends one row instead of rewriting the model's state
(model_states.snapshot_version says which version the stored state is); refits requested by
people run in the background (model_states.refit_requested_at, reset_requested_at)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25 00:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "model_states",
        sa.Column("snapshot_version", sa.Integer(), nullable=False, server_default="0"),
    )
    op.execute("UPDATE model_states SET snapshot_version = version")
    op.add_column(
        "model_states",
        sa.Column("refit_requested_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.add_column(
        "model_states",
        sa.Column("reset_requested_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "model_updates",
        sa.Column(
            "integration_id",
            sa.String(36),
            sa.ForeignKey("model_states.integration_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("version", sa.Integer(), primary_key=True),
        sa.Column("category", sa.String(255), nullable=False),
        sa.Column("example", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    pending = op.get_bind().execute(sa.text("SELECT count(*) FROM model_updates")).scalar()
    if pending:
        raise RuntimeError(
            f"{pending} corrections are only in model_updates (not in any snapshot yet): "
            "retrain every model (Retrain on each Model page) before downgrading"
        )
    op.drop_table("model_updates")
    op.drop_column("model_states", "reset_requested_at")
    op.drop_column("model_states", "refit_requested_at")
    op.drop_column("model_states", "snapshot_version")
