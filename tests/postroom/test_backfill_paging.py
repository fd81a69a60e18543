"""Backfill over several pages while it files the mail it reads (benchmark finding, issue 14).

Graph's ``@odata.nextLink`` for a folder's messages is an offset into what is left in the
folder. Backfill moves each filed email out of that folder, so following the link passed over
as many emails as the page had just moved: with every email filed, exactly half of the history
was processed and the backfill reported itself finished (``backfill.done`` 600 of 1,200 in
``benchmarks/bench_processing.py``). Each next page is now asked for from the newest date seen.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select, update

from m365sim.state import EmulatorState
from postroom.integrations.models import Category
from postroom.processing.models import LedgerEntry
from postroom.sync import backfill
from postroom.sync.models import FolderSync
from tests.postroom.conftest import Postroom
from tests.postroom.test_connect import connect_personal
from tests.postroom.test_sync import INVOICE_RULES, folder_of
from tests.postroom.webtools import post_form, sign_up


def test_backfill_files_every_email_across_pages_that_it_empties(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backfill, "BACKFILL_PAGE", 3)
    org = postroom.org(sim)
    now = datetime.now(UTC)
    history = [
        org.deliver(org.alice, subject=f"Invoice {n}", received=now - timedelta(days=20, hours=-n))
        for n in range(11)
    ]
    kept = org.deliver(org.alice, subject="Lunch on Friday?", received=now - timedelta(days=15))
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
