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
    assert "Left alone: already filed" in web.get(f"{base}/activity").text

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
