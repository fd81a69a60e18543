"""alerts: incidents told to a workspace; folder_syncs.last_error (issue 15)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04 13:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "incidents",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("workspace_id", sa.String(length=36), nullable=False),
        sa.Column("integration_id", sa.String(length=36), nullable=False),
        sa.Column("mailbox_id", sa.String(length=36), nullable=True),
        sa.Column("scope", sa.String(length=60), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("code", sa.String(length=60), nullable=False),
        sa.Column("reason", sa.String(length=60), nullable=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("opened_sent", sa.JSON(), nullable=False),
        sa.Column("resolved_sent", sa.JSON(), nullable=False),
        sa.Column("sending_until", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_incidents_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["integrations.id"],
            name=op.f("fk_incidents_integration_id_integrations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["mailbox_id"],
            ["mailboxes.id"],
            name=op.f("fk_incidents_mailbox_id_mailboxes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incidents")),
    )
    op.create_index(op.f("ix_incidents_workspace_id"), "incidents", ["workspace_id"], unique=False)
    op.create_index(
        op.f("ix_incidents_integration_id"), "incidents", ["integration_id"], unique=False
    )
    op.create_index(
        "uq_incidents_open",
        "incidents",
        ["integration_id", "scope", "kind"],
        unique=True,
        postgresql_where=sa.text("resolved_at IS NULL"),
    )
    op.add_column("folder_syncs", sa.Column("last_error", sa.String(length=200), nullable=True))
    op.add_column(
        "folder_syncs", sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("folder_syncs", "last_error_at")
    op.drop_column("folder_syncs", "last_error")
    op.drop_index("uq_incidents_open", table_name="incidents")
    op.drop_index(op.f("ix_incidents_integration_id"), table_name="incidents")
    op.drop_index(op.f("ix_incidents_workspace_id"), table_name="incidents")
    op.drop_table("incidents")
