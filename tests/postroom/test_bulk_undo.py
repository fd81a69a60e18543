"""Bulk undo (issue 18): "undo everything Invoices did since <time>" when a rule was wrong —
a preview count first, then every email reversed once, through Microsoft's faults (10 % of the
moves and label writes answered 503), resumable, and nothing deleted."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import func, select

from m365sim.state import EmulatorState
from postroom.processing.models import LedgerEntry
from tests.postroom.conftest import Postroom
from tests.postroom.test_requests_per_email import _drain_all, _warm
from tests.postroom.test_sync import folder_of, setup_personal
from tests.postroom.webtools import csrf

EMAILS = 200


def _pending(postroom: Postroom) -> int:
    with postroom.database.session() as db:
        return int(
            db.scalar(select(func.count()).where(LedgerEntry.undo_state == "requested")) or 0
        )


def test_bulk_undo_of_a_wrong_rule_previews_then_reverses_every_email_once(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    base = setup_personal(web, postroom, org)
    postroom.drain()
    _warm(postroom, org)  # filed before "since": stays filed
    time.sleep(1.1)
    sent = [org.deliver(org.alice, subject=f"Invoice {n}") for n in range(EMAILS)]
    _drain_all(postroom)
    with postroom.database.session() as db:  # claimed just now: move "since" before them
        first = db.scalar(
            select(func.min(LedgerEntry.claimed_at)).where(
                LedgerEntry.message_id.in_([m.immutable_id for m in sent])
            )
        )
    assert first is not None
    since = first.replace(microsecond=0)
    assert all(folder_of(org.alice, m.immutable_id) == "Invoices" for m in sent)

    params = {"category": "Invoices", "since": since.strftime("%Y-%m-%d %H:%M:%S")}
    preview = web.get(f"{base}/activity/bulk-undo", params=params)
    assert preview.status_code == 200
    assert f"{EMAILS} emails" in preview.text  # the warm-up email is older: not counted
    assert (
        web.get(f"{base}/activity/bulk-undo", params={**params, "since": "soon"}).status_code == 400
    )
    assert (
        web.get(f"{base}/activity/bulk-undo", params={**params, "category": "Nope"}).status_code
        == 400
    )

    faults = f"{postroom.settings.authority_host}/_emulator/faults"
    for path, method in (("/move$", "POST"), (r"/messages/[^/]+$", "PATCH")):
        rule = web.post(
            faults,
            json={"path": path, "method": method, "status": 503, "rate": 0.1, "retry_after": 0.1},
        )
        assert rule.status_code == 201, rule.text
    try:
        asked = web.post(
            f"{base}/activity/bulk-undo",
            params=params,
            data={"csrf_token": csrf(preview.text)},
        )
        assert asked.status_code == 303 and f"asked={EMAILS}" in asked.headers["location"]
        assert 'data-undos-pending="' in web.get(asked.headers["location"]).text  # progress
        assert _pending(postroom) == EMAILS
        from postroom.sync.jobs import reconcile_now
        from postroom.sync.queue import make_runtime

        runtime = make_runtime(postroom.settings, postroom.database, postroom.app.state.box)
        for _ in range(10):  # jobs retried; a lost one is re-queued by the reconcile
            _drain_all(postroom)
            if not _pending(postroom):
                break
            with postroom.database.session() as db:  # as if two minutes had passed
                db.execute(
                    LedgerEntry.__table__.update()
                    .where(LedgerEntry.undo_state == "requested")
                    .values(undo_requested_at=datetime.now(UTC) - timedelta(minutes=5))
                )

            async def reconcile() -> None:
                async with runtime.queue.open_async():
                    await reconcile_now(runtime)

            asyncio.run(reconcile())
    finally:
        web.delete(faults)
    assert _pending(postroom) == 0
    for msg in sent:
        assert folder_of(org.alice, msg.immutable_id) == "Inbox"
        assert org.alice.mailbox.messages[msg.immutable_id].categories == []
    with postroom.database.session() as db:
        states = db.execute(
            select(LedgerEntry.undo_state, func.count()).group_by(LedgerEntry.undo_state)
        ).all()
    assert dict(states) == {"done": EMAILS, None: 1}  # the warm-up email is untouched
    # once: one successful move back per email
    back = [
        r
        for r in sim.request_log
        if r.method == "POST" and r.path.endswith("/move") and r.status in (200, 201)
    ]
    per_message: dict[str, int] = {}
    for r in back:
        for msg in sent:
            if msg.immutable_id in r.path:
                per_message[msg.immutable_id] = per_message.get(msg.immutable_id, 0) + 1
    assert set(per_message.values()) == {2}  # filed once, moved back once
    assert any(r.status == 503 and r.path.endswith("/move") for r in sim.request_log)
    assert [d for d in sim.store.deletions if d.mailbox_id == org.alice.id] == []
