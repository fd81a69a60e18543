"""A worker that dies between Graph's move and the ledger's record (found by the scale-out test,
issue 14): the email has left the folder, so no delta page shows it again, and its forward was
never sent. The reconcile finds the row still ``claimed`` long after, reads the email by its
immutable id and finishes it: forwarded once, labelled once, never moved twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import select, update

from m365sim.state import EmulatorState
from postroom.integrations.models import Mailbox
from postroom.processing.executor import claim
from postroom.processing.models import LedgerEntry
from postroom.sync.jobs import reconcile_now
from tests.postroom.conftest import Postroom
from tests.postroom.test_sync import _run, folder_of, setup_personal, wait_for_jobs


def test_an_email_a_dead_worker_left_claimed_after_the_move_is_finished(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    setup_personal(web, postroom, org, forward_to=org.bob.user_principal_name)
    postroom.drain()
    first = org.deliver(org.alice, subject="Invoice 1 (creates the folders)")
    wait_for_jobs(postroom)
    postroom.drain()
    assert folder_of(org.alice, first.immutable_id) == "Invoices"
    invoices = org.alice.mailbox.messages[first.immutable_id].folder_id

    # The dead worker: claimed, labelled and moved at Graph, recorded up to the label only.
    msg = org.deliver(org.alice, subject="Invoice 2 (the worker died)")
    with postroom.database.session() as db:
        mailbox_row = db.scalar(select(Mailbox).where(Mailbox.kind == "own"))
        assert mailbox_row is not None
        entry = claim(
            db,
            integration_id=mailbox_row.integration_id,
            mailbox_id=mailbox_row.id,
            message_id=msg.immutable_id,
            internet_message_id=msg.internet_message_id,
            historical=False,
            key_secret=postroom.app.state.box.derive(b"message-key"),
        )
        assert entry is not None
        db.execute(
            update(LedgerEntry)
            .where(LedgerEntry.id == entry.id)
            .values(
                actions_done=["master_category", "label", "folder"],
                claimed_at=datetime.now(UTC) - timedelta(minutes=30),
            )
        )
    stored = org.alice.mailbox.messages[msg.immutable_id]
    stored.categories = ["Invoices"]
    sim.store.update_message(org.tenant, org.alice.mailbox, stored)
    sim.store.move_message(
        org.tenant, org.alice.mailbox, stored, org.alice.mailbox.folders[invoices]
    )
    wait_for_jobs(postroom)
    postroom.drain()  # the notified sync: the email is no longer in the Inbox
    with postroom.database.session() as db:
        state = db.scalar(
            select(LedgerEntry.state).where(LedgerEntry.message_id == msg.immutable_id)
        )
    assert state == "claimed"
    assert not [m for m in org.bob.mailbox.messages.values() if "Invoice 2" in m.subject]

    counts = _run(postroom, reconcile_now)
    assert counts["stale"] == 1
    postroom.drain()
    with postroom.database.session() as db:
        row = db.scalar(select(LedgerEntry).where(LedgerEntry.message_id == msg.immutable_id))
        assert row is not None and row.state == "done"
    forwards = [m for m in org.bob.mailbox.messages.values() if "Invoice 2" in m.subject]
    assert len(forwards) == 1
    assert org.alice.mailbox.messages[msg.immutable_id].categories == ["Invoices"]
    assert folder_of(org.alice, msg.immutable_id) == "Invoices"
    assert [d for d in sim.store.deletions if d.mailbox_id == org.alice.id] == []
    # A second reconcile finds nothing left.
    with postroom.database.session() as db:
        db.execute(update(LedgerEntry).values(claimed_at=datetime.now(UTC) - timedelta(hours=1)))
    assert _run(postroom, reconcile_now)["stale"] == 0
