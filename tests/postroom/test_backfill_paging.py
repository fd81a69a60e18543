"""Backfill over several pages while it files the mail it reads (benchmark finding, issue 14).

Graph's ``@odata.nextLink`` for a folder's messages is an offset into what is left in the
folder. Backfill moves each filed email out of that folder, so following the link passed over
as many emails as the page had just moved: with every email filed, exactly half of the history
was processed and the backfill reported itself finished (``backfill.done`` 600 of 1,200 in
``benchmarks/bench_processing.py``). Each next page is now asked for from the newest date seen.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from m365sim.state import EmulatorState
from m365sim.store import Message
from postroom.integrations.models import Category
from postroom.processing.models import LedgerEntry
from postroom.sync import backfill
from postroom.sync.models import FolderSync
from tests.helpers import Org
from tests.postroom.conftest import Postroom
from tests.postroom.test_connect import connect_personal
from tests.postroom.test_sync import INVOICE_RULES, folder_of
from tests.postroom.webtools import post_form, sign_up


def _history(postroom: Postroom, sim: EmulatorState) -> tuple[Org, list[Message], Message]:
    org = postroom.org(sim)
    now = datetime.now(UTC)
    history = [
        org.deliver(org.alice, subject=f"Invoice {n}", received=now - timedelta(days=20, hours=-n))
        for n in range(11)
    ]
    kept = org.deliver(org.alice, subject="Lunch on Friday?", received=now - timedelta(days=15))
    return org, history, kept


def _set_up(web: httpx.Client, postroom: Postroom, org: Org) -> tuple[str, str]:
    """Connected with the Invoices rule and its folders' syncs set up; (base url, since)."""
    now = datetime.now(UTC)
    sign_up(web)
    base = connect_personal(web, postroom, org).removesuffix("/setup")
    since = (now - timedelta(days=30)).date().isoformat()
    for step, data in (
        (1, {}),
        (2, {"own": "on", "folders": "inbox"}),
        (3, {"name": "Invoices", "color": "preset7", "folder": "Invoices"}),
        (4, {"mode": "since", "since": since}),
        (5, {}),
    ):
        assert (
            post_form(web, f"{base}/setup/{step}", f"{base}/setup/{step}", data).status_code == 303
        )
    with postroom.database.session() as db:
        db.execute(update(Category).values(rules=INVOICE_RULES))
    postroom.drain()
    return base, since


def test_backfill_files_every_email_across_pages_that_it_empties(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backfill, "BACKFILL_PAGE", 3)
    org, history, kept = _history(postroom, sim)
    base, since = _set_up(web, postroom, org)
    started = post_form(web, f"{base}/existing-mail", f"{base}/existing-mail", {"since": since})
    assert started.status_code == 303
    postroom.drain()

    assert [folder_of(org.alice, m.immutable_id) for m in history] == ["Invoices"] * 11
    assert folder_of(org.alice, kept.immutable_id) == "Inbox"
    with postroom.database.session() as db:
        fs = db.scalar(select(FolderSync))
        assert fs is not None and fs.backfill_finished_at is not None
        assert (fs.backfill_total, fs.backfill_done) == (12, 12)
        assert len(list(db.scalars(select(LedgerEntry)))) == 12


def test_a_pause_stops_a_backfill_at_the_next_page_and_resume_carries_on(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Paused while a backfill files its first page: it stops before the next page, claims and
    touches nothing more; Resume carries on from its cursor and files the rest, once each."""
    monkeypatch.setattr(backfill, "BACKFILL_PAGE", 3)
    org, history, kept = _history(postroom, sim)
    base, since = _set_up(web, postroom, org)
    real = backfill.process_message
    seen: list[str] = []

    async def pause_on_first(*args: Any, **kwargs: Any) -> bool:
        if not seen:  # a person presses Pause while the first page is being filed
            assert post_form(web, base, f"{base}/pause").status_code == 303
        seen.append(str(args[3].get("id")))
        return await real(*args, **kwargs)

    monkeypatch.setattr(backfill, "process_message", pause_on_first)
    started = post_form(web, f"{base}/existing-mail", f"{base}/existing-mail", {"since": since})
    assert started.status_code == 303
    postroom.drain()
    monkeypatch.setattr(backfill, "process_message", real)
    assert 1 <= len(seen) <= 3  # the page in hand, no further
    ids = [m.immutable_id for m in history]
    with postroom.database.session() as db:
        claimed = set(db.scalars(select(LedgerEntry.message_id)))
        fs = db.scalar(select(FolderSync))
        assert fs is not None and fs.backfill_finished_at is None
    untouched = [i for i in ids if i not in seen]
    assert len(untouched) >= 8
    for message_id in untouched:
        assert message_id not in claimed
        assert folder_of(org.alice, message_id) == "Inbox"

    assert post_form(web, base, f"{base}/resume").status_code == 303
    for _ in range(5):
        postroom.drain()
    assert [folder_of(org.alice, i) for i in ids] == ["Invoices"] * 11
    assert folder_of(org.alice, kept.immutable_id) == "Inbox"
    with postroom.database.session() as db:
        fs = db.scalar(select(FolderSync))
        assert fs is not None and fs.backfill_finished_at is not None
        rows = list(db.scalars(select(LedgerEntry)))
    assert len(rows) == len({r.message_id for r in rows}) == 12  # each once
    moves = [
        r
        for r in sim.request_log
        if r.method == "POST" and r.path.endswith("/move") and r.mailbox_id == org.alice.id
    ]
    assert len(moves) == 11  # no email moved twice
