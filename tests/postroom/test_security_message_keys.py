"""Issue 12, Low: "the database keeps a plain sha256 of each internetMessageId, so anyone
holding a copy of an email can confirm that it was processed". Keys are now HMAC-SHA256 under
a deployment secret (migration 0011), and exactly-once holds across the change."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import select, text

from postroom.accounts.models import Workspace, new_id
from postroom.classify import Classifier, ClassifierConfig
from postroom.db import Database
from postroom.integrations.models import Integration, Mailbox
from postroom.learning import corrections
from postroom.learning import service as learning
from postroom.learning.models import LearningEvent, PendingExample
from postroom.processing.executor import claim
from postroom.processing.message_keys import message_key, rekey, rekey_legacy
from postroom.processing.models import LedgerEntry
from postroom.processing.view import Address, MessageView

SECRET = b"s" * 32
HEADER = "<CAF=invoice-2024-117@fabrikam.test>"
PLAIN = hashlib.sha256(HEADER.encode()).hexdigest()


@dataclass
class Rows:
    database: Database
    integration_id: str
    mailbox_id: str


@pytest.fixture
def rows(clean_db: Database) -> Iterator[Rows]:
    with clean_db.session() as db:
        workspace = Workspace(name="Acme")
        db.add(workspace)
        db.flush()
        integration = Integration(
            workspace_id=workspace.id, kind="organization", status="connected", tenant_id="t"
        )
        db.add(integration)
        db.flush()
        mailbox = Mailbox(
            integration_id=integration.id, graph_user_id="u1", address="a@x.test", kind="tenant"
        )
        db.add(mailbox)
        db.flush()
        ids = integration.id, mailbox.id
    yield Rows(clean_db, *ids)


def _old_ledger_row(rows: Rows, message_id: str, state: str = "done") -> str:
    """A row as Postroom wrote it before migration 0011 (no legacy_key column known)."""
    row_id = new_id()
    with rows.database.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO ledger (id, integration_id, mailbox_id, message_id, message_key,"
                " state, actions_done, historical, attempts, claimed_at)"
                " VALUES (:id, :i, :m, :msg, :key, :state, '[]', false, 0, now())"
            ),
            {
                "id": row_id,
                "i": rows.integration_id,
                "m": rows.mailbox_id,
                "msg": message_id,
                "key": PLAIN,
                "state": state,
            },
        )
    return row_id


def _claim(rows: Rows, message_id: str, header: str = HEADER) -> LedgerEntry | None:
    with rows.database.session() as db:
        return claim(
            db,
            integration_id=rows.integration_id,
            mailbox_id=rows.mailbox_id,
            message_id=message_id,
            internet_message_id=header,
            historical=False,
            key_secret=SECRET,
        )


def _dump(database: Database) -> str:
    with database.engine.connect() as conn:
        return " ".join(
            str(tuple(row))
            for table in ("ledger", "pending_examples", "learning_events")
            for row in conn.execute(text(f"SELECT * FROM {table}"))
        )


def test_a_message_processed_before_the_change_is_not_processed_again(rows: Rows) -> None:
    old = _old_ledger_row(rows, "AAMk-processed-before")
    with rows.database.session() as db:
        legacy = db.get(LedgerEntry, old)
        assert legacy is not None and legacy.legacy_key and legacy.message_key == PLAIN

    assert _claim(rows, "AAMk-processed-before") is None  # done before: not claimed again

    with rows.database.session() as db:
        assert rekey_legacy(db, SECRET) == 1
    with rows.database.session() as db:
        converted = db.get(LedgerEntry, old)
        assert converted is not None and not converted.legacy_key
        assert converted.message_key == message_key(HEADER, SECRET) == rekey(PLAIN, SECRET)
        assert converted.state == "done"
        assert rekey_legacy(db, SECRET) == 0
    assert _claim(rows, "AAMk-processed-before") is None  # and still not after rekeying
    assert PLAIN not in _dump(rows.database)


def test_an_unfinished_row_from_before_the_change_is_resumed_not_duplicated(rows: Rows) -> None:
    old = _old_ledger_row(rows, "AAMk-half-done", state="claimed")
    resumed = _claim(rows, "AAMk-half-done")
    assert resumed is not None and resumed.id == old
    with rows.database.session() as db:
        assert len(db.scalars(select(LedgerEntry)).all()) == 1


def test_new_rows_hold_no_plain_sha256_of_the_message_id(rows: Rows) -> None:
    entry = _claim(rows, "AAMk-new")
    assert entry is not None
    assert entry.message_key == message_key(HEADER, SECRET) != PLAIN
    with rows.database.session() as db:
        stored = db.get(LedgerEntry, entry.id)
        assert stored is not None and not stored.legacy_key
    # Another deployment (another secret) cannot confirm the message from the key.
    assert entry.message_key != message_key(HEADER, b"t" * 32)

    view = MessageView(
        id="AAMk-new",
        internet_message_id=HEADER,
        subject="Invoice 2024-117",
        sender=Address("Fabrikam", "billing@fabrikam.test"),
        body_text="Please pay",
    )
    classifier = Classifier(ClassifierConfig())
    with rows.database.session() as db:
        learning.record_decision(
            db,
            integration_id=rows.integration_id,
            classifier=classifier,
            view=view,
            category="Invoices",
            key_secret=SECRET,
        )
    with rows.database.session() as db:
        pending = db.scalars(select(PendingExample)).one()
        assert pending.message_key == entry.message_key and not pending.legacy_key
    assert PLAIN not in _dump(rows.database)
    assert HEADER not in _dump(rows.database)


def test_a_legacy_pending_decision_is_found_by_a_correction_before_and_after_rekeying(
    rows: Rows,
) -> None:
    with rows.database.engine.begin() as conn:
        for key in (PLAIN, hashlib.sha256(b"<other@x>").hexdigest()):
            conn.execute(
                text(
                    "INSERT INTO pending_examples (id, integration_id, message_key, category,"
                    " features, created_at) VALUES (:id, :i, :key, 'Support', :f, now())"
                ),
                {"id": new_id(), "i": rows.integration_id, "key": key, "f": b"\x00"},
            )
    view = MessageView(
        id="AAMk-old",
        internet_message_id=HEADER,
        subject="Invoice",
        sender=Address("F", "f@x.test"),
        body_text="Pay",
    )
    with rows.database.session() as db:
        learning.record_correction(
            db,
            integration_id=rows.integration_id,
            entry_id="no-such-entry",
            view=view,
            correction=corrections.Correction("Support", "Invoices", "model"),
            config=ClassifierConfig(),
            key_secret=SECRET,
        )
    with rows.database.session() as db:
        keys = db.scalars(select(PendingExample.message_key)).all()
        assert PLAIN not in keys and len(keys) == 1  # the corrected decision is gone
        event = db.scalars(select(LearningEvent)).one()
        assert event.message_key == message_key(HEADER, SECRET) and not event.legacy_key
        assert rekey_legacy(db, SECRET) == 1  # the other, unrelated legacy row
    with rows.database.session() as db:
        assert db.scalars(select(PendingExample.legacy_key)).all() == [False]
