"""Incidents: one row per problem Postroom told (or will tell) a workspace about.

``scope`` names what stopped: ``integration``, or ``mailbox:<mailbox id>``; at most one open
incident per (integration, scope, kind). ``opened_sent`` and ``resolved_sent`` record the
channels a message went out on (``email:<user id>``, ``webhook`` for the operator's webhook,
``webhook:workspace`` for the workspace's own), so a retry after a failure sends only what is
missing. ``sending_until`` is a short claim: two reconciles running at once never send the
same message twice. No address, subject or other mail content is stored.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, DateTime, ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from postroom.accounts.models import new_id, utcnow
from postroom.db import Base

STOPPED = "stopped"  # the integration or the mailbox has a status that stops it
LAGGING = "lagging"  # a mailbox's sync is behind by more than the configured minutes


class Incident(Base):
    __tablename__ = "incidents"
    __table_args__ = (
        Index(
            "uq_incidents_open",
            "integration_id",
            "scope",
            "kind",
            unique=True,
            postgresql_where=text("resolved_at IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    integration_id: Mapped[str] = mapped_column(
        ForeignKey("integrations.id", ondelete="CASCADE"), index=True
    )
    mailbox_id: Mapped[str | None] = mapped_column(
        ForeignKey("mailboxes.id", ondelete="CASCADE"), nullable=True
    )
    scope: Mapped[str] = mapped_column(String(60))
    kind: Mapped[str] = mapped_column(String(20))  # STOPPED | LAGGING
    code: Mapped[str] = mapped_column(String(60))  # the status, or "lag"
    reason: Mapped[str | None] = mapped_column(String(60), nullable=True)  # a reason code
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    opened_sent: Mapped[list[str]] = mapped_column(JSON, default=list)
    resolved_sent: Mapped[list[str]] = mapped_column(JSON, default=list)
    sending_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
