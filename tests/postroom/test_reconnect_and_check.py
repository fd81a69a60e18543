"""A stopped mailbox comes back at once, and Check connection says what it checked (issue 19,
items 2 and 3).

Before: after ``reauthorizationRequired`` and a successful Reconnect, Graph's subscription stayed
paused and new mail waited 5-6 minutes for the reconcile sweep while the page said Connected;
Check connection showed nothing at all.
"""

from __future__ import annotations

import httpx
from sqlalchemy import select

from m365sim.identity import events
from m365sim.notifications.registry import registry
from m365sim.state import EmulatorState
from postroom.integrations.models import Integration
from postroom.sync import engine
from postroom.sync.models import FolderSync
from tests.postroom.conftest import Postroom
from tests.postroom.msdriver import through_microsoft
from tests.postroom.test_sync import _run, folder_of, setup_personal, wait_for_jobs
from tests.postroom.webtools import csrf


def _alice_subscriptions(sim: EmulatorState, user_id: str) -> list[object]:
    return [s for s in registry(sim).by_id.values() if s.mailbox_id == user_id]


def test_reconnect_after_reauthorization_required_restores_real_time_at_once(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    base = setup_personal(web, postroom, org)
    postroom.drain()
    subscriptions = _alice_subscriptions(sim, org.alice.id)
    assert subscriptions
    # MFA is newly required; Graph challenges the subscription and, unanswered, pauses it.
    events.set_mfa(sim, org.alice, required=True)
    sim.clock.advance(3700)  # the access token expires; the refresh is refused (MFA)
    for sub in subscriptions:
        sub.reauth_required_since = sim.clock.time() - 100_000  # type: ignore[attr-defined]
    with postroom.database.session() as db:
        sync_id = db.scalars(select(FolderSync.id).where(FolderSync.watch.is_(False))).first()
    assert sync_id is not None
    assert _run(postroom, lambda runtime: engine.renew_subscription(runtime, sync_id)) == "paused"
    with postroom.database.session() as db:
        item = db.scalar(select(Integration))
        assert item is not None and item.status == "needs_reconnect"

    page = web.get(base)
    start = web.post(f"{base}/reconnect", data={"csrf_token": csrf(page.text)})
    back = through_microsoft(
        web,
        start,
        back_to=postroom.url,
        username=org.alice.user_principal_name,
        password="alice-pass",
        mfa_code=org.alice.mfa_code,
    )
    assert web.get(back).status_code == 303
    postroom.drain()  # the resume job: renew (answers the challenge) and catch up
    assert all(
        s.reauth_required_since is None  # type: ignore[attr-defined]
        for s in _alice_subscriptions(sim, org.alice.id)
    )
    # Real time again: a new email is notified and queued without any reconcile sweep.
    msg = org.deliver(org.alice, subject="Invoice after the reconnect")
    assert wait_for_jobs(postroom, timeout=10.0) > 0
    postroom.drain()
    assert folder_of(org.alice, msg.immutable_id) == "Invoices"


def test_check_connection_reports_token_mailboxes_and_subscriptions(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    base = setup_personal(web, postroom, org, shared=org.shared.user_principal_name)
    postroom.drain()
    # Graph forgets one subscription.
    for sub in _alice_subscriptions(sim, org.alice.id):
        registry(sim).remove(sub.id)  # type: ignore[attr-defined]
    page = web.get(base)
    report = web.post(f"{base}/check", data={"csrf_token": csrf(page.text)})
    assert report.status_code == 200
    text = report.text
    assert "Connection check" in text
    assert "Sign-in" in text
    assert f"Mailbox {org.alice.user_principal_name}" in text
    assert f"Mailbox {org.shared.user_principal_name}" in text
    assert "polling" in text and "shared mailbox" in text  # why it is polled
    assert "subscription is gone" in text
    assert "A new subscription is being created" in text
    postroom.drain()
    assert _alice_subscriptions(sim, org.alice.id)  # repaired


def test_check_connection_reports_a_failed_sign_in(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    base = setup_personal(web, postroom, org)
    postroom.drain()
    events.revoke_sign_in_sessions(sim, org.alice)
    sim.clock.advance(3700)
    page = web.get(base)
    report = web.post(f"{base}/check", data={"csrf_token": csrf(page.text)})
    assert report.status_code == 200
    assert 'data-ok="no"' in report.text and "Sign-in" in report.text
    with postroom.database.session() as db:
        item = db.scalar(select(Integration))
        assert item is not None and item.status == "needs_reconnect"


def test_declining_microsofts_consent_page_says_so(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    """Issue 19, item 7: AADSTS65004 is the person's own "Cancel", not a refused sign-in."""
    from tests.postroom.webtools import post_form, sign_up

    org = postroom.org(sim)
    sign_up(web)
    start = post_form(
        web,
        "/integrations/new/outlook/personal",
        "/integrations/connect/personal",
        {"shared_access": "on"},
    )
    back = through_microsoft(
        web,
        start,
        back_to=postroom.url,
        username=org.alice.user_principal_name,
        password="alice-pass",
        consent="cancel",
    )
    page = web.get(back)
    assert page.status_code == 400
    assert "You declined the permissions" in page.text
    assert "refused the saved sign-in" not in page.text
