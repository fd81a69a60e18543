"""Per (mailbox, folder) sync state: the delta link, the subscription, the backfill cursor.

``client_state_hash`` keeps an HMAC of the subscription's ``clientState`` (the secret Graph
echoes in every notification), not the secret itself: a database dump cannot forge
notifications.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from postroom.accounts.models import new_id, utcnow
from postroom.db import Base


class FolderSync(Base):
    __tablename__ = "folder_syncs"
    __table_args__ = (UniqueConstraint("mailbox_id", "folder_key"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    integration_id: Mapped[str] = mapped_column(
        ForeignKey("integrations.id", ondelete="CASCADE"), index=True
    )
    mailbox_id: Mapped[str] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"))
    folder_key: Mapped[str] = mapped_column(String(255))  # well-known name or display name
    folder_id: Mapped[str | None] = mapped_column(String(512), nullable=True)
    delta_link: Mapped[str | None] = mapped_column(Text, nullable=True)
    mode: Mapped[str] = mapped_column(String(20), default="webhook")  # webhook | polling
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # watch: a category folder synced for corrections only (no new mail is processed there)
    watch: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    last_synced_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    processed_count: Mapped[int] = mapped_column(Integer, default=0)
    subscription_id: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    subscription_expires: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    client_state_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    subscription_error: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # the last sync's failure, as a code (never a message's text); cleared by a good sync
    last_error: Mapped[str | None] = mapped_column(String(200), nullable=True)
    last_error_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    baseline_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # backfill: historical mail since a date, oldest first, resumable from the cursor
    backfill_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    backfill_cursor: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    backfill_total: Mapped[int | None] = mapped_column(Integer, nullable=True)
    backfill_done: Mapped[int] = mapped_column(Integer, default=0)
    backfill_started_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    backfill_finished_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )

    def lag_seconds(self, now: datetime | None = None) -> float:
        """How long ago this folder was last synced (or set up, if never)."""
        since = self.last_synced_at or self.baseline_at
        return max(((now or utcnow()) - since).total_seconds(), 0.0)
