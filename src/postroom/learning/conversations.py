"""What an integration remembers per conversation: where its last email went, so a reply
follows it (:func:`~postroom.classify.from_conversation`). Only a keyed hash of the
conversation and a category name are stored, at most :data:`MAX_CONVERSATIONS` per
integration (the least recently updated are forgotten)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import case, delete, func, literal, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from postroom.classify import (
    Remembered,
    conversation_hash,
)
from postroom.learning.models import (
    ConversationMemory,
)
from postroom.processing.view import MessageView

MAX_CONVERSATIONS = 20_000
"""Conversations remembered per integration; the least recently updated are forgotten."""


def recall_conversation(
    db: Session, integration_id: str, view: MessageView, secret: bytes
) -> Remembered | None:
    """Where the message's conversation went last, if anywhere."""
    key = conversation_hash(view, secret)
    if key is None:
        return None
    row = db.execute(
        select(ConversationMemory.category, ConversationMemory.by_person).where(
            ConversationMemory.integration_id == integration_id,
            ConversationMemory.key_hash == key,
        )
    ).one_or_none()
    return None if row is None else Remembered(row.category, row.by_person)


def forget_conversation(db: Session, integration_id: str, view: MessageView, secret: bytes) -> None:
    """A person rejected the category the conversation went to: its replies no longer follow."""
    key = conversation_hash(view, secret)
    if key is not None:
        db.execute(
            delete(ConversationMemory).where(
                ConversationMemory.integration_id == integration_id,
                ConversationMemory.key_hash == key,
            )
        )


def remember_conversation(
    db: Session,
    integration_id: str,
    view: MessageView,
    category: str,
    secret: bytes,
    *,
    by_person: bool,
) -> None:
    """Record that the message's conversation went to ``category`` (upsert, bounded);
    ``by_person`` for a correction or a rule (see :func:`~postroom.classify.merged`)."""
    key = conversation_hash(view, secret)
    if key is None:
        return
    now = datetime.now(UTC)
    table = ConversationMemory.__table__
    keep_person = case(
        (table.c.category == category, or_(table.c.by_person, literal(by_person))),
        else_=literal(by_person),
    )
    db.execute(
        pg_insert(ConversationMemory)
        .values(
            integration_id=integration_id,
            key_hash=key,
            category=category,
            by_person=by_person,
            updated_at=now,
        )
        .on_conflict_do_update(
            index_elements=["integration_id", "key_hash"],
            set_={"category": category, "by_person": keep_person, "updated_at": now},
        )
    )
    count = db.scalar(
        select(func.count()).where(ConversationMemory.integration_id == integration_id)
    )
    if count is not None and count > MAX_CONVERSATIONS:
        oldest = (
            select(ConversationMemory.key_hash)
            .where(ConversationMemory.integration_id == integration_id)
            .order_by(ConversationMemory.updated_at)
            .limit(count - MAX_CONVERSATIONS)
        )
        db.execute(
            delete(ConversationMemory).where(
                ConversationMemory.integration_id == integration_id,
                ConversationMemory.key_hash.in_(oldest.scalar_subquery()),
            )
        )
