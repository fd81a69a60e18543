"""Tables of the learned classifier: its state, what it learned from, and user-typed examples.

Invariant 2 (no message content stored) holds as follows:

* :class:`ModelState` keeps :func:`postroom.classify.dump_state` bytes — hashed features,
  embedding vectors and model parameters (numbers, no pickle) — plus the integration's
  threshold and needs-review category (configuration).
* :class:`ModelUpdate` keeps a correction learned since the last snapshot the same way: the
  example's hashed features and embedding vectors, and a category name.
* :class:`LearningEvent` records that a person gave an example, corrected a decision, or
  rejected one (took the category off: "none of these"): category names (configuration), what
  the model had said, and for a correction or rejection the keyed hash of the message's
  internetMessageId (:mod:`postroom.processing.message_keys`). Never a subject, body,
  sender or recipient.
* :class:`ConversationMemory` keeps, per conversation, a keyed hash (HMAC-SHA256 of the
  conversation id or normalized subject, 16 bytes) and the category its mail went to last.
* :class:`PendingExample` is a decision waiting to become an example: hashed features (and an
  embedding vector) as :func:`postroom.classify.dump_state` bytes, a category name and the
  keyed hash of the internetMessageId. Folded into the model state after it stood uncorrected.
* :class:`CategoryExample` is text a person *typed or pasted* into the category editor as an
  example. It is configuration, like a rule's value, kept so the editor can show it again and a
  retrain can rebuild the model; text of mail Postroom processed never goes here.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column

from postroom.accounts.models import new_id, utcnow
from postroom.db import Base

EVENT_KINDS = ("example", "correction", "rejection")
"""A rejection's ``category`` is the category taken off (none was chosen)."""
DEFAULT_THRESHOLD = 0.6
DEFAULT_NEEDS_REVIEW = "Needs review"


class ModelState(Base):
    __tablename__ = "model_states"

    integration_id: Mapped[str] = mapped_column(
        ForeignKey("integrations.id", ondelete="CASCADE"), primary_key=True
    )
    state: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, deferred=True)
    """The snapshot: dump_state bytes of the classifier as of ``snapshot_version`` (tens of MB
    for a large model, so only read when a worker rebuilds: ``deferred``)."""
    version: Mapped[int] = mapped_column(Integer, default=0)
    """Goes up on every change: a snapshot written, or a :class:`ModelUpdate` appended."""
    snapshot_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """The version ``state`` was written at; updates after it are in ``model_updates``."""
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    threshold: Mapped[float] = mapped_column(Float, default=DEFAULT_THRESHOLD)
    needs_review: Mapped[str | None] = mapped_column(
        String(255), nullable=True, default=DEFAULT_NEEDS_REVIEW
    )
    retrain_due: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """Enough was learned since the last full fit: the reconcile queues a retrain."""
    refit_requested_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    """A person changed what the model is built from (the editor, Retrain, Reset): the
    ``refit_model`` job rebuilds it in the background and clears this."""
    reset_requested_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    """The last time a person asked for the refit to forget corrections and learned decisions
    (the Reset button); cleared by the refit that did, unless another Reset came meanwhile."""


class ModelUpdate(Base):
    """One correction learned since the snapshot: the example it was learned from.

    The model at ``version`` V is the snapshot plus, in order, :meth:`Classifier.learn` of
    every update with ``snapshot_version < version <= V``. A correction thus writes one row of
    a few kB instead of the whole state (tens of MB: seconds). The next snapshot (a retrain,
    a fold, the editor) deletes the updates it includes. ``example`` is
    :func:`~postroom.classify.example_state` as :func:`~postroom.classify.dump_state` bytes:
    hashed features and embedding vectors, numbers only."""

    __tablename__ = "model_updates"

    integration_id: Mapped[str] = mapped_column(
        ForeignKey("model_states.integration_id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    category: Mapped[str] = mapped_column(String(255))
    example: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LearningEvent(Base):
    __tablename__ = "learning_events"
    __table_args__ = (
        Index("ix_learning_events_legacy_key", "id", postgresql_where=text("legacy_key")),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    integration_id: Mapped[str] = mapped_column(
        ForeignKey("integrations.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(20))  # one of EVENT_KINDS
    category: Mapped[str] = mapped_column(String(255))
    predicted: Mapped[str | None] = mapped_column(String(255), nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(20), nullable=True)
    message_key: Mapped[str | None] = mapped_column(String(64), nullable=True)  # message_keys
    legacy_key: Mapped[bool] = mapped_column(Boolean, default=False, server_default=true())
    """``message_key`` still holds the pre-0011 plain sha256 (until rekeyed)."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ConversationMemory(Base):
    """Where a conversation's mail went last (see :mod:`postroom.classify.conversations`)."""

    __tablename__ = "conversation_memory"
    __table_args__ = (Index("ix_conversation_memory_updated", "integration_id", "updated_at"),)

    integration_id: Mapped[str] = mapped_column(
        ForeignKey("integrations.id", ondelete="CASCADE"), primary_key=True
    )
    key_hash: Mapped[bytes] = mapped_column(LargeBinary(16), primary_key=True)
    category: Mapped[str] = mapped_column(String(255))
    by_person: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """Set by a person's correction or a rule (always followed), not by the model."""
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PendingExample(Base):
    """A decision nobody has corrected yet (see :func:`postroom.learning.service.fold`)."""

    __tablename__ = "pending_examples"
    __table_args__ = (
        UniqueConstraint("integration_id", "message_key"),
        Index("ix_pending_examples_legacy_key", "id", postgresql_where=text("legacy_key")),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    integration_id: Mapped[str] = mapped_column(
        ForeignKey("integrations.id", ondelete="CASCADE"), index=True
    )
    message_key: Mapped[str] = mapped_column(String(64))  # keyed, see message_keys
    legacy_key: Mapped[bool] = mapped_column(Boolean, default=False, server_default=true())
    """``message_key`` still holds the pre-0011 plain sha256 (until rekeyed)."""
    category: Mapped[str] = mapped_column(String(255))
    features: Mapped[bytes] = mapped_column(LargeBinary)  # dump_state bytes: numbers only
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class CategoryExample(Base):
    """One example a person pasted for a category (configuration, see the module docstring)."""

    __tablename__ = "category_examples"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    integration_id: Mapped[str] = mapped_column(
        ForeignKey("integrations.id", ondelete="CASCADE"), index=True
    )
    category_id: Mapped[str] = mapped_column(
        ForeignKey("categories.id", ondelete="CASCADE"), index=True
    )
    text: Mapped[str] = mapped_column(Text)
    position: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
