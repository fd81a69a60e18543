"""The ledger: one row per (mailbox, message) Postroom has claimed, and what it did to it.

Invariant 3 (each action at most once, at least once) rests on this table. A message is
claimed by inserting its row (the unique key makes a second claim fail); each action is
recorded in ``actions_done`` right after Graph confirmed it; a crash resumes from the row,
skipping what is recorded. A forward is made as a draft first (``forward_draft_id`` recorded),
then sent, so a retry can never send twice.

Invariant 2: no subject, body, sender or recipient of the message is stored — only its
immutable id, a keyed hash of its internetMessageId (:mod:`.message_keys`), the plan (category
names, folder path, and the configured forward addresses) and times.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    text,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column

from postroom.accounts.models import new_id, utcnow
from postroom.db import Base

LEDGER_STATES = ("claimed", "done", "failed", "skipped")
UNDO_STATES = ("requested", "done", "failed")
UNDO_STEPS = (
    "learned",
    "unlabel",
    "fix_label",
    "move_back",
    # Fix's forward, only after the person confirmed it (processing.forwarding)
    "forward_draft",
    "forward_send_attempted",
    "forward_sent",
)
ACTIONS = (
    "master_category",
    "label",
    "folder",
    "move",
    "forward_draft",
    "forward_send_attempted",
    "forward_sent",
)


class LedgerEntry(Base):
    __tablename__ = "ledger"
    __table_args__ = (
        UniqueConstraint("mailbox_id", "message_id"),
        Index("ix_ledger_legacy_key", "id", postgresql_where=text("legacy_key")),
        Index("ix_ledger_undo_requested", "id", postgresql_where=text("undo_state = 'requested'")),
        # the charts page (postroom.activity.counts): an integration's recent rows and undos
        Index("ix_ledger_integration_claimed", "integration_id", "claimed_at"),
        Index(
            "ix_ledger_integration_undo_asked",
            "integration_id",
            "undo_requested_at",
            postgresql_where=text("undo_requested_at IS NOT NULL"),
        ),
        # Suggest only (postroom.sync.shadow): the agreement counts read only these rows
        Index(
            "ix_ledger_suggested",
            "integration_id",
            postgresql_where=text("(plan->>'suggested') = 'true'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    # (indexed by ix_ledger_integration_claimed, whose first column it is)
    integration_id: Mapped[str] = mapped_column(ForeignKey("integrations.id", ondelete="CASCADE"))
    mailbox_id: Mapped[str] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"))
    message_id: Mapped[str] = mapped_column(String(512))  # immutable Graph id
    message_key: Mapped[str] = mapped_column(String(64), index=True)  # see message_keys
    legacy_key: Mapped[bool] = mapped_column(Boolean, default=False, server_default=true())
    """``message_key`` still holds the pre-0011 plain sha256 (until rekeyed)."""
    state: Mapped[str] = mapped_column(String(20), default="claimed")
    plan: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    actions_done: Mapped[list[str]] = mapped_column(JSON, default=list)
    forward_draft_id: Mapped[str | None] = mapped_column(String(512), nullable=True)
    historical: Mapped[bool] = mapped_column(Boolean, default=False)  # found by backfill
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(200), nullable=True)  # a code only
    claimed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Where the move took the message from and to (folder ids, never names): what Undo needs.
    # The source is recorded before the move, the destination with it (see executor.move).
    source_folder_id: Mapped[str | None] = mapped_column(String(512), nullable=True)
    filed_folder_id: Mapped[str | None] = mapped_column(String(512), nullable=True)
    # Undo (postroom.processing.undo): requested → done | failed; each step recorded like an
    # action, so a crash resumes it and nothing is reversed twice.
    undo_state: Mapped[str | None] = mapped_column(String(20), nullable=True)
    undo_done: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    undo_note: Mapped[str | None] = mapped_column(String(200), nullable=True)  # a code only
    undo_requested_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    undone_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class CreatedMasterCategory(Base):
    """A name Postroom added to a mailbox's master category list (Outlook's colour list), so
    that a disconnect can offer to take exactly those off again - never a person's own."""

    __tablename__ = "created_master_categories"
    __table_args__ = (UniqueConstraint("mailbox_id", "name", name="uq_created_master_categories"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    mailbox_id: Mapped[str] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    graph_id: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
