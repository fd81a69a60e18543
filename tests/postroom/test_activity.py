"""The activity view: the ledger of an integration with each email's subject fetched live from
Graph (``$batch``), never from — and never into — the database.

Ledger rows are written directly for emails delivered to m365sim (the sync that writes them in
production is tested in ``test_sync``); the page is read over real HTTP.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select, text

from m365sim.identity import events
from m365sim.state import EmulatorState
from postroom.integrations.models import Integration, Mailbox
from postroom.processing.message_keys import message_key
from postroom.processing.models import LedgerEntry
from tests.postroom.conftest import Postroom
from tests.postroom.test_editor import finished


def add_entry(
    postroom: Postroom,
    message_id: str,
    *,
    state: str = "done",
    plan: dict[str, Any] | None = None,
    actions: list[str] | None = None,
    age: timedelta = timedelta(0),
) -> None:
    with postroom.database.session() as db:
        mailbox = db.scalar(select(Mailbox))
        assert mailbox is not None
        db.add(
            LedgerEntry(
                integration_id=mailbox.integration_id,
                mailbox_id=mailbox.id,
                message_id=message_id,
                message_key=message_key(f"<{message_id}@test>", b"k" * 32),
                state=state,
                plan=plan,
                actions_done=actions or [],
                claimed_at=datetime.now(UTC) - age,
            )
        )


INVOICE_PLAN = {
    "category": "Invoices",
    "add_categories": ["Invoices"],
    "folder": "Finance/Invoices",
    "forward": None,
    "decided_by": "rule",
    "confidence": 1.0,
}


def test_activity_shows_live_subjects_filters_and_stores_none(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org, base = finished(web, postroom, sim)
    assert "No activity yet" in web.get(f"{base}/activity").text
    invoice = org.deliver(org.alice, subject="Invoice 4711 <urgent>", sender="ap@vendor.test")
    lunch = org.deliver(org.alice, subject="Lunch on Friday?")
    gone = org.deliver(org.alice, subject="Deleted by the user")
    add_entry(
        postroom,
        invoice.immutable_id,
        plan=INVOICE_PLAN,
        actions=["label", "folder", "move"],
        age=timedelta(minutes=1),
    )
    add_entry(
        postroom,
        lunch.immutable_id,
        plan={
            **INVOICE_PLAN,
            "category": None,
            "decided_by": "none",
            "confidence": None,
            "folder": None,
        },
        age=timedelta(minutes=2),
    )
    add_entry(postroom, gone.immutable_id, state="skipped", age=timedelta(minutes=3))
    sim.store.remove_message(org.tenant, org.alice.mailbox, gone)
    log_start = len(sim.request_log)

    page = web.get(f"{base}/activity")
    assert page.status_code == 200
    body = page.text
    assert "Invoice 4711 &lt;urgent&gt;" in body and "<urgent>" not in body
    assert "from Ap" in body  # the sender, live too
    assert "Lunch on Friday?" in body
    assert "(no longer in the mailbox)" in body
    assert body.index("Invoice 4711") < body.index("Lunch on Friday?")  # newest first
    assert "labelled, moved" in body and "100%" in body
    # a colour and a folder made sure of are not "created" on every email
    assert "colour created" not in body and "folder created" not in body
    assert "→ Finance/Invoices" in body
    calls = list(sim.request_log)[log_start:]
    assert [r.endpoint for r in calls if not r.in_batch and "batch" in r.endpoint] == [
        "POST /$batch"
    ]
    assert sum(r.in_batch for r in calls) == 3
    assert {r.method for r in calls if r.mailbox_id == org.alice.id} == {"GET"}

    # Filters.
    done = web.get(f"{base}/activity", params={"state": "done"}).text
    assert "Invoice 4711" in done and "Lunch on Friday?" in done and "no longer" not in done
    invoices = web.get(f"{base}/activity", params={"category": "Invoices"}).text
    assert "Invoice 4711" in invoices and "Lunch on Friday?" not in invoices
    uncategorised = web.get(f"{base}/activity", params={"category": ""}).text
    assert "Invoice 4711" not in uncategorised and "Lunch on Friday?" in uncategorised
    skipped = web.get(f"{base}/activity", params={"state": "skipped", "category": "Invoices"})
    assert skipped.status_code == 200 and "No email matches these filters." in skipped.text
    assert web.get(f"{base}/activity", params={"state": "exploded"}).status_code == 400
    assert web.get(f"{base}/activity", params={"page": "x"}).status_code == 400

    # Nothing Graph said reached the database.
    with postroom.database.engine.connect() as conn:
        dump = " ".join(
            str(row)
            for table in ("ledger", "integrations", "mailboxes", "categories", "folder_syncs")
            for row in conn.execute(text(f"SELECT * FROM {table}"))
        )
    assert "4711" not in dump and "Lunch" not in dump and "vendor.test" not in dump


def test_activity_pages_of_fifty_fetch_subjects_in_batches(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org, base = finished(web, postroom, sim)
    messages = []
    for n in range(55):
        msg = org.deliver(org.alice, subject=f"Order number {n:03d}")
        messages.append(msg)
        add_entry(postroom, msg.immutable_id, plan=INVOICE_PLAN, age=timedelta(seconds=100 - n))
    log_start = len(sim.request_log)
    first = web.get(f"{base}/activity", params={"category": "Invoices"})
    assert first.status_code == 200
    assert "Order number 054" in first.text and "Order number 005" in first.text
    assert "Order number 004" not in first.text
    assert "Page 1 of 2 · 55 emails" in first.text
    calls = list(sim.request_log)[log_start:]
    batches = [r for r in calls if r.endpoint == "POST /$batch"]
    items = [r for r in calls if r.in_batch]
    assert len(batches) == 3  # 50 subjects, at most 20 a batch, none throttled
    assert len(items) == 50 and {r.status for r in items} == {200}
    # Emails the user deleted end their dependsOn chain; the rest are asked again.
    for msg in messages[40:50:3]:
        sim.store.remove_message(org.tenant, org.alice.mailbox, msg)
    log_start = len(sim.request_log)
    again = web.get(f"{base}/activity", params={"category": "Invoices"}).text
    assert again.count("(no longer in the mailbox)") == 4
    assert all(f"Order number {n:03d}" in again for n in range(5, 55) if n not in (40, 43, 46, 49))
    assert "not available" not in again
    calls = list(sim.request_log)[log_start:]
    assert 3 < len([r for r in calls if r.endpoint == "POST /$batch"]) <= 8
    assert {r.status for r in calls if r.in_batch} <= {200, 404, 424}
    older = web.get(f"{base}/activity?category=Invoices&page=2")
    assert "Order number 004" in older.text and "Order number 000" in older.text
    assert "Order number 005" not in older.text
    assert 'href="/integrations/' in older.text and "Newer" in older.text


def test_activity_on_token_failure_hides_subjects_and_shows_the_status(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org, base = finished(web, postroom, sim)
    msg = org.deliver(org.alice, subject="Invoice while disconnected")
    add_entry(postroom, msg.immutable_id, plan=INVOICE_PLAN)
    events.revoke_sign_in_sessions(sim, org.alice)
    sim.clock.advance(3700)  # the cached access token expires; the refresh is refused
    page = web.get(f"{base}/activity")
    assert page.status_code == 200
    assert "Subjects are hidden until the integration is reconnected." in page.text
    assert 'data-status="needs_reconnect"' in page.text
    assert "Invoice while disconnected" not in page.text
    assert "Invoices" in page.text  # the decision is still shown
    with postroom.database.session() as db:
        item = db.scalar(select(Integration))
        assert item is not None and item.status == "needs_reconnect"
    categories = web.get(f"{base}/categories")
    assert categories.status_code == 200 and 'data-status="needs_reconnect"' in categories.text
