"""Suggest only (shadow mode, issue 18), against m365sim through the pages a person uses.

In Suggest only no Graph write request leaves for the integration (counted in the emulator's
request log); the activity says what Postroom would have done; as the person files mail - a
category put on it, or moved into a category's folder - the agreement figures move, and a
disagreement is learned as a correction; Go live acts on new mail only, unless the person asks
to also file what was suggested and nobody filed, which is then filed exactly once.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html import unescape

import httpx
from sqlalchemy import select

from m365sim.state import EmulatorState
from postroom.integrations.models import Category, Integration
from postroom.learning.models import LearningEvent
from postroom.processing.models import LedgerEntry
from tests.helpers import Org
from tests.postroom.conftest import Postroom
from tests.postroom.test_learning_feedback import Outlook
from tests.postroom.test_requests_per_email import _drain_all
from tests.postroom.test_sync import folder_of, setup_personal
from tests.postroom.webtools import csrf, post_form

RECEIPT_RULES = {
    "mode": "any",
    "items": [{"field": "Subject", "operator": "CONTAINS", "value": "receipt"}],
}


def _text(html: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def _writes(sim: EmulatorState, postroom: Postroom) -> list[str]:
    """Postroom's Graph write requests (its app's client id; Postroom addresses mailboxes as
    /users/{id}, Alice's Outlook as /me) - every one but subscriptions."""
    return [
        r.endpoint
        for r in list(sim.request_log)
        if r.client_id == postroom.app_registration.client_id
        and "/me/" not in r.path
        and r.method != "GET"
        and "subscriptions" not in r.endpoint
        and not r.endpoint.endswith("$batch")
    ]


def _receipts(postroom: Postroom) -> None:
    with postroom.database.session() as db:
        integration = db.scalar(select(Integration))
        assert integration is not None
        db.add(
            Category(
                integration_id=integration.id,
                name="Receipts",
                color="preset3",
                folder="Finance/Receipts",
                rules=RECEIPT_RULES,
                position=2,
            )
        )


def _person_made_folders(org: Org) -> dict[str, str]:
    """Alice already has the folders (the person files mail there herself)."""
    store, box = org.state.store, org.alice.mailbox
    finance = store.create_folder(box, "Finance", box.root_id())
    assert finance is not None
    made = {"Finance": finance.id}
    for name in ("Invoices", "Receipts"):
        folder = store.create_folder(box, name, finance.id)
        assert folder is not None
        made[name] = folder.id
    return made


def _row(postroom: Postroom, message_id: str) -> LedgerEntry:
    with postroom.database.session() as db:
        row = db.scalar(select(LedgerEntry).where(LedgerEntry.message_id == message_id))
        assert row is not None
        db.expunge(row)
        return row


def test_suggest_only_touches_nothing_measures_agreement_and_goes_live_on_new_mail(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState, http: httpx.Client
) -> None:
    org = postroom.org(sim)
    folders = _person_made_folders(org)
    base = setup_personal(web, postroom, org, start="suggest")  # the wizard's choice
    _receipts(postroom)
    postroom.drain()
    page = _text(web.get(base).text)
    assert "Suggest only: Postroom records what it would do and touches nothing" in page

    before = len(_writes(sim, postroom))
    invoices = [org.deliver(org.alice, subject=f"Invoice {n}") for n in range(1, 5)]
    receipt = org.deliver(org.alice, subject="Your receipt")
    _drain_all(postroom)
    assert _writes(sim, postroom)[before:] == []  # no label, move, folder, category or forward
    for msg in [*invoices, receipt]:
        assert folder_of(org.alice, msg.immutable_id) == "Inbox"
        assert org.alice.mailbox.messages[msg.immutable_id].categories == []
        row = _row(postroom, msg.immutable_id)
        assert row.state == "done" and row.actions_done == []
        assert (row.plan or {}).get("suggested") is True
    activity = _text(web.get(f"{base}/activity").text)
    assert "would have: Invoices → Finance/Invoices" in activity
    assert "would have: Receipts → Finance/Receipts" in activity

    # Alice files mail herself: two invoices as suggested (a category; a move into the folder),
    # one invoice as a receipt (she disagrees), and the receipt as suggested.
    outlook = Outlook(http, org)
    outlook.set_categories(invoices[0].immutable_id, ["Invoices"])
    outlook.move(invoices[1].immutable_id, folders["Invoices"])
    outlook.set_categories(invoices[2].immutable_id, ["Receipts"])
    outlook.move(receipt.immutable_id, folders["Receipts"])
    _drain_all(postroom)
    assert _writes(sim, postroom)[before:] == []  # only Alice wrote
    assert (_row(postroom, invoices[0].immutable_id).plan or {})["shadow"]["agreed"] is True
    assert (_row(postroom, invoices[1].immutable_id).plan or {})["shadow"]["agreed"] is True
    disagreed = (_row(postroom, invoices[2].immutable_id).plan or {})["shadow"]
    assert disagreed["agreed"] is False and disagreed["filed_as"] == "Receipts"
    assert (_row(postroom, receipt.immutable_id).plan or {})["shadow"]["agreed"] is True
    with postroom.database.session() as db:  # the disagreement was learned as a correction
        learned = [
            (e.kind, e.category, e.predicted)
            for e in db.scalars(select(LearningEvent).where(LearningEvent.kind == "correction"))
        ]
    assert learned == [("correction", "Receipts", None)]  # (a rule decided: no prediction)
    html = web.get(base).text
    invoices_row = re.search(r'data-suggest-category="Invoices".*?</tr>', html, re.S)
    assert invoices_row is not None
    cells = _text(invoices_row.group(0))
    assert "Suggest only 4 3 2 of 3 (67 %)" in cells
    assert "also file the 1 suggested email nobody filed" in cells
    activity = _text(web.get(f"{base}/activity").text)
    assert "filed by a person as Receipts (disagreed)" in activity
    # the charts: suggestions are not counted as done; their agreement is
    charts = _text(web.get(f"{base}/charts").text)
    assert "this week 4 3 75%" in charts
    assert "No email processed in the last 30 days" in charts

    # Go live for Invoices only, not asking to file what was suggested: new mail only.
    with postroom.database.session() as db:
        invoices_id = db.scalar(select(Category.id).where(Category.name == "Invoices"))
    live = post_form(web, base, f"{base}/go-live", {"category_id": str(invoices_id)})
    assert live.status_code == 303
    assert "Live: Postroom acts on new mail from now on." in _text(
        web.get(live.headers["location"]).text
    )
    newer = org.deliver(org.alice, subject="Invoice 5")
    receipt2 = org.deliver(org.alice, subject="Another receipt")
    _drain_all(postroom)
    assert folder_of(org.alice, newer.immutable_id) == "Invoices"
    assert org.alice.mailbox.messages[newer.immutable_id].categories == ["Invoices"]
    assert folder_of(org.alice, invoices[3].immutable_id) == "Inbox"  # suggested, not filed
    assert folder_of(org.alice, receipt2.immutable_id) == "Inbox"  # Receipts still suggests
    assert (_row(postroom, receipt2.immutable_id).plan or {}).get("suggested") is True

    # Go live for all, asking to file what was suggested and nobody filed: filed once.
    page = web.get(base).text
    done = web.post(f"{base}/go-live", data={"csrf_token": csrf(page), "file_suggested": "on"})
    assert done.status_code == 303
    _drain_all(postroom)
    assert folder_of(org.alice, receipt2.immutable_id) == "Receipts"
    assert org.alice.mailbox.messages[receipt2.immutable_id].categories == ["Receipts"]
    # the Invoices suggestion went live earlier without asking: it stays untouched
    assert folder_of(org.alice, invoices[3].immutable_id) == "Inbox"
    # the person's own filings are untouched; the disagreed one stays as she left it
    assert org.alice.mailbox.messages[invoices[2].immutable_id].categories == ["Receipts"]
    assert folder_of(org.alice, invoices[2].immutable_id) == "Inbox"
    moves = [
        r
        for r in list(sim.request_log)
        if r.mailbox_id == org.alice.id
        and r.method == "POST"
        and r.endpoint.endswith("/move")
        and receipt2.immutable_id in r.path
        and r.status < 300
    ]
    assert len(moves) == 1
    assert "data-suggest-only" not in web.get(base).text  # live: no banner
    assert [d for d in sim.store.deletions if d.mailbox_id == org.alice.id] == []


def test_suggest_only_forms_refuse_bad_input_and_other_workspaces(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    base = setup_personal(web, postroom, org)
    postroom.drain()
    assert post_form(web, base, f"{base}/suggest-only", {"category_id": "nope"}).status_code == 404
    assert post_form(web, base, f"{base}/go-live", {"file_suggested": "yes"}).status_code == 400
    assert web.post(f"{base}/suggest-only", data={}).status_code in (400, 403)  # no CSRF
    with postroom.database.session() as db:
        integration = db.scalar(select(Integration))
        assert integration is not None and not (integration.options or {}).get("suggest_only")
    on = post_form(web, base, f"{base}/suggest-only")
    assert on.status_code == 303
    with postroom.database.session() as db:
        integration = db.scalar(select(Integration))
        assert integration is not None and (integration.options or {}).get("suggest_only")
        week_ago = (datetime.now(UTC) - timedelta(days=8)).isoformat()
        integration.options = {**integration.options, "suggest_since": week_ago}
    assert "It has been 8 days: look at how often Postroom agreed" in _text(web.get(base).text)
    with httpx.Client(base_url=postroom.url, trust_env=False, timeout=30) as stranger:
        from tests.postroom.webtools import sign_up

        sign_up(stranger, email="eve@evil.test", name="Eve", workspace="Evil")
        token = csrf(stranger.get("/integrations").text)
        assert stranger.post(f"{base}/go-live", data={"csrf_token": token}).status_code == 404
    bad_step = post_form(web, base, f"{base}/setup/5", {"start": "maybe"})
    assert bad_step.status_code in (303, 400)  # finished: the wizard is not used any more


def test_go_live_files_only_what_nobody_touched_and_never_gets_stuck(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState, http: httpx.Client
) -> None:
    """Go live with "also file the suggested emails nobody filed": an email the person moved
    to a folder of their own, deleted, or fixed through Postroom is left alone; the rest is
    filed once, also when the folder's baseline moved on since (a reconnect)."""
    from postroom.sync.models import FolderSync

    org = postroom.org(sim)
    _person_made_folders(org)
    store, box = org.state.store, org.alice.mailbox
    own = store.create_folder(box, "Kept", box.root_id())
    assert own is not None
    base = setup_personal(web, postroom, org, start="suggest")
    _receipts(postroom)
    postroom.drain()
    untouched, moved, deleted, fixed = (
        org.deliver(org.alice, subject=f"Receipt {n}") for n in range(1, 5)
    )
    _drain_all(postroom)
    outlook = Outlook(http, org)
    outlook.move(moved.immutable_id, own.id)
    deleted_items = box.folder("deleteditems")
    assert deleted_items is not None
    outlook.move(deleted.immutable_id, deleted_items.id)
    fix = post_form(
        web,
        f"{base}/activity",
        f"{base}/activity/{_row(postroom, fixed.immutable_id).id}/fix",
        {"category": "Invoices"},
    )
    assert fix.status_code == 303, fix.text[:500]
    _drain_all(postroom)
    assert folder_of(org.alice, fixed.immutable_id) == "Invoices"  # Fix acts on request
    # The folder's baseline moved on since (as a reconnect does): resumed rows still finish.
    with postroom.database.session() as db:
        for sync in db.scalars(select(FolderSync)):
            sync.baseline_at = datetime.now(UTC) + timedelta(days=1)

    page = web.get(base).text
    receipts_row = re.search(r'data-suggest-category="Receipts".*?</tr>', page, re.S)
    assert receipts_row is not None
    assert "also file the 3 suggested emails nobody filed" in _text(receipts_row.group(0))
    done = web.post(f"{base}/go-live", data={"csrf_token": csrf(page), "file_suggested": "on"})
    assert done.status_code == 303
    _drain_all(postroom)

    assert folder_of(org.alice, untouched.immutable_id) == "Receipts"
    assert org.alice.mailbox.messages[untouched.immutable_id].categories == ["Receipts"]
    assert folder_of(org.alice, moved.immutable_id) == "Kept"  # the person's choice stands
    assert org.alice.mailbox.messages[moved.immutable_id].categories == []
    assert folder_of(org.alice, deleted.immutable_id) == "Deleted Items"
    assert folder_of(org.alice, fixed.immutable_id) == "Invoices"
    assert org.alice.mailbox.messages[fixed.immutable_id].categories == ["Invoices"]
    for msg in (moved, deleted):
        row = _row(postroom, msg.immutable_id)
        assert row.state == "skipped" and row.last_error == "filed_before_live"
    with postroom.database.session() as db:
        claimed = db.scalars(select(LedgerEntry).where(LedgerEntry.state == "claimed")).all()
    assert claimed == []  # nothing left claimed (nothing re-queued for ever)
    activity = _text(web.get(f"{base}/activity").text)
    assert "Left alone at Go live: a person had filed, moved or deleted it" in activity
    assert [
        d
        for d in sim.store.deletions
        if d.mailbox_id == org.alice.id and d.message_id != deleted.immutable_id
    ] == []
