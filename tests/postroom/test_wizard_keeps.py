"""Settings and input are never lost around the setup wizard (issue 19 items 4, 5, 6).

* After go-live, mailboxes and folders change on their own page, linked from the integration's
  page: new folders get subscriptions and start with new mail, removed ones stop (nothing is
  deleted), and the categories with their rules and examples stay exactly as they were. The
  wizard is closed after Finish, and finishing never deletes a category.
* A wizard step that comes back with an error shows what the person typed, the error next to
  the field; a reset undoes progress, never what was entered.
* Finish starts real-time processing, not the backfill: "Apply to existing mail" runs when the
  person asks (after their rules exist), with progress, resumable, and exactly once however
  often it is run.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, select, text, update

from m365sim.notifications.registry import registry
from m365sim.state import EmulatorState
from postroom.integrations import service
from postroom.integrations.models import Category, Integration, Mailbox
from postroom.learning import service as learning
from postroom.processing.models import LedgerEntry
from postroom.sync.models import FolderSync
from tests.postroom.conftest import Postroom
from tests.postroom.test_connect import connect_personal
from tests.postroom.test_sync import (
    INVOICE_RULES,
    _run,
    folder_of,
    setup_personal,
    wait_for_jobs,
)
from tests.postroom.webtools import csrf, post_form, sign_up

EXAMPLES = ["Invoice 12 for your order, due in 30 days", "Factuur 7 voor uw bestelling"]


def _integration(postroom: Postroom) -> Integration:
    with postroom.database.session() as db:
        item = db.scalar(select(Integration))
        assert item is not None
        return item


def _configured(postroom: Postroom) -> list[tuple[str, str, Any, list[str]]]:
    """Every category with its id, rules and examples."""
    with postroom.database.session() as db:
        return [
            (c.id, c.name, c.rules, learning.examples_of(db, c.id))
            for c in db.scalars(select(Category).order_by(Category.position))
        ]


def _folder_syncs(postroom: Postroom) -> dict[tuple[str, str], FolderSync]:
    with postroom.database.session() as db:
        rows = db.execute(
            select(FolderSync, Mailbox.address)
            .join(Mailbox, Mailbox.id == FolderSync.mailbox_id)
            .where(FolderSync.watch.is_(False))
        ).all()
        return {(address, fs.folder_key): fs for fs, address in rows}


def _with_examples(postroom: Postroom) -> None:
    with postroom.database.session() as db:
        category = db.scalar(select(Category))
        assert category is not None
        learning.set_examples(
            db, integration_id=category.integration_id, category_id=category.id, texts=EXAMPLES
        )


# ---------------------------------------------------------------------- item 4
def test_mailboxes_and_folders_change_after_go_live_and_categories_stay(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    base = setup_personal(web, postroom, org)
    _with_examples(postroom)
    postroom.drain()
    before = _configured(postroom)
    assert before[0][1:] == ("Invoices", INVOICE_RULES, EXAMPLES)
    page = web.get(base)
    edit = f"{base}/mailboxes-and-folders"
    assert f'href="{edit}"' in page.text  # linked from the integration page

    # Add the Archive folder and the shared mailbox.
    form = web.get(edit)
    assert form.status_code == 200 and 'value="Archive"' in form.text
    added = web.post(
        edit,
        data={
            "csrf_token": csrf(form.text),
            "own": "on",
            "shared": org.shared.user_principal_name,
            "folders": ["inbox", "Archive"],
        },
    )
    assert added.status_code == 303, added.text[:2000]
    postroom.drain()
    assert _configured(postroom) == before  # same rows, rules and examples
    syncs = _folder_syncs(postroom)
    alice, shared = org.alice.user_principal_name, org.shared.user_principal_name
    assert set(syncs) == {
        (alice, "inbox"),
        (alice, "Archive"),
        (shared, "inbox"),
        (shared, "Archive"),
    }
    assert syncs[(alice, "Archive")].mode == "webhook" and syncs[(alice, "Archive")].subscription_id
    assert syncs[(shared, "inbox")].mode == "polling"  # delegated shared mailbox
    archive_subscription = syncs[(alice, "Archive")].subscription_id
    assert archive_subscription in registry(sim).by_id
    inbox_subscription = syncs[(alice, "inbox")].subscription_id
    # A new email in the added folder is processed in real time.
    msg = org.deliver(org.alice, subject="Invoice 88 filed by hand", folder="archive")
    assert wait_for_jobs(postroom) >= 1, "no notification for the added folder"
    postroom.drain()
    assert folder_of(org.alice, msg.immutable_id) == "Invoices"
    with postroom.database.session() as db:
        done = db.scalar(select(func.count()).select_from(LedgerEntry))

    # Take the Archive folder and the shared mailbox out again: they stop, nothing is deleted.
    form = web.get(edit)
    assert 'value="Archive" checked' in form.text  # the page shows what is in use
    removed = web.post(
        edit, data={"csrf_token": csrf(form.text), "own": "on", "folders": ["inbox"]}
    )
    assert removed.status_code == 303
    postroom.drain()
    assert _configured(postroom) == before
    syncs = _folder_syncs(postroom)
    assert syncs[(alice, "inbox")].active and syncs[(alice, "inbox")].subscription_id == (
        inbox_subscription
    )  # untouched
    assert not syncs[(alice, "Archive")].active
    assert not syncs[(shared, "inbox")].active
    assert archive_subscription not in registry(sim).by_id  # deleted at Microsoft
    with postroom.database.session() as db:
        shared_row = db.scalar(select(Mailbox).where(Mailbox.address == shared))
        assert shared_row is not None and shared_row.status == "removed"  # kept, with its ledger
        assert db.scalar(select(func.count()).select_from(LedgerEntry)) == done
    page = web.get(base)
    assert shared not in page.text.split('id="sync-title"')[1].split("</section>")[0]
    assert [d for d in sim.store.deletions if d.mailbox_id == org.alice.id] == []


def test_the_wizard_is_closed_after_finish_and_finishing_never_deletes(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    base = setup_personal(web, postroom, org)
    _with_examples(postroom)
    postroom.drain()
    before = _configured(postroom)
    # Finishing again (whatever the wizard data says) keeps every category, rule and example.
    with postroom.database.session() as db:
        item = db.scalar(select(Integration))
        assert item is not None
        item.wizard_data = {
            **item.wizard_data,
            "processing": {"categories": [{"name": "Orders", "color": "preset1"}]},
        }
        service.finish_setup(db=db, integration=item)
        service.finish_setup(db=db, integration=item)
    after = _configured(postroom)
    assert after[0] == before[0]
    assert [c[1] for c in after] == ["Invoices", "Orders"]
    before = after
    with postroom.database.session() as db:
        assert db.scalar(select(func.count()).select_from(Mailbox)) == 1
    # The wizard's step URLs lead to the pages that change each part after go-live.
    assert web.get(f"{base}/setup/2").headers["location"] == f"{base}/mailboxes-and-folders"
    assert web.get(f"{base}/setup/3").headers["location"] == f"{base}/categories"
    assert web.get(f"{base}/setup/4").headers["location"] == f"{base}/existing-mail"
    # Re-submitting its steps (a page left open) changes nothing.
    page = web.get(base)
    for step, data in (
        (2, {"own": "on", "folders": "inbox", "confirm_reset": "yes"}),
        (3, {"name": "Orders", "color": "preset1", "confirm_reset": "yes"}),
        (5, {}),
    ):
        answer = web.post(f"{base}/setup/{step}", data={"csrf_token": csrf(page.text), **data})
        assert answer.status_code == 303
    assert _configured(postroom) == before


def test_a_wizard_reset_keeps_what_was_entered(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    sign_up(web)
    base = connect_personal(web, postroom, org).removesuffix("/setup")
    for step, data in (
        (1, {}),
        (2, {"own": "on", "folders": "inbox"}),
        (3, {"name": "Orders", "color": "preset4", "folder": "Sales/Orders"}),
    ):
        assert post_form(web, f"{base}/setup/{step}", f"{base}/setup/{step}", data).status_code == (
            303
        )
    warned = post_form(web, f"{base}/setup/2", f"{base}/setup/2", {"own": "on", "folders": "inbox"})
    assert warned.status_code == 409
    confirmed = post_form(
        web,
        f"{base}/setup/2",
        f"{base}/setup/2",
        {"own": "on", "folders": ["inbox", "Archive"], "confirm_reset": "yes"},
    )
    assert confirmed.headers["location"] == f"{base}/setup/3"
    item = _integration(postroom)
    assert item.wizard_step == 3  # progress reset: step 3 is confirmed again before Finish
    assert item.wizard_data["processing"]["categories"][0]["name"] == "Orders"
    step3 = web.get(f"{base}/setup/3")
    assert 'value="Orders"' in step3.text and 'value="Sales/Orders"' in step3.text
    # and the warning said precisely what a reset does
    assert "step 3 (Processing)" in warned.text and "nothing is deleted" in warned.text


# ---------------------------------------------------------------------- item 5
def test_step_3_with_one_bad_forward_address_keeps_every_row(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    sign_up(web)
    base = connect_personal(web, postroom, org).removesuffix("/setup")
    post_form(web, f"{base}/setup/1", f"{base}/setup/1")
    post_form(web, f"{base}/setup/2", f"{base}/setup/2", {"own": "on", "folders": "inbox"})
    page = web.get(f"{base}/setup/3")
    bad = web.post(
        f"{base}/setup/3",
        data={
            "csrf_token": csrf(page.text),
            "name": ["Invoices", "Orders", "Support", ""],
            "color": ["preset7", "preset4", "preset1", "preset0"],
            "folder": ["Finance/Invoices", "Sales/Orders", "", ""],
            "forward_to": ["ap@acme.test", "orders at acme", "help@acme.test", ""],
        },
    )
    assert bad.status_code == 400
    rows = re.findall(r'<tr class="category-row[^"]*">(.*?)</tr>', bad.text, re.S)
    assert len(rows) == 4
    for row, (name, folder, forward) in zip(
        rows,
        [
            ("Invoices", "Finance/Invoices", "ap@acme.test"),
            ("Orders", "Sales/Orders", "orders at acme"),
            ("Support", "", "help@acme.test"),
        ],
        strict=False,
    ):
        assert f'value="{name}"' in row and f'value="{folder}"' in row
        assert f'value="{forward}"' in row
    assert 'value="preset4" selected' in rows[1]
    # the error stands in the row it concerns, and only there
    assert "Not an email address: orders" in rows[1] and 'aria-invalid="true"' in rows[1]
    assert "field-error" not in rows[0] + rows[2] + rows[3]
    assert _integration(postroom).wizard_step == 3  # nothing saved


def test_step_4_with_a_missing_date_keeps_the_choice(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    sign_up(web)
    base = connect_personal(web, postroom, org).removesuffix("/setup")
    for step, data in (
        (1, {}),
        (2, {"own": "on", "folders": "inbox"}),
        (3, {"name": "Orders", "color": "preset4"}),
    ):
        post_form(web, f"{base}/setup/{step}", f"{base}/setup/{step}", data)
    bad = post_form(
        web,
        f"{base}/setup/4",
        f"{base}/setup/4",
        {"mode": "since", "since": "", "forward_history": "on"},
    )
    assert bad.status_code == 400
    assert re.search(r'name="mode" value="since"\s+checked', bad.text)
    assert not re.search(r'name="mode" value="off"\s+checked', bad.text)
    assert re.search(r'name="forward_history" value="on"\s+checked', bad.text)
    assert 'id="error-since"' in bad.text and 'aria-describedby="error-since"' in bad.text
    too_old = post_form(
        web, f"{base}/setup/4", f"{base}/setup/4", {"mode": "since", "since": "2001-02-03"}
    )
    assert too_old.status_code == 400 and 'value="2001-02-03"' in too_old.text


def test_step_2_error_keeps_every_folder_option_and_the_choices(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    sign_up(web)
    base = connect_personal(web, postroom, org).removesuffix("/setup")
    post_form(web, f"{base}/setup/1", f"{base}/setup/1")
    page = web.get(f"{base}/setup/2")
    assert 'value="Archive"' in page.text and 'value="Junk Email"' in page.text
    faults = f"{postroom.settings.authority_host}/_emulator/faults"
    # Microsoft's folder listing fails while the form comes back with an error.
    rule = web.post(faults, json={"path": "/mailFolders$", "method": "GET", "status": 500})
    assert rule.status_code == 201, rule.text
    try:
        bad = web.post(
            f"{base}/setup/2",
            data={
                "csrf_token": csrf(page.text),
                "folders": "inbox",
                "shared": "nobody@nowhere.test",
                "offered": ["inbox", "Archive", "Junk Email"],
            },
        )
    finally:
        web.delete(faults)
    assert bad.status_code == 400
    assert 'value="Archive"' in bad.text and 'value="Junk Email"' in bad.text
    assert re.search(r'name="own" value="on"\s*>', bad.text)  # still unticked, as submitted
    assert ">nobody@nowhere.test</textarea>" in bad.text
    assert 'id="error-shared"' in bad.text and "no such mailbox" in bad.text
    # A folder the person ticked is kept ticked after an error.
    again = web.post(
        f"{base}/setup/2",
        data={"csrf_token": csrf(page.text), "own": "on", "folders": ["inbox", "Archive"]}
        | {"shared": "not an address"},
    )
    assert again.status_code == 400
    assert re.search(r'value="Archive"\s+checked', again.text)


# ---------------------------------------------------------------------- item 6
def _history(org: Any) -> tuple[list[Any], Any]:
    now = datetime.now(UTC)
    invoices = [
        org.deliver(org.alice, subject=f"Invoice {n} (history)", received=now - timedelta(days=d))
        for n, d in ((1, 20), (2, 10), (3, 5))
    ]
    lunch = org.deliver(org.alice, subject="Lunch last week", received=now - timedelta(days=7))
    return invoices, lunch


def _forwards(org: Any) -> list[Any]:
    return [m for m in org.bob.mailbox.messages.values() if "(history)" in m.subject]


def test_existing_mail_waits_for_the_person_then_runs_once_with_progress(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    invoices, lunch = _history(org)
    time.sleep(1.1)  # Graph's receivedDateTime has whole seconds
    sign_up(web)
    base = connect_personal(web, postroom, org).removesuffix("/setup")
    since = (datetime.now(UTC) - timedelta(days=30)).date().isoformat()
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
        (4, {"mode": "since", "since": since, "forward_history": "on"}),
    ):
        assert post_form(web, f"{base}/setup/{step}", f"{base}/setup/{step}", data).status_code == (
            303
        )
    review = web.get(f"{base}/setup/5")
    assert post_form(web, f"{base}/setup/5", f"{base}/setup/5").status_code == 303
    # The rule exists before the worker runs, so a backfill started by Finish would file it.
    with postroom.database.session() as db:
        db.execute(update(Category).values(rules=INVOICE_RULES))
    postroom.drain()
    # Finish started real-time processing only: history untouched, no backfill anywhere.
    for msg in invoices:
        assert folder_of(org.alice, msg.immutable_id) == "Inbox"
    with postroom.database.session() as db:
        assert db.scalar(select(func.count()).select_from(LedgerEntry)) == 0
        assert all(fs.backfill_since is None for fs in db.scalars(select(FolderSync)))
    assert "once your rules and examples are ready" in review.text
    page = web.get(base)
    assert f'href="{base}/existing-mail"' in page.text

    # The person starts it from the page the plan is filled into.
    form = web.get(f"{base}/existing-mail")
    assert f'value="{since}"' in form.text
    bad = web.post(f"{base}/existing-mail", data={"csrf_token": csrf(form.text), "since": "soon"})
    assert bad.status_code == 400
    assert 'value="soon"' in bad.text and 'id="error-since"' in bad.text
    started = web.post(
        f"{base}/existing-mail",
        data={"csrf_token": csrf(form.text), "since": since, "forward_history": "on"},
    )
    assert started.status_code == 303
    # Asking again while it runs is refused in words (the cursor would be lost).
    running = web.post(
        f"{base}/existing-mail", data={"csrf_token": csrf(form.text), "since": since}
    )
    assert running.status_code == 409 and "still being processed" in running.text
    # A lost job is queued again by the reconcile: the run resumes from its cursor.
    with postroom.database.engine.begin() as conn:
        conn.execute(
            text(
                "DELETE FROM procrastinate_jobs WHERE task_name = 'postroom:backfill_folder' "
                "AND status = 'todo'"
            )
        )
    from postroom.sync.jobs import reconcile_now

    _run(postroom, reconcile_now)
    postroom.drain()
    for msg in invoices:
        assert folder_of(org.alice, msg.immutable_id) == "Invoices"
    assert folder_of(org.alice, lunch.immutable_id) == "Inbox"
    assert len(_forwards(org)) == 3  # forwarded once each (the person ticked it)
    with postroom.database.session() as db:
        entries = {e.message_id: e for e in db.scalars(select(LedgerEntry))}
        fs = db.scalar(select(FolderSync).where(FolderSync.watch.is_(False)))
        assert fs is not None and (fs.backfill_done, fs.backfill_total) == (4, 4)
        assert fs.backfill_finished_at is not None
        item = db.scalar(select(Integration))
        assert item is not None and item.status == "connected"
    assert len(entries) == 4 and all(e.historical for e in entries.values())
    assert "4 of 4 looked at" in web.get(base).text
    assert "4 of 4 looked at" in web.get(f"{base}/existing-mail").text

    # Again, from the same date: nothing in the ledger is processed twice.
    form = web.get(f"{base}/existing-mail")
    again = web.post(
        f"{base}/existing-mail",
        data={"csrf_token": csrf(form.text), "since": since, "forward_history": "on"},
    )
    assert again.status_code == 303
    postroom.drain()
    with postroom.database.session() as db:
        after = {e.message_id: e for e in db.scalars(select(LedgerEntry))}
        fs = db.scalar(select(FolderSync).where(FolderSync.watch.is_(False)))
        assert fs is not None and fs.backfill_finished_at is not None
        assert (fs.backfill_done, fs.backfill_total) == (1, 1)  # only lunch is left in the inbox
    assert {k: (e.claimed_at, e.state) for k, e in after.items()} == {
        k: (e.claimed_at, e.state) for k, e in entries.items()
    }
    assert len(_forwards(org)) == 3
    assert org.alice.mailbox.messages[invoices[0].immutable_id].categories == ["Invoices"]
    assert [d for d in sim.store.deletions if d.mailbox_id == org.alice.id] == []
