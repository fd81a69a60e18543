"""A mailbox never stops for good on a decorating step, no email stays "in progress", and a
mailbox that does stop says so (issue 19, item 1).

Before: on a personal connection with shared access and "Manage category colours", the first
matching email in the shared mailbox made Postroom read that mailbox's master category list;
Graph refused (403: delegated colour management does not extend to a shared mailbox), the email
sat "in progress | ErrorAccessDenied" for good, the mailbox's sync stopped, the integration still
said Connected and the help page blamed an Exchange policy.

Everything is real: Postroom over HTTP, m365sim over HTTPS, the job queue on PostgreSQL.
"""

from __future__ import annotations

import logging
from collections import Counter
from html import unescape
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from m365sim.state import EmulatorState
from m365sim.store import User
from postroom.integrations.models import Category, Mailbox
from postroom.processing.models import LedgerEntry
from postroom.sync.models import FolderSync
from tests.helpers import Org
from tests.postroom.conftest import Postroom
from tests.postroom.test_connect import connect_personal
from tests.postroom.test_sync import INVOICE_RULES, _run, folder_of, setup_personal
from tests.postroom.webtools import post_form, sign_up

COLOURS_NOTE = (
    "Colours can't be managed in this mailbox: Microsoft does not let a personal connection "
    "manage a shared mailbox's category colours. Add them in Outlook, or use an "
    "organization-wide connection."
)


def _setup_shared_with_colours(web: httpx.Client, postroom: Postroom, org: Org) -> str:
    """Alice connects personally with shared access and colour management; her inbox and the
    shared mailbox; category Invoices (Subject contains "invoice") → Finance/Invoices."""
    sign_up(web)
    options = {"shared_access": "on", "manage_colours": "on"}
    base = connect_personal(web, postroom, org, options=options).removesuffix("/setup")
    for step, data in (
        (1, {}),
        (2, {"own": "on", "folders": "inbox", "shared": org.shared.user_principal_name}),
        (3, {"name": "Invoices", "color": "preset7", "folder": "Finance/Invoices"}),
        (4, {"mode": "off"}),
        (5, {}),
    ):
        response = post_form(web, f"{base}/setup/{step}", f"{base}/setup/{step}", data)
        assert response.status_code == 303, response.text[:1000]
    with postroom.database.session() as db:
        db.execute(update(Category).values(rules=INVOICE_RULES))
    return base


def _poll_now(postroom: Postroom) -> None:
    """What the reconcile does for a polled folder (the shared mailbox), at once."""
    from postroom.sync.jobs import reconcile_now

    with postroom.database.session() as db:
        db.execute(update(FolderSync).values(last_synced_at=None))
    _run(postroom, reconcile_now)
    postroom.drain()


def _master_list_requests(sim: EmulatorState, user: User) -> int:
    counters: Counter[tuple[str, str, str]] = Counter(sim.counters)
    return sum(
        n
        for (mailbox, _method, endpoint), n in counters.items()
        if mailbox == user.id and "masterCategories" in endpoint
    )


def _heading(page: str) -> str:
    """The integration page's heading: its name and its status badge."""
    return page.split('<div class="heading">', 1)[1].split("</div>", 1)[0]


def _row(postroom: Postroom, message_id: str) -> LedgerEntry:
    with postroom.database.session() as db:
        row = db.scalar(select(LedgerEntry).where(LedgerEntry.message_id == message_id))
        assert row is not None
        return row


def test_shared_mailbox_with_colour_management_is_labelled_filed_and_noted_once(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    base = _setup_shared_with_colours(web, postroom, org)
    postroom.drain()

    first = org.deliver(org.shared, subject="Invoice 1 to the shared mailbox")
    _poll_now(postroom)

    moved = org.shared.mailbox.messages[first.immutable_id]
    assert moved.categories == ["Invoices"]
    assert folder_of(org.shared, first.immutable_id) == "Invoices"
    row = _row(postroom, first.immutable_id)
    assert row.state == "done" and row.last_error is None
    assert row.actions_done == ["label", "folder", "move"]
    assert list(org.shared.mailbox.categories.values()) == []  # refused: no colour made
    with postroom.database.session() as db:
        shared = db.scalar(select(Mailbox).where(Mailbox.kind == "shared"))
        assert shared is not None and shared.status == "connected"
        assert list(shared.notes) == ["colors_refused"]

    page = web.get(base)
    assert page.status_code == 200
    assert unescape(page.text).count(COLOURS_NOTE) == 1
    assert 'data-status="connected"' in _heading(page.text)  # nothing stopped
    assert "data-stopped-mailbox" not in page.text

    # Later emails: labelled and filed, and the master list is not asked for again.
    asked = _master_list_requests(sim, org.shared)
    later = [org.deliver(org.shared, subject=f"Invoice {n} to the shared mailbox") for n in (2, 3)]
    _poll_now(postroom)
    for msg in later:
        assert folder_of(org.shared, msg.immutable_id) == "Invoices"
        assert _row(postroom, msg.immutable_id).state == "done"
    assert _master_list_requests(sim, org.shared) == asked
    assert unescape(web.get(base).text).count(COLOURS_NOTE) == 1

    # Alice's own mailbox still gets the colour: only the shared mailbox is noted.
    own = org.deliver(org.alice, subject="Invoice to Alice")
    _poll_now(postroom)
    assert folder_of(org.alice, own.immutable_id) == "Invoices"
    assert [(c.display_name, c.color) for c in org.alice.mailbox.categories.values()] == [
        ("Invoices", "preset7")
    ]

    # The activity view says done, without an error; the help page blames no policy for it.
    activity = web.get(f"{base}/activity", params={"state": "claimed"})
    assert "No email matches these filters." in activity.text
    help_page = web.get("/help/status/access_denied")
    assert "Only the category colours are missing?" in help_page.text
    assert "never applies to a personal connection" in help_page.text


def test_a_permanently_failing_step_ends_the_row_with_its_reason_in_the_activity(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    base = setup_personal(web, postroom, org)
    postroom.drain()
    # A hidden folder holds the name "Finance": Graph refuses to create it (ErrorFolderExists)
    # and Postroom may not file into a hidden folder. Permanent, for this email.
    mailbox = org.alice.mailbox
    root = mailbox.folder("msgfolderroot")
    assert root is not None
    assert sim.store.create_folder(mailbox, "Finance", root.id, hidden=True) is not None

    stuck = org.deliver(org.alice, subject="Invoice that cannot be filed")
    after = org.deliver(org.alice, subject="Lunch on Friday?")
    _poll_now(postroom)

    row = _row(postroom, stuck.immutable_id)
    assert row.state == "failed" and row.last_error == "ErrorFolderExists"
    assert row.done_at is not None
    assert row.actions_done == ["label"]
    assert org.alice.mailbox.messages[stuck.immutable_id].categories == ["Invoices"]
    assert _row(postroom, after.immutable_id).state == "done"  # the sync went on

    page = web.get(f"{base}/activity")
    assert page.status_code == 200
    assert (
        "Could not file it in Finance/Invoices: a hidden folder already has that name "
        "(ErrorFolderExists). Postroom does not try this email again."
    ) in page.text
    failed = web.get(f"{base}/activity", params={"state": "failed"})
    assert "Invoice that cannot be filed" in failed.text
    assert "Lunch on Friday?" not in failed.text


def test_a_stopped_mailbox_shows_on_the_integration_and_the_list(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    base = setup_personal(web, postroom, org, shared=org.shared.user_principal_name)
    postroom.drain()
    # An Exchange administrator removes Alice's Full Access to the shared mailbox.
    org.shared.full_access.discard(org.alice.id)
    msg = org.deliver(org.shared, subject="Invoice nobody may read")
    _poll_now(postroom)

    with postroom.database.session() as db:
        shared = db.scalar(select(Mailbox).where(Mailbox.kind == "shared"))
        assert shared is not None and shared.status == "access_denied"
    assert folder_of(org.shared, msg.immutable_id) == "Inbox"

    page = web.get(base)
    text = page.text
    assert 'data-status="access_denied"' in _heading(text)  # not "Connected"
    assert f'data-stopped-mailbox="{org.shared.user_principal_name}"' in text
    assert f"Mailbox {org.shared.user_principal_name} stopped" in text
    assert "Give the account Full Access to the mailbox in Exchange" in text
    listing = web.get("/integrations")
    assert 'data-status="access_denied"' in listing.text
    assert f"Mailbox {org.shared.user_principal_name} stopped" in listing.text

    # Access is back: Check connection resumes the mailbox, the email is filed, all clear.
    org.shared.full_access.add(org.alice.id)
    check = post_form(web, base, f"{base}/check")
    assert check.status_code == 200
    _poll_now(postroom)
    assert folder_of(org.shared, msg.immutable_id) == "Invoices"
    again = web.get(base).text
    assert "data-stopped-mailbox" not in again
    assert 'data-status="connected"' in _heading(again)


def test_a_bug_while_deciding_fails_one_email_and_the_sync_goes_on(
    web: httpx.Client,
    postroom: Postroom,
    sim: EmulatorState,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from postroom.sync import engine

    org = postroom.org(sim)
    base = setup_personal(web, postroom, org)
    postroom.drain()
    real_decide = engine.decide

    def decide(view: Any, *args: Any, **kwargs: Any) -> Any:
        if "4711" in view.subject:
            raise ValueError(f"cannot handle {view.subject!r}")  # a bug quoting the email
        return real_decide(view, *args, **kwargs)

    monkeypatch.setattr(engine, "decide", decide)
    broken = org.deliver(org.alice, subject="Invoice 4711 with a secret")
    fine = org.deliver(org.alice, subject="Invoice 4712")
    with caplog.at_level(logging.INFO):
        _poll_now(postroom)

    row = _row(postroom, broken.immutable_id)
    assert row.state == "failed" and row.last_error == "decide_failed"
    assert folder_of(org.alice, broken.immutable_id) == "Inbox"
    assert _row(postroom, fine.immutable_id).state == "done"
    assert folder_of(org.alice, fine.immutable_id) == "Invoices"
    assert "deciding failed (ValueError" in caplog.text
    assert "secret" not in caplog.text and "4711" not in caplog.text
    page = unescape(web.get(f"{base}/activity").text)
    assert "Postroom could not decide what to do with this email" in page


@pytest.mark.parametrize(
    ("state", "code", "actions", "attempts", "words"),
    [
        ("done", None, ["label", "folder", "move"], 0, None),
        ("skipped", None, [], 0, "deleted or moved out of reach"),
        ("failed", "ErrorAccessDenied", [], 1, "Could not label it: Microsoft refused access"),
        ("failed", "ErrorAccessDenied", ["label"], 1, "Could not file it in Finance/Invoices"),
        ("failed", "generalException", ["label"], 10, "Microsoft kept failing (10 tries)"),
        ("failed", "DeletionRefused", ["label"], 1, "Postroom never deletes mail"),
        ("claimed", "serviceNotAvailable", [], 3, "Trying again"),
        ("claimed", "ErrorAccessDenied", [], 1, "use Check connection"),
    ],
)
def test_ledger_outcomes_in_words(
    state: str, code: str | None, actions: list[str], attempts: int, words: str | None
) -> None:
    from postroom.processing.outcomes import outcome_words

    plan = {"add_categories": ["Invoices"], "folder": "Finance/Invoices", "forward": None}
    said = outcome_words(
        state=state, last_error=code, plan=plan, actions_done=actions, attempts=attempts
    )
    if words is None:
        assert said is None
    else:
        assert said is not None and words in said
