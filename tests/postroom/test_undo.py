"""Undo from the activity view (issue 18): Postroom reverses exactly what it did to one email —
its categories off (the person's own stay), back to the folder it came from (recorded by id
before the move) — once, crash-safe, and the model learns "not this category". Nothing is
deleted.

Everything is real: m365sim over HTTPS, Postroom's webhook, the job queue on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import re
from html import unescape
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from m365sim.state import EmulatorState
from postroom.graph import GraphClient, TransientError
from postroom.learning.models import LearningEvent
from postroom.processing.models import LedgerEntry
from tests.helpers import Org
from tests.postroom.conftest import Postroom
from tests.postroom.msdriver import reconnect
from tests.postroom.test_requests_per_email import _drain_all, _warm
from tests.postroom.test_sync import folder_of, process_filed_mail_too, setup_personal
from tests.postroom.webtools import csrf, post_form


def _row(postroom: Postroom, message_id: str) -> LedgerEntry:
    with postroom.database.session() as db:
        row = db.scalar(select(LedgerEntry).where(LedgerEntry.message_id == message_id))
        assert row is not None
        db.expunge(row)
        return row


def _writes(sim: EmulatorState, message_id: str) -> list[str]:
    return [
        f"{r.method} {r.status}"
        for r in sim.request_log
        if r.method in ("PATCH", "POST") and message_id in r.path
    ]


def _filed(web: httpx.Client, postroom: Postroom, sim: EmulatorState) -> tuple[Org, str, str]:
    """Alice's Invoices rule filed one email that carried her own category Personal."""
    org = postroom.org(sim)
    base = setup_personal(web, postroom, org)
    postroom.drain()
    _warm(postroom, org)
    process_filed_mail_too(postroom)
    msg = org.deliver(org.alice, subject="Invoice 4711", categories=["Personal"])
    _drain_all(postroom)
    assert folder_of(org.alice, msg.immutable_id) == "Invoices"
    assert org.alice.mailbox.messages[msg.immutable_id].categories == ["Personal", "Invoices"]
    return org, base, msg.immutable_id


def _undo(web: httpx.Client, base: str, entry_id: str) -> httpx.Response:
    return post_form(web, f"{base}/activity", f"{base}/activity/{entry_id}/undo")


def test_undo_restores_categories_and_folder_keeps_the_persons_own_and_happens_once(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org, base, message_id = _filed(web, postroom, sim)
    row = _row(postroom, message_id)
    assert row.source_folder_id == org.alice.mailbox.well_known["inbox"]  # recorded by id
    assert row.filed_folder_id == org.alice.mailbox.messages[message_id].folder_id

    page = web.get(f"{base}/activity").text
    assert f"/activity/{row.id}/undo" in page and ">Undo<" in page
    answer = _undo(web, base, row.id)
    assert answer.status_code == 303 and answer.headers["location"].endswith("?undo=requested")
    assert "Undo requested" in web.get(answer.headers["location"]).text
    _drain_all(postroom)

    current = org.alice.mailbox.messages[message_id]
    assert current.categories == ["Personal"]  # hers stays, ours is gone
    assert folder_of(org.alice, message_id) == "Inbox"
    done = _row(postroom, message_id)
    assert (done.undo_state, done.undo_note) == ("done", None)
    assert done.undo_done == ["learned", "unlabel", "move_back"]
    assert done.state == "done" and (done.plan or {}).get("corrected_to") == ""
    with postroom.database.session() as db:
        events = [(e.kind, e.category, e.decided_by) for e in db.scalars(select(LearningEvent))]
    assert events == [("rejection", "Invoices", "rule")]  # learned as "not this category"
    assert "undone" in web.get(f"{base}/activity").text

    # Once: a second click, and the job run again, change nothing in the mailbox.
    writes = _writes(sim, message_id)
    again = _undo(web, base, row.id)
    assert again.status_code == 303 and again.headers["location"].endswith("?undo=already")
    from postroom.sync.queue import make_runtime
    from postroom.sync.undo import run_undo

    runtime = make_runtime(postroom.settings, postroom.database, postroom.app.state.box)
    result = asyncio.run(run_undo(runtime, row.id))
    assert result is not None and result.state == "done"
    _drain_all(postroom)
    assert _writes(sim, message_id) == writes
    # The sync saw the email come back to the Inbox without our category: not processed
    # again, and not learned a second time.
    assert org.alice.mailbox.messages[message_id].categories == ["Personal"]
    with postroom.database.session() as db:
        assert len(list(db.scalars(select(LearningEvent)))) == 1
        rows = list(db.scalars(select(LedgerEntry).where(LedgerEntry.message_id == message_id)))
        assert len(rows) == 1
    assert [d for d in sim.store.deletions if d.mailbox_id == org.alice.id] == []


def test_undo_survives_a_failure_between_its_steps_and_repeats_nothing(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState, monkeypatch: pytest.MonkeyPatch
) -> None:
    org, base, message_id = _filed(web, postroom, sim)
    row = _row(postroom, message_id)
    original = GraphClient.move
    failed: list[str] = []

    async def move_fails_once(self: GraphClient, mailbox: str, mid: str, dest: str) -> Any:
        if not failed:  # as if the worker died right after the categories came off
            failed.append(dest)
            raise TransientError("gateway timeout", code="gatewayTimeout")
        return await original(self, mailbox, mid, dest)

    monkeypatch.setattr(GraphClient, "move", move_fails_once)
    assert _undo(web, base, row.id).status_code == 303
    _drain_all(postroom)
    assert failed  # the first move back failed ...
    if _row(postroom, message_id).undo_state == "requested":
        # the job's retry is scheduled later (back-off): run what it, or the reconcile, runs
        from postroom.sync.queue import make_runtime
        from postroom.sync.undo import run_undo

        runtime = make_runtime(postroom.settings, postroom.database, postroom.app.state.box)
        asyncio.run(run_undo(runtime, row.id))
    done = _row(postroom, message_id)
    assert done.undo_state == "done"  # ... and the retry finished it
    assert folder_of(org.alice, message_id) == "Inbox"
    assert org.alice.mailbox.messages[message_id].categories == ["Personal"]
    writes = _writes(sim, message_id)
    undo_patches = [w for w in writes if w.startswith("PATCH")]
    assert len(undo_patches) == 2  # the label, and one unlabel: not repeated by the retry
    assert [d for d in sim.store.deletions if d.mailbox_id == org.alice.id] == []


def test_an_email_a_person_moved_since_stays_where_they_put_it(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org, base, message_id = _filed(web, postroom, sim)
    row = _row(postroom, message_id)
    mailbox = org.alice.mailbox
    msg = mailbox.messages[message_id]
    msg.folder_id = mailbox.well_known["archive"]
    sim.store.update_message(org.tenant, mailbox, msg)
    assert _undo(web, base, row.id).status_code == 303
    _drain_all(postroom)
    assert folder_of(org.alice, message_id) == "Archive"
    assert mailbox.messages[message_id].categories == ["Personal"]
    done = _row(postroom, message_id)
    assert (done.undo_state, done.undo_note) == ("done", "left_where_moved")
    assert "left in the folder a person moved it to" in web.get(f"{base}/activity").text


def test_undo_is_refused_for_what_postroom_did_not_do_and_for_other_workspaces(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org, base, message_id = _filed(web, postroom, sim)
    row = _row(postroom, message_id)
    token = csrf(web.get(f"{base}/activity").text)
    # no CSRF token: refused, nothing recorded
    assert web.post(f"{base}/activity/{row.id}/undo", data={}).status_code in (400, 403)
    assert _row(postroom, message_id).undo_state is None
    # an id of no row of this integration
    missing = web.post(f"{base}/activity/{'x' * 300}/undo", data={"csrf_token": token})
    assert missing.status_code == 404
    # a row Postroom did nothing to (skipped) cannot be undone
    with postroom.database.session() as db:
        db.add(
            LedgerEntry(
                integration_id=row.integration_id,
                mailbox_id=row.mailbox_id,
                message_id="AAMk-skipped",
                message_key="0" * 64,
                state="skipped",
                actions_done=[],
            )
        )
    with postroom.database.session() as db:
        skipped = db.scalar(select(LedgerEntry).where(LedgerEntry.message_id == "AAMk-skipped"))
        assert skipped is not None
        skipped_id = skipped.id
    refused = web.post(f"{base}/activity/{skipped_id}/undo", data={"csrf_token": token})
    assert refused.status_code == 409 and "can be undone" in refused.text
    # another workspace cannot undo this one's email: the integration is not theirs
    from tests.postroom.test_security_invitations import client
    from tests.postroom.webtools import sign_up

    with client(postroom) as stranger:
        sign_up(stranger, email="mallory@evil.test", workspace="Evil")
        page = stranger.get("/integrations")
        token = csrf(page.text)
        theirs = stranger.post(f"{base}/activity/{row.id}/undo", data={"csrf_token": token})
        assert theirs.status_code == 404
    assert _row(postroom, message_id).undo_state is None
    assert re.search(r"Invoices", web.get(f"{base}/activity").text)


def test_fix_refiles_learns_the_correction_and_the_next_similar_email_follows(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    from tests.postroom.test_learning import (
        _add_categories,
        _deliver_and_sync,
        _integration_id,
        _plan,
        _train,
    )

    org = postroom.org(sim)
    base = setup_personal(web, postroom, org)
    integration_id = _integration_id(base)
    _add_categories(postroom, integration_id, support_folder="Support", sales_folder="Sales")
    postroom.drain()
    _train(postroom, integration_id)
    body = "Zanzibar printer refurbished quoted Quixotic, broken toner drum needs a replacement."
    first = _deliver_and_sync(postroom, org, subject="Quixotic Zanzibar printer", body=body)
    plan = _plan(postroom, first)
    assert plan["category"] == "Support" and plan["decided_by"] == "model"
    assert folder_of(org.alice, first) == "Support"

    row = _row(postroom, first)
    page = web.get(f"{base}/activity").text
    assert f"/activity/{row.id}/fix" in page
    token = csrf(page)
    bad = web.post(f"{base}/activity/{row.id}/fix", data={"csrf_token": token, "category": "Nope"})
    assert bad.status_code == 400 and _row(postroom, first).undo_state is None
    same = web.post(
        f"{base}/activity/{row.id}/fix", data={"csrf_token": token, "category": "Support"}
    )
    assert same.status_code == 409
    fixed = web.post(
        f"{base}/activity/{row.id}/fix", data={"csrf_token": token, "category": "Sales"}
    )
    assert fixed.status_code == 303 and fixed.headers["location"].endswith("?undo=fix")
    _drain_all(postroom)

    assert org.alice.mailbox.messages[first].categories == ["Sales"]
    assert folder_of(org.alice, first) == "Sales"
    done = _row(postroom, first)
    assert done.undo_state == "done" and (done.plan or {}).get("corrected_to") == "Sales"
    assert done.undo_done == ["learned", "unlabel", "fix_label", "move_back"]
    with postroom.database.session() as db:
        events = [(e.kind, e.category, e.decided_by) for e in db.scalars(select(LearningEvent))]
    learned = [e for e in events if e[0] in ("correction", "rejection")]
    assert learned == [("correction", "Sales", "model")]  # the same path as in Outlook
    assert "fixed: Sales" in web.get(f"{base}/activity").text

    second = _deliver_and_sync(
        postroom,
        org,
        subject="Quixotic Zanzibar printer",
        body="Zanzibar printer refurbished quoted Quixotic, the toner drum needs a replacement.",
    )
    assert _plan(postroom, second)["category"] == "Sales"  # the next similar one follows
    assert [d for d in sim.store.deletions if d.mailbox_id == org.alice.id] == []


def test_an_undo_request_whose_job_was_lost_is_queued_again_by_the_reconcile(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from postroom.sync.jobs import reconcile_now
    from postroom.sync.queue import make_runtime

    org, base, message_id = _filed(web, postroom, sim)
    row = _row(postroom, message_id)
    with postroom.database.session() as db:  # recorded, but its job never reached the queue
        db.execute(
            update(LedgerEntry)
            .where(LedgerEntry.id == row.id)
            .values(
                undo_state="requested",
                undo_requested_at=datetime.now(UTC) - timedelta(minutes=5),
            )
        )
    runtime = make_runtime(postroom.settings, postroom.database, postroom.app.state.box)

    async def reconcile() -> dict[str, int]:
        async with runtime.queue.open_async():
            return await reconcile_now(runtime)

    assert asyncio.run(reconcile())["undo"] == 1
    _drain_all(postroom)
    assert _row(postroom, message_id).undo_state == "done"
    assert folder_of(org.alice, message_id) == "Inbox"


def test_an_undo_still_waiting_at_disconnect_is_ended_and_said_so(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    """Disconnect cancels the undo jobs still waiting: their rows said "undo under way" for
    good. They end "undo failed" with the reason, and the disconnect's summary counts them."""
    org, base, message_id = _filed(web, postroom, sim)
    row = _row(postroom, message_id)
    assert _undo(web, base, row.id).status_code == 303  # asked; its job has not run
    assert post_form(web, f"{base}/disconnect", f"{base}/disconnect").status_code == 303
    _drain_all(postroom)  # the disconnect job; the undo job is cancelled or finds it stopped
    ended = _row(postroom, message_id)
    assert (ended.undo_state, ended.undo_note) == ("failed", "disconnected")
    msg = org.alice.mailbox.messages[message_id]
    assert msg.categories == ["Personal", "Invoices"]  # nothing reversed after the disconnect
    assert folder_of(org.alice, message_id) == "Invoices"
    activity = unescape(web.get(f"{base}/activity").text)
    assert "undo under way" not in activity
    assert "undo failed: the integration was disconnected before Postroom got to it" in activity
    assert "1 undo was still waiting and was not carried out" in unescape(web.get(base).text)

    # Reconnected, the person can ask again (the request a disconnect ended was no refusal),
    # and it is carried out once.
    reconnect(
        web,
        base,
        back_to=postroom.url,
        username=org.alice.user_principal_name,
        password="alice-pass",
    )
    _drain_all(postroom)
    assert f"/activity/{row.id}/undo" in web.get(f"{base}/activity").text
    answer = _undo(web, base, row.id)
    assert answer.headers["location"].endswith("?undo=requested")
    assert _undo(web, base, row.id).headers["location"].endswith("?undo=already")
    assert (_row(postroom, message_id).undo_state, _row(postroom, message_id).undo_note) == (
        "requested",
        None,
    )
    _drain_all(postroom)
    assert _row(postroom, message_id).undo_state == "done"
    assert org.alice.mailbox.messages[message_id].categories == ["Personal"]
    assert folder_of(org.alice, message_id) == "Inbox"
    assert "undone" in unescape(web.get(f"{base}/activity").text)
    # Any other ended undo stays ended: asked again, it is "already".
    assert _undo(web, base, row.id).headers["location"].endswith("?undo=already")
