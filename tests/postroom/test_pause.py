"""Pause and Resume (issue 18): a paused integration processes no email — not from
notifications, not from the reconcile — and Resume catches up through delta, losing nothing.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from m365sim.state import EmulatorState
from postroom.processing.models import LedgerEntry
from tests.postroom.conftest import Postroom
from tests.postroom.test_requests_per_email import _drain_all, _warm
from tests.postroom.test_sync import folder_of, setup_personal
from tests.postroom.webtools import csrf, post_form


def test_a_paused_integration_touches_nothing_and_resume_catches_up(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    base = setup_personal(web, postroom, org)
    postroom.drain()
    _warm(postroom, org)

    page = web.get(base).text
    assert 'action="' + base + '/pause"' in page
    paused = post_form(web, base, f"{base}/pause")
    assert paused.status_code == 303
    page = web.get(base).text
    assert 'data-status="paused"' in page and "processes no email" in page and "Resume" in page
    assert post_form(web, base, f"{base}/pause").status_code == 409  # already paused

    waiting = [org.deliver(org.alice, subject=f"Invoice {n}") for n in range(1, 4)]
    _drain_all(postroom)
    from postroom.sync.jobs import reconcile_now
    from postroom.sync.queue import make_runtime

    runtime = make_runtime(postroom.settings, postroom.database, postroom.app.state.box)

    async def reconcile() -> dict[str, int]:
        async with runtime.queue.open_async():
            return await reconcile_now(runtime)

    asyncio.run(reconcile())
    _drain_all(postroom)
    for msg in waiting:  # untouched, and not even claimed
        assert folder_of(org.alice, msg.immutable_id) == "Inbox"
        assert org.alice.mailbox.messages[msg.immutable_id].categories == []
    with postroom.database.session() as db:
        claimed = set(db.scalars(select(LedgerEntry.message_id)))
    assert not claimed & {m.immutable_id for m in waiting}
    writes = [
        r
        for r in list(sim.request_log)
        if r.method in ("PATCH", "POST") and r.mailbox_id == org.alice.id
    ]
    assert not any(m.immutable_id in r.path for r in writes for m in waiting)

    resumed = post_form(web, base, f"{base}/resume")
    assert resumed.status_code == 303
    assert 'data-status="connected"' in web.get(base).text
    _drain_all(postroom)
    for msg in waiting:  # caught up: every email that arrived while paused is filed
        assert folder_of(org.alice, msg.immutable_id) == "Invoices"
        assert org.alice.mailbox.messages[msg.immutable_id].categories == ["Invoices"]
    token = csrf(web.get(base).text)
    again = web.post(f"{base}/resume", data={"csrf_token": token})
    assert again.status_code == 409  # not paused any more
    assert [d for d in sim.store.deletions if d.mailbox_id == org.alice.id] == []


def test_a_pause_during_a_sync_stops_it_at_the_next_page_and_resume_finishes(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sync that is reading a long delta (pages of 2 here) when the integration is paused
    finishes the email in hand, then stops before the next page: nothing after it is claimed
    or touched. Resume carries on from the saved page and loses nothing."""
    from postroom.sync import engine

    org = postroom.org(sim)
    base = setup_personal(web, postroom, org)
    postroom.drain()
    _warm(postroom, org)
    saved = sim.config.max_page_size
    sim.config.max_page_size = 2  # the Prefer: odata.maxpagesize Postroom sends is capped at 2
    try:
        waiting = [org.deliver(org.alice, subject=f"Invoice {n}") for n in range(1, 7)]
        real = engine.process_message
        seen: list[str] = []

        async def pause_on_first(*args: Any, **kwargs: Any) -> bool:
            if not seen:  # a person presses Pause while the first page is being processed
                assert post_form(web, base, f"{base}/pause").status_code == 303
            seen.append(str(args[3].get("id")))
            return await real(*args, **kwargs)

        monkeypatch.setattr(engine, "process_message", pause_on_first)
        _drain_all(postroom)
        monkeypatch.setattr(engine, "process_message", real)
    finally:
        sim.config.max_page_size = saved
    assert 1 <= len(seen) <= 2  # the page in hand, no further
    ids = [m.immutable_id for m in waiting]
    filed = [i for i in ids if folder_of(org.alice, i) == "Invoices"]
    assert set(filed) <= set(seen)
    with postroom.database.session() as db:
        claimed = set(db.scalars(select(LedgerEntry.message_id)))
    untouched = [i for i in ids if i not in seen]
    assert len(untouched) >= 4
    for message_id in untouched:
        assert message_id not in claimed
        assert folder_of(org.alice, message_id) == "Inbox"
        assert org.alice.mailbox.messages[message_id].categories == []

    assert post_form(web, base, f"{base}/resume").status_code == 303
    _drain_all(postroom)
    for message_id in ids:  # every one filed once resumed
        assert folder_of(org.alice, message_id) == "Invoices"
        assert org.alice.mailbox.messages[message_id].categories == ["Invoices"]
