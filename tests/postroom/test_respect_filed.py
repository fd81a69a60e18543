"""Respect what people did (issue 18): by default an email that already has a category of its
own — a person or an Outlook rule filed it before Postroom got to it — is left alone and
listed as "left alone: already filed"; a setting per integration turns this off."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from m365sim.state import EmulatorState
from postroom.processing.models import LedgerEntry
from tests.postroom.conftest import Postroom
from tests.postroom.test_requests_per_email import _drain_all, _warm
from tests.postroom.test_sync import folder_of, setup_personal
from tests.postroom.webtools import post_form


def test_mail_filed_by_a_person_is_left_alone_unless_the_setting_is_off(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    base = setup_personal(web, postroom, org)
    postroom.drain()
    _warm(postroom, org)
    page = web.get(base).text
    assert 'name="respect_filed" checked' in page  # on by default

    filed = org.deliver(org.alice, subject="Invoice 1", categories=["Personal"])
    plain = org.deliver(org.alice, subject="Invoice 2")
    _drain_all(postroom)
    assert folder_of(org.alice, filed.immutable_id) == "Inbox"  # left where it was
    assert org.alice.mailbox.messages[filed.immutable_id].categories == ["Personal"]
    assert folder_of(org.alice, plain.immutable_id) == "Invoices"  # the rest as always
    with postroom.database.session() as db:
        row = db.scalar(select(LedgerEntry).where(LedgerEntry.message_id == filed.immutable_id))
        assert row is not None and (row.state, row.last_error) == ("skipped", "already_filed")
    writes = [
        r for r in sim.request_log if r.method in ("PATCH", "POST") and filed.immutable_id in r.path
    ]
    assert writes == []
    activity = web.get(f"{base}/activity").text
    assert "Left alone: already filed" in activity
    assert "matched: Subject contains “invoice”" in activity  # why the rule filed the others

    # Turned off: Postroom's category goes beside the person's own.
    saved = post_form(web, base, f"{base}/settings", {})  # the box unticked
    assert saved.status_code == 303
    assert 'name="respect_filed" checked' not in web.get(base).text
    later = org.deliver(org.alice, subject="Invoice 3", categories=["Personal"])
    _drain_all(postroom)
    assert folder_of(org.alice, later.immutable_id) == "Invoices"
    assert org.alice.mailbox.messages[later.immutable_id].categories == ["Personal", "Invoices"]
    # and on again; a value that is not a tick box is refused
    assert post_form(web, base, f"{base}/settings", {"respect_filed": "on"}).status_code == 303
    assert 'name="respect_filed" checked' in web.get(base).text
    assert post_form(web, base, f"{base}/settings", {"respect_filed": "x"}).status_code == 400


def test_mail_that_left_the_folder_before_postroom_got_to_it_is_left_alone_and_logged(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState, http: httpx.Client
) -> None:
    """An Outlook rule or a person moved it out between two syncs: the delta reports it gone,
    Postroom never saw it. New mail is logged "left alone: already filed" and not touched;
    old mail a person tidies away (from before the setup) is passed over."""
    from datetime import UTC, datetime, timedelta

    from tests.postroom.test_learning_feedback import Outlook
    from tests.postroom.test_sync import wait_for_jobs

    org = postroom.org(sim)
    last_year = datetime.now(UTC) - timedelta(days=300)
    old = org.deliver(org.alice, subject="Invoice from last year", received=last_year)
    base = setup_personal(web, postroom, org)
    postroom.drain()
    _warm(postroom, org)
    store, box = org.state.store, org.alice.mailbox
    kept = store.create_folder(box, "Kept", box.root_id())
    assert kept is not None
    outlook = Outlook(http, org)
    moved = org.deliver(org.alice, subject="Invoice 7")
    outlook.move(moved.immutable_id, kept.id)  # before any sync saw it
    outlook.move(old.immutable_id, kept.id)
    assert wait_for_jobs(postroom) >= 1
    _drain_all(postroom)

    assert folder_of(org.alice, moved.immutable_id) == "Kept"
    assert org.alice.mailbox.messages[moved.immutable_id].categories == []
    with postroom.database.session() as db:
        row = db.scalar(select(LedgerEntry).where(LedgerEntry.message_id == moved.immutable_id))
        assert row is not None and (row.state, row.last_error) == ("skipped", "left_folder")
        untouched = select(LedgerEntry).where(LedgerEntry.message_id == old.immutable_id)
        assert db.scalar(untouched) is None
    writes = [
        r
        for r in sim.request_log
        if r.method in ("PATCH", "POST") and moved.immutable_id in r.path and "/me/" not in r.path
    ]
    assert writes == []
    assert "it had left the folder before Postroom got to it" in web.get(f"{base}/activity").text
