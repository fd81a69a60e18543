"""Real-time processing end to end: m365sim notifies Postroom's webhook, the job queue runs the
sync, each new email is labelled, filed and forwarded exactly once — and never deleted.

Everything is real: m365sim over HTTPS delivering notifications to Postroom's HTTP endpoint,
procrastinate on PostgreSQL, the Graph client, the ledger.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from sqlalchemy import select, text, update

from m365sim.identity import events
from m365sim.state import EmulatorState
from m365sim.store import User
from postroom.integrations.models import Category, Integration
from postroom.processing.models import LedgerEntry
from postroom.sync.models import FolderSync
from tests.helpers import Org
from tests.postroom.conftest import Postroom
from tests.postroom.msdriver import through_microsoft
from tests.postroom.test_connect import connect_personal
from tests.postroom.webtools import post_form, sign_up

INVOICE_RULES = {
    "mode": "any",
    "items": [{"field": "Subject", "operator": "CONTAINS", "value": "invoice"}],
}


def setup_personal(
    web: httpx.Client,
    postroom: Postroom,
    org: Org,
    *,
    forward_to: str = "",
    shared: str = "",
    options: dict[str, str] | None = None,
    start: str = "",
) -> str:
    """Alice connects personally; category Invoices → Finance/Invoices (+forward)."""
    sign_up(web)
    base = connect_personal(web, postroom, org, options=options).removesuffix("/setup")
    steps: list[tuple[int, dict[str, str]]] = [
        (1, {}),
        (2, {"own": "on", "folders": "inbox", "shared": shared}),
        (
            3,
            {
                "name": "Invoices",
                "color": "preset7",
                "folder": "Finance/Invoices",
                "forward_to": forward_to,
            },
        ),
        (4, {"mode": "off"}),
        (5, {"start": start} if start else {}),
    ]
    for step, data in steps:
        response = post_form(web, f"{base}/setup/{step}", f"{base}/setup/{step}", data)
        assert response.status_code == 303, response.text[:1000]
    with postroom.database.session() as db:
        db.execute(update(Category).values(rules=INVOICE_RULES))
    return base


def wait_for_jobs(postroom: Postroom, timeout: float = 10.0) -> int:
    """Wait until a job is queued and the emulator has no notification left to send (one
    change can notify several subscriptions - the inbox's and a watched folder's - and a
    drain that starts after the first would miss the others); returns the jobs waiting."""
    from m365sim.notifications.delivery import notifier_for

    notifier = notifier_for(postroom.sim) if postroom.sim is not None else None
    deadline = time.monotonic() + timeout
    quiet = 0
    waiting = 0
    while time.monotonic() < deadline:
        with postroom.database.engine.connect() as conn:
            waiting = conn.execute(
                text("SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'")
            ).scalar_one()
        quiet = quiet + 1 if notifier is None or notifier.idle else 0
        if waiting and quiet >= 2:
            return int(waiting)
        time.sleep(0.05)
    return int(waiting)  # (a notifier still retrying a delivery: what has arrived so far)


def process_filed_mail_too(postroom: Postroom) -> None:
    """Untick "leave alone email that already has a category of its own" (on by default):
    for the tests of how Postroom's category goes beside the person's own."""
    from postroom.integrations.models import Integration

    with postroom.database.session() as db:
        for integration in db.scalars(select(Integration)):
            integration.options = {**(integration.options or {}), "respect_filed": False}


def folder_of(user: User, message_id: str) -> str:
    mailbox = user.mailbox
    msg = mailbox.messages[message_id]
    return mailbox.folders[msg.folder_id].display_name


def _ledger(postroom: Postroom) -> list[LedgerEntry]:
    with postroom.database.session() as db:
        return list(db.scalars(select(LedgerEntry)))


def test_new_mail_is_labelled_filed_and_forwarded_exactly_once(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    before = org.deliver(org.alice, subject="Invoice 0 from before setup")
    time.sleep(1.1)  # Graph's receivedDateTime has whole seconds
    setup_personal(web, postroom, org, forward_to=org.bob.user_principal_name)
    assert postroom.drain() >= 1  # setup: folder sync, subscription, first sync
    with postroom.database.session() as db:
        fs = db.scalar(select(FolderSync))
        assert fs is not None and fs.mode == "webhook" and fs.subscription_id
        assert fs.client_state_hash and len(fs.client_state_hash) == 64
    assert folder_of(org.alice, before.immutable_id) == "Inbox"  # old mail left alone

    process_filed_mail_too(postroom)
    msg = org.deliver(org.alice, subject="Invoice 4711 for order 99", categories=["Personal"])
    other = org.deliver(org.alice, subject="Lunch on Friday?")
    assert wait_for_jobs(postroom) >= 1, "the webhook did not enqueue a sync"
    postroom.drain()

    assert folder_of(org.alice, msg.immutable_id) == "Invoices"
    moved = org.alice.mailbox.messages[msg.immutable_id]
    assert moved.categories == ["Personal", "Invoices"]
    parent = org.alice.mailbox.folders[moved.folder_id].parent_id
    assert org.alice.mailbox.folders[parent or ""].display_name == "Finance"
    assert folder_of(org.alice, other.immutable_id) == "Inbox"
    assert org.alice.mailbox.messages[other.immutable_id].categories == []
    forwards = [m for m in org.bob.mailbox.messages.values() if "Invoice 4711" in m.subject]
    assert len(forwards) == 1
    entries = {e.message_id: e for e in _ledger(postroom)}
    assert entries[msg.immutable_id].state == "done"

    # Notifications for our own changes, a reconcile and a second drain change nothing.
    from postroom.sync.jobs import reconcile_now

    with postroom.database.session() as db:
        db.execute(update(FolderSync).values(last_synced_at=None))
    _run(postroom, reconcile_now)
    postroom.drain()
    forwards = [m for m in org.bob.mailbox.messages.values() if "Invoice 4711" in m.subject]
    assert len(forwards) == 1
    assert org.alice.mailbox.messages[msg.immutable_id].categories == ["Personal", "Invoices"]
    assert [d for d in sim.store.deletions if d.mailbox_id == org.alice.id] == []
    # No content in the database: the subject is nowhere in the ledger.
    with postroom.database.engine.connect() as conn:
        dump = " ".join(str(row) for row in conn.execute(text("SELECT * FROM ledger")))
    assert "4711" not in dump and "Invoice 4711" not in dump


def _run(postroom: Postroom, fn: Any) -> Any:
    import asyncio

    from postroom.sync.queue import make_runtime

    runtime = make_runtime(postroom.settings, postroom.database, postroom.app.state.box)

    async def main() -> Any:
        async with runtime.queue.open_async():
            return await fn(runtime)

    return asyncio.run(main())


def test_webhook_validation_spoofing_and_garbage(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    setup_personal(web, postroom, org)
    postroom.drain()
    echo = web.post("/webhooks/graph", params={"validationToken": "a b+c<script>"})
    assert echo.status_code == 200 and echo.text == "a b+c<script>"
    assert echo.headers["content-type"].startswith("text/plain")
    with postroom.database.session() as db:
        fs = db.scalar(select(FolderSync))
        assert fs is not None
        subscription_id = fs.subscription_id
    spoofed = web.post(
        "/webhooks/graph",
        json={
            "value": [
                {
                    "subscriptionId": subscription_id,
                    "clientState": "guessed",
                    "changeType": "created",
                    "resource": "Users/x/Messages/y",
                }
            ]
        },
    )
    assert spoofed.status_code == 202
    unknown = web.post(
        "/webhooks/graph", json={"value": [{"subscriptionId": "not-ours", "clientState": "x"}]}
    )
    assert unknown.status_code == 202
    assert wait_for_jobs(postroom, timeout=0.5) == 0
    for bad in (b"{not json", b'{"value": "nope"}', b'{"value": [{"no": "id"}]}', b"x" * 1_100_000):
        response = web.post(
            "/webhooks/graph", content=bad, headers={"content-type": "application/json"}
        )
        assert response.status_code == 400
    assert wait_for_jobs(postroom, timeout=0.2) == 0


def test_a_lost_notification_is_repaired_by_reconcile(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    setup_personal(web, postroom, org)
    postroom.drain()
    faults = f"{postroom.settings.authority_host}/_emulator/notification-faults"
    assert web.put(faults, json={"drop_rate": 1.0}).status_code == 200  # Graph loses them all
    try:
        msg = org.deliver(org.alice, subject="Invoice lost in the post")
        assert wait_for_jobs(postroom, timeout=1.0) == 0
    finally:
        web.delete(faults)
    from postroom.sync.jobs import reconcile_now

    with postroom.database.session() as db:
        db.execute(update(FolderSync).values(last_synced_at=None))
    counts = _run(postroom, reconcile_now)
    assert counts["sync"] == 1
    postroom.drain()
    assert folder_of(org.alice, msg.immutable_id) == "Invoices"


def test_token_failure_pauses_and_reconnect_loses_nothing(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    base = setup_personal(web, postroom, org)
    postroom.drain()
    events.revoke_sign_in_sessions(sim, org.alice)
    sim.clock.advance(3700)  # the cached access token expires; the refresh is refused
    msg = org.deliver(org.alice, subject="Invoice while disconnected")
    wait_for_jobs(postroom)
    postroom.drain()
    with postroom.database.session() as db:
        item = db.scalar(select(Integration))
        assert item is not None
        assert (item.status, item.status_reason) == ("needs_reconnect", "sessions_revoked")
    assert folder_of(org.alice, msg.immutable_id) == "Inbox"
    # Reconnect: sign in again; the catch-up processes what arrived meanwhile.
    start = post_form(web, base, f"{base}/reconnect")
    back = through_microsoft(
        web,
        start,
        back_to=postroom.url,
        username=org.alice.user_principal_name,
        password="alice-pass",
    )
    assert web.get(back).status_code == 303
    from postroom.sync.jobs import reconcile_now

    with postroom.database.session() as db:
        db.execute(update(FolderSync).values(last_synced_at=None))
    _run(postroom, reconcile_now)
    postroom.drain()
    assert folder_of(org.alice, msg.immutable_id) == "Invoices"


def test_delegated_shared_mailbox_is_polled(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    setup_personal(web, postroom, org, shared=org.shared.user_principal_name)
    postroom.drain()
    with postroom.database.session() as db:
        modes = {fs.mode for fs in db.scalars(select(FolderSync))}
    assert modes == {"webhook", "polling"}
    msg = org.deliver(org.shared, subject="Invoice to the shared mailbox")
    from postroom.sync.jobs import reconcile_now

    with postroom.database.session() as db:
        db.execute(update(FolderSync).values(last_synced_at=None))
    _run(postroom, reconcile_now)
    postroom.drain()
    assert folder_of(org.shared, msg.immutable_id) == "Invoices"


def test_backfill_processes_history_oldest_first_without_forwarding(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    from datetime import UTC, datetime, timedelta

    org = postroom.org(sim)
    now = datetime.now(UTC)
    old = [
        org.deliver(org.alice, subject=f"Invoice {n} (history)", received=now - timedelta(days=d))
        for n, d in ((1, 20), (2, 10), (3, 5))
    ]
    too_old = org.deliver(
        org.alice, subject="Invoice from long ago", received=now - timedelta(days=60)
    )
    time.sleep(1.1)
    sign_up(web)
    base = connect_personal(web, postroom, org).removesuffix("/setup")
    since = (now - timedelta(days=30)).date().isoformat()
    for step, data in (
        (1, {}),
        (2, {"own": "on", "folders": "inbox"}),
        (
            3,
            {
                "name": "Invoices",
                "color": "preset7",
                "folder": "Invoices",
                "forward_to": org.bob.user_principal_name,
            },
        ),
        (4, {"mode": "since", "since": since}),
        (5, {}),
    ):
        assert (
            post_form(web, f"{base}/setup/{step}", f"{base}/setup/{step}", data).status_code == 303
        )
    with postroom.database.session() as db:
        db.execute(update(Category).values(rules=INVOICE_RULES))
    postroom.drain()
    # Finish plans the backfill; the person starts it once the rules exist (issue 19 item 6).
    started = post_form(web, f"{base}/existing-mail", f"{base}/existing-mail", {"since": since})
    assert started.status_code == 303
    postroom.drain()
    for msg in old:
        assert folder_of(org.alice, msg.immutable_id) == "Invoices"
    assert folder_of(org.alice, too_old.immutable_id) == "Inbox"
    # historical mail is labelled and filed, not forwarded (the person did not opt in)
    assert not [m for m in org.bob.mailbox.messages.values() if "(history)" in m.subject]
    with postroom.database.session() as db:
        fs = db.scalar(select(FolderSync))
        assert fs is not None
        assert (fs.backfill_total, fs.backfill_done) == (3, 3)
        assert fs.backfill_finished_at is not None
        item = db.scalar(select(Integration))
        assert item is not None and item.status == "connected"
        entries = list(db.scalars(select(LedgerEntry)))
    assert all(e.historical for e in entries) and len(entries) == 3
    page = web.get(base)
    assert "3 of 3 looked at" in page.text
    # the CLI shows the same progress
    from typer.testing import CliRunner

    from postroom.cli import app as cli

    result = CliRunner().invoke(
        cli,
        ["backfill", "status"],
        env={"DATABASE_URL": postroom.database.url, "POSTROOM_DATA_DIR": "/tmp"},
    )
    assert result.exit_code == 0, result.output
    assert "3/3" in result.output and "done" in result.output


def test_expired_delta_state_restarts_without_repeating(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    setup_personal(web, postroom, org, forward_to=org.bob.user_principal_name)
    postroom.drain()
    first = org.deliver(org.alice, subject="Invoice A")
    wait_for_jobs(postroom)
    postroom.drain()
    reset = web.post(
        f"{postroom.settings.authority_host}/_emulator/mailboxes/{org.alice.id}/sync-state/reset"
    )
    assert reset.status_code == 200
    second = org.deliver(org.alice, subject="Invoice B")
    wait_for_jobs(postroom)
    postroom.drain()
    assert folder_of(org.alice, first.immutable_id) == "Invoices"
    assert folder_of(org.alice, second.immutable_id) == "Invoices"
    forwards = [m.subject for m in org.bob.mailbox.messages.values()]
    assert sorted(s for s in forwards if "Invoice" in s) == ["FW: Invoice A", "FW: Invoice B"]


def test_lifecycle_subscription_removed_recreates_and_catches_up(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    setup_personal(web, postroom, org)
    postroom.drain()
    with postroom.database.session() as db:
        fs = db.scalar(select(FolderSync))
        assert fs is not None
        old_subscription = fs.subscription_id
    sent = web.post(
        f"{postroom.settings.authority_host}/_emulator/subscriptions/{old_subscription}/lifecycle",
        json={"event": "subscriptionRemoved"},
    )
    assert sent.status_code in (200, 202), sent.text
    assert wait_for_jobs(postroom) >= 1
    postroom.drain()
    with postroom.database.session() as db:
        fs = db.scalar(select(FolderSync))
        assert fs is not None and fs.mode == "webhook"
        assert fs.subscription_id and fs.subscription_id != old_subscription
    msg = org.deliver(org.alice, subject="Invoice after re-subscribing")
    assert wait_for_jobs(postroom) >= 1
    postroom.drain()
    assert folder_of(org.alice, msg.immutable_id) == "Invoices"


def test_reconcile_renews_subscriptions_at_half_life(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    from datetime import UTC, datetime, timedelta

    from postroom.sync.jobs import reconcile_now

    org = postroom.org(sim)
    setup_personal(web, postroom, org)
    postroom.drain()
    soon = datetime.now(UTC) + timedelta(hours=2)
    with postroom.database.session() as db:
        db.execute(update(FolderSync).values(subscription_expires=soon))
    counts = _run(postroom, reconcile_now)
    assert counts["renew"] == 1
    postroom.drain()
    with postroom.database.session() as db:
        fs = db.scalar(select(FolderSync))
        assert fs is not None and fs.subscription_expires is not None
        assert fs.subscription_expires > soon + timedelta(hours=20)
