"""A sync page's emails are claimed in the ledger with one statement (issue 14: the claim was
a quarter of an email's time, docs/performance.md), and each claim is the one it gets alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import event, select

from m365sim.state import EmulatorState
from postroom.integrations.models import Mailbox
from postroom.processing.executor import claim, claim_many
from postroom.processing.models import LedgerEntry
from tests.postroom.conftest import Postroom
from tests.postroom.test_sync import folder_of, setup_personal, wait_for_jobs

SECRET = b"k" * 32


def _mailbox(postroom: Postroom) -> Mailbox:
    with postroom.database.session() as db:
        row = db.scalar(select(Mailbox).where(Mailbox.kind == "own"))
        assert row is not None
        db.expunge(row)
        return row


def test_claim_many_gives_each_message_what_claim_gives_it(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    setup_personal(web, postroom, org)
    box = _mailbox(postroom)
    common: dict[str, Any] = {
        "integration_id": box.integration_id,
        "mailbox_id": box.id,
        "historical": False,
        "key_secret": SECRET,
    }
    with postroom.database.statement() as connection:
        resumed = claim(connection, message_id="m-resumed", internet_message_id="<r@x>", **common)
        done = claim(connection, message_id="m-done", internet_message_id="<d@x>", **common)
    assert resumed is not None and done is not None
    with postroom.database.session() as db:
        row = db.get(LedgerEntry, done.id)
        assert row is not None
        row.state = "done"

    with postroom.database.statement() as connection:
        claims = claim_many(
            connection,
            messages=[
                ("m-new", "<n@x>"),
                ("m-resumed", "<r@x>"),
                ("m-done", "<d@x>"),
                ("m-new", "<n@x>"),  # (a page may list an id twice: the first counts)
            ],
            **common,
        )
        assert claim_many(connection, messages=[], **common) == {}
    assert set(claims) == {"m-new", "m-resumed", "m-done"}
    assert claims["m-resumed"] == resumed  # the unfinished row, to resume
    assert claims["m-done"] is None  # dealt with already
    new = claims["m-new"]
    assert new is not None and new.state == "claimed" and new.plan is None
    assert not new.actions_done and new.message_key not in (None, "<n@x>")
    with postroom.database.statement() as connection:
        again = claim(connection, message_id="m-new", internet_message_id="<n@x>", **common)
    assert again == new  # the row claim_many made, found by claim
    with postroom.database.session() as db:
        rows = db.scalars(select(LedgerEntry).where(LedgerEntry.mailbox_id == box.id)).all()
        assert sorted(r.message_id for r in rows) == ["m-done", "m-new", "m-resumed"]


def test_a_sync_page_claims_its_emails_with_one_statement(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    setup_personal(web, postroom, org)
    postroom.drain()
    inserts: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO LEDGER"):
            inserts.append(statement)

    event.listen(postroom.database.engine, "before_cursor_execute", seen)
    try:
        sent = [org.deliver(org.alice, subject=f"Invoice {n}") for n in range(6)]
        # mail from before setup (a person moved it in, say) is never claimed by a sync
        old = org.deliver(
            org.alice, subject="Invoice old", received=datetime.now(UTC) - timedelta(days=3)
        )
        assert wait_for_jobs(postroom) >= 1
        postroom.drain()
    finally:
        event.remove(postroom.database.engine, "before_cursor_execute", seen)

    for msg in sent:
        assert folder_of(org.alice, msg.immutable_id) == "Invoices"
    assert folder_of(org.alice, old.immutable_id) == "Inbox"
    with postroom.database.session() as db:
        rows = db.scalars(select(LedgerEntry)).all()
    assert sorted(r.message_id for r in rows) == sorted(m.immutable_id for m in sent)
    assert all(r.state == "done" for r in rows)
    # one per page that carried new mail (the six may arrive on one or two pages), not six
    assert 1 <= len(inserts) <= 2, len(inserts)
