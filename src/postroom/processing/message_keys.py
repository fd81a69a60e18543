"""Message keys: how Postroom recognises a message without storing its ``internetMessageId``.

The ledger, the pending examples and the learning events keep a *key* of the message's
``internetMessageId`` header. Until migration 0011 that key was its plain sha256: anyone with a
copy of the database and a copy of an email could confirm that Postroom processed it. Now it
is keyed with a deployment secret (derived from the token key, label ``message-key``)::

    key = HMAC-SHA256(secret, sha256_hex(internetMessageId))   -- 64 hex characters

Keying the *digest* rather than the header itself is what lets the change keep exactly-once
without a window: a row written before the upgrade holds ``sha256_hex``, so it is turned into
exactly the key a new row would get (:func:`rekey_legacy`), without the header. Until that has
run, rows are marked ``legacy_key`` (the migration's server default, so even a writer that does
not know the column is caught) and lookups accept both forms (:func:`lookup_keys`). New rows
are always keyed and ``legacy_key = false``: a plain sha256 is never written again.

:func:`rekey_legacy` runs in the periodic reconcile job (bounded batches, safe on any number of
workers at once: each row is converted at most once under its row lock). Once it has converted
every row no plain hash is left, and the legacy branch of the lookups finds nothing; it can be
removed, with the ``legacy_key`` columns, in a later release.

Exactly-once itself never depended on these keys: the ledger's unique key is
``(mailbox_id, message_id)``, the immutable Graph id, so a message processed before the
upgrade is recognised after it whatever its ``message_key`` holds.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

LABEL = b"message-key"
REKEY_BATCH = 1_000


def legacy_message_key(internet_message_id: str) -> str:
    """The pre-0011 key: the plain sha256 hex. Computed for lookups only, never stored."""
    return hashlib.sha256(internet_message_id.encode("utf-8")).hexdigest()


def rekey(legacy_key: str, secret: bytes) -> str:
    """The keyed form of a plain sha256 hex key."""
    return hmac.new(secret, legacy_key.encode("ascii"), hashlib.sha256).hexdigest()


def message_key(internet_message_id: str, secret: bytes) -> str:
    """The key stored for a message: HMAC-SHA256 under ``secret`` (see the module docstring)."""
    if not secret:
        raise ValueError("a message key needs the deployment secret")
    return rekey(legacy_message_key(internet_message_id), secret)


def lookup_keys(internet_message_id: str, secret: bytes) -> tuple[str, str]:
    """Both forms a stored key can have while legacy rows remain: (keyed, plain)."""
    return message_key(internet_message_id, secret), legacy_message_key(internet_message_id)


def _tables() -> list[Any]:
    from postroom.learning.models import LearningEvent, PendingExample
    from postroom.processing.models import LedgerEntry

    return [LedgerEntry, PendingExample, LearningEvent]


def rekey_legacy(db: Session, secret: bytes, *, limit: int = REKEY_BATCH) -> int:
    """Turn up to ``limit`` legacy (plain sha256) keys per table into keyed ones. Returns how
    many rows changed; 0 once none are left."""
    if not secret:
        raise ValueError("rekeying needs the deployment secret")
    from postroom.learning.models import PendingExample

    changed = 0
    for model in _tables():
        rows = db.execute(
            select(model.id, model.message_key, model.integration_id)
            .where(model.legacy_key.is_(True))
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        for row_id, key, integration_id in rows:
            new = rekey(key, secret) if key else key
            if model is PendingExample and db.scalar(
                select(model.id).where(
                    model.integration_id == integration_id, model.message_key == new
                )
            ):
                # (integration, key) is unique: the keyed twin already waits; keep one.
                db.execute(delete(model).where(model.id == row_id))
            else:
                db.execute(
                    update(model)
                    .where(model.id == row_id, model.legacy_key.is_(True))
                    .values(message_key=new, legacy_key=False)
                )
            changed += 1
    return changed
