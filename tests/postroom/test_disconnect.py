"""Disconnect and Delete (issue 18): against m365sim, through the pages a person uses.

Disconnect deletes Postroom's Graph subscriptions, forgets the tokens, stops the integration's
work and - only if ticked - removes from the mailbox's master category list exactly the
categories Postroom created (never a person's own, never a folder, never an email), then says
what it removed and what it deliberately left. Reconnecting starts from a fresh baseline: mail
that arrived while disconnected is not processed, mail processed before never again. Delete
removes a disconnected integration and everything Postroom stored for it, after a confirmation
that lists it; nothing in Microsoft 365 changes.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html import unescape

import httpx
from sqlalchemy import func, select

from m365sim.identity import events
from m365sim.notifications.registry import registry
from m365sim.state import EmulatorState
from m365sim.store import Category as SimCategory
from postroom.integrations.models import Category, Integration, Mailbox
from postroom.processing.models import CreatedMasterCategory, LedgerEntry
from postroom.sync.models import FolderSync
from tests.postroom.conftest import Postroom
from tests.postroom.msdriver import reconnect
from tests.postroom.test_requests_per_email import _drain_all, _warm
from tests.postroom.test_sync import folder_of, setup_personal
from tests.postroom.webtools import add_member, csrf, post_form, sign_up

COLOURS = {"shared_access": "on", "manage_colours": "on"}  # Postroom may create categories


def _text(html: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def _subscriptions(sim: EmulatorState, user_id: str) -> list[object]:
    return [s for s in registry(sim).by_id.values() if s.mailbox_id == user_id]


def _master_names(user: object) -> set[str]:
    return {c.display_name for c in user.mailbox.categories.values()}  # type: ignore[attr-defined]


def _integration(postroom: Postroom) -> Integration:
    with postroom.database.session() as db:
        item = db.scalar(select(Integration))
        assert item is not None
        db.expunge(item)
        return item


def _count(postroom: Postroom, model: object, *where: object) -> int:
    with postroom.database.session() as db:
        return int(db.scalar(select(func.count()).select_from(model).where(*where)) or 0)  # type: ignore[arg-type]


def test_disconnect_removes_what_postroom_made_keeps_mail_and_reconnect_starts_afresh(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    # Alice's own category on her master list, which Postroom must never touch.
    own = SimCategory(
        id="6a7e1c9e-1111-4c3a-9a77-0d1b5c2e9f01", display_name="Family", color="preset2"
    )
    org.alice.mailbox.categories[own.id] = own
    base = setup_personal(web, postroom, org, options=COLOURS)
    postroom.drain()
    _warm(postroom, org)
    filed = org.deliver(org.alice, subject="Invoice 1")
    _drain_all(postroom)
    assert folder_of(org.alice, filed.immutable_id) == "Invoices"
    assert "Invoices" in _master_names(org.alice)  # Postroom created it, with its colour
    with postroom.database.session() as db:
        made = [(c.name) for c in db.scalars(select(CreatedMasterCategory))]
    assert made == ["Invoices"]
    assert _subscriptions(sim, org.alice.id)
    ledger_before = _count(postroom, LedgerEntry)

    # The confirmation page names what it offers to remove, and only that.
    page = web.get(f"{base}/disconnect")
    assert page.status_code == 200
    words = _text(page.text)
    assert "Invoices" in words and "Family" not in words
    assert "never deletes mail" in words

    done = post_form(web, f"{base}/disconnect", f"{base}/disconnect", {"remove_categories": "on"})
    assert done.status_code == 303
    assert _integration(postroom).status == "disconnecting"
    assert 'data-status="disconnecting"' in web.get(base).text
    # From now nothing is processed, even before the job ran.
    meanwhile = org.deliver(org.alice, subject="Invoice 2")
    _drain_all(postroom)  # runs the disconnect job (and any sync, which does nothing)

    item = _integration(postroom)
    assert item.status == "disconnected"
    assert item.token_cache is None
    summary = item.disconnect or {}
    assert summary["subscriptions_deleted"] >= 1 and summary["subscriptions_left"] == 0
    assert summary["categories_removed"] == [
        {"name": "Invoices", "mailbox": org.alice.user_principal_name}
    ]
    assert _subscriptions(sim, org.alice.id) == []
    assert "Invoices" not in _master_names(org.alice)
    assert "Family" in _master_names(org.alice)  # the person's own stays
    # Mail and folders stay as they are; the email keeps its category's name.
    assert folder_of(org.alice, filed.immutable_id) == "Invoices"
    assert org.alice.mailbox.messages[filed.immutable_id].categories == ["Invoices"]
    assert folder_of(org.alice, meanwhile.immutable_id) == "Inbox"
    assert org.alice.mailbox.messages[meanwhile.immutable_id].categories == []
    assert [d for d in sim.store.deletions if d.mailbox_id == org.alice.id] == []
    assert _count(postroom, FolderSync, FolderSync.active.is_(True)) == 0

    html = web.get(base).text
    words = _text(html)
    assert 'data-status="disconnected"' in html
    assert "Removed from the category list: Invoices" in words
    assert "Left deliberately: every folder and every email" in words
    assert f'action="{base}/reconnect"' in html and f'href="{base}/delete"' in html
    assert f'href="{base}/disconnect"' not in html  # not twice
    again = post_form(web, base, f"{base}/disconnect", {"remove_categories": "on"})
    assert again.status_code == 303 and _integration(postroom).status == "disconnected"

    # Reconnect: a fresh baseline - the email that came meanwhile stays untouched; new mail is
    # processed; nothing processed before is processed again.
    reconnect(
        web,
        base,
        back_to=postroom.url,
        username=org.alice.user_principal_name,
        password="alice-pass",
    )
    _drain_all(postroom)
    item = _integration(postroom)
    assert item.status == "connected" and item.disconnect is None
    assert _subscriptions(sim, org.alice.id)
    after = org.deliver(org.alice, subject="Invoice 3")
    _drain_all(postroom)
    assert folder_of(org.alice, after.immutable_id) == "Invoices"
    assert folder_of(org.alice, meanwhile.immutable_id) == "Inbox"
    assert _count(postroom, LedgerEntry) == ledger_before + 1
    assert [d for d in sim.store.deletions if d.mailbox_id == org.alice.id] == []


def test_disconnect_without_a_working_sign_in_still_disconnects_and_says_what_was_left(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    base = setup_personal(web, postroom, org, options=COLOURS)
    postroom.drain()
    _warm(postroom, org)
    events.revoke_sign_in_sessions(sim, org.alice)
    sim.clock.advance(3700)  # the access token expires; the refresh is refused
    done = post_form(web, f"{base}/disconnect", f"{base}/disconnect", {"remove_categories": "on"})
    assert done.status_code == 303
    _drain_all(postroom)
    item = _integration(postroom)
    assert item.status == "disconnected" and item.token_cache is None
    summary = item.disconnect or {}
    assert summary["token_problem"] == "sessions_revoked"
    assert summary["subscriptions_left"] >= 1
    assert summary["categories_kept"] == [
        {"name": "Invoices", "mailbox": org.alice.user_principal_name, "why": "no_access"}
    ]
    words = _text(web.get(base).text)
    assert "lapse by themselves within three days" in words
    assert "Not removed: Invoices" in words and "could no longer sign in" in words
    # Notifications of a subscription left to lapse are ignored: nothing is processed.
    late = org.deliver(org.alice, subject="Invoice late")
    _drain_all(postroom)
    assert folder_of(org.alice, late.immutable_id) == "Inbox"


def test_disconnect_keeps_the_category_list_unless_ticked(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    base = setup_personal(web, postroom, org, options=COLOURS)
    postroom.drain()
    _warm(postroom, org)
    with postroom.database.session() as db:  # an unfinished backfill is under way
        for sync in db.scalars(select(FolderSync).where(FolderSync.watch.is_(False))):
            sync.backfill_since = datetime.now(UTC) - timedelta(days=30)
    done = post_form(web, f"{base}/disconnect", f"{base}/disconnect")
    assert done.status_code == 303
    # a disconnect whose job was lost is queued again by the reconcile after two minutes
    from postroom.sync import disconnect

    item = _integration(postroom)
    with postroom.database.session() as db:
        assert disconnect.lost_requests(db, datetime.now(UTC)) == []
        later = datetime.now(UTC) + disconnect.REQUEST_RETRY + timedelta(seconds=1)
        assert disconnect.lost_requests(db, later) == [item.id]
    _drain_all(postroom)
    assert _integration(postroom).status == "disconnected"
    assert "Invoices" in _master_names(org.alice)
    words = _text(web.get(base).text)
    assert "Left the categories Postroom created on the category list, as asked." in words
    assert "Stopped the unfinished processing of existing mail" in words
    with postroom.database.session() as db:  # it would have reached past the new baseline
        inbox = select(FolderSync.backfill_finished_at).where(FolderSync.watch.is_(False))
        assert all(at is not None for at in db.scalars(inbox))


def test_delete_lists_what_goes_and_removes_everything_stored(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    base = setup_personal(web, postroom, org, options=COLOURS)
    postroom.drain()
    _warm(postroom, org)
    integration_id = _integration(postroom).id

    # Not before it is disconnected.
    page = web.get(f"{base}/delete")
    assert page.status_code == 200 and "disconnect it" in _text(page.text)
    refused = web.post(f"{base}/delete", data={"csrf_token": csrf(page.text), "confirm": "delete"})
    assert refused.status_code == 409
    assert _count(postroom, Integration) == 1

    post_form(web, f"{base}/disconnect", f"{base}/disconnect")
    _drain_all(postroom)
    page = web.get(f"{base}/delete")
    words = _text(page.text)
    assert "1 mailbox chosen" in words
    assert "1 category with its rules" in words
    assert "activity record" in words
    assert "Nothing in Microsoft 365 changes" in words
    unconfirmed = web.post(f"{base}/delete", data={"csrf_token": csrf(page.text)})
    assert unconfirmed.status_code == 400 and "Tick the box" in unconfirmed.text
    assert _count(postroom, Integration) == 1
    no_csrf = web.post(f"{base}/delete", data={"confirm": "delete"})
    assert no_csrf.status_code in (400, 403)
    assert _count(postroom, Integration) == 1

    gone = web.post(f"{base}/delete", data={"csrf_token": csrf(page.text), "confirm": "delete"})
    assert gone.status_code == 303 and gone.headers["location"].startswith("/integrations?")
    assert _count(postroom, Integration) == 0
    for model, column in (
        (Mailbox, Mailbox.integration_id),
        (Category, Category.integration_id),
        (LedgerEntry, LedgerEntry.integration_id),
        (FolderSync, FolderSync.integration_id),
    ):
        assert _count(postroom, model, column == integration_id) == 0, model
    assert _count(postroom, CreatedMasterCategory) == 0
    assert web.get(base).status_code == 404
    # Microsoft 365 unchanged by Delete: the filed email is where it was, labelled.
    filed = [m for m in org.alice.mailbox.messages.values() if m.subject == "Invoice 0"]
    assert filed and folder_of(org.alice, filed[0].immutable_id) == "Invoices"
    assert [d for d in sim.store.deletions if d.mailbox_id == org.alice.id] == []


def test_only_managers_of_the_workspace_can_disconnect_or_delete(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    base = setup_personal(web, postroom, org)
    postroom.drain()
    with httpx.Client(base_url=postroom.url, trust_env=False, timeout=30) as member:
        sign_up(member, email="mia@acme.test", name="Mia Member", workspace="Mia's")
        add_member(web, member, "mia@acme.test", role="member")
        page = member.get(base)
        assert page.status_code == 200 and f'href="{base}/disconnect"' not in page.text
        assert member.get(f"{base}/disconnect").status_code == 403
        token = csrf(page.text)
        assert member.post(f"{base}/disconnect", data={"csrf_token": token}).status_code == 403
        assert (
            member.post(f"{base}/delete", data={"csrf_token": token, "confirm": "delete"})
        ).status_code == 403
    with httpx.Client(base_url=postroom.url, trust_env=False, timeout=30) as stranger:
        sign_up(stranger, email="eve@evil.test", name="Eve", workspace="Evil")
        token = csrf(stranger.get("/integrations").text)
        assert stranger.get(f"{base}/disconnect").status_code == 404
        assert stranger.post(f"{base}/disconnect", data={"csrf_token": token}).status_code == 404
        assert stranger.get(f"{base}/delete").status_code == 404
    no_csrf = web.post(f"{base}/disconnect", data={"remove_categories": "on"})
    assert no_csrf.status_code in (400, 403)
    bad = post_form(web, base, f"{base}/disconnect", {"remove_categories": "yes please"})
    assert bad.status_code == 400
    assert _integration(postroom).status == "connected"


def test_work_running_at_disconnect_stops_and_never_writes_the_tokens_back(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    """A sync or job already running when the person disconnects: it may not store a
    refreshed token (the page says the sign-in was forgotten), a new sync does nothing, and a
    reconnect waits until the disconnect is done (409)."""
    from postroom.sync import engine
    from tests.postroom.test_sync import _run

    org = postroom.org(sim)
    base = setup_personal(web, postroom, org)
    postroom.drain()
    item = _integration(postroom)
    done = post_form(web, f"{base}/disconnect", f"{base}/disconnect")
    assert done.status_code == 303
    before = _integration(postroom).token_cache

    async def refresh_lands(runtime: object) -> None:  # a running job's token refresh
        engine._store_cache(runtime, item.id, '{"RefreshToken": {}}')  # type: ignore[arg-type]

    _run(postroom, refresh_lands)
    assert _integration(postroom).token_cache == before  # not replaced while disconnecting
    with postroom.database.session() as db:
        sync_id = db.scalar(select(FolderSync.id).where(FolderSync.watch.is_(False)))
    result = _run(postroom, lambda runtime: engine.sync_folder(runtime, sync_id))
    assert result.paused == "disconnecting" and result.pages == 0
    page = web.get(base).text
    assert web.post(f"{base}/reconnect", data={"csrf_token": csrf(page)}).status_code == 409

    _drain_all(postroom)  # the disconnect job
    assert _integration(postroom).status == "disconnected"
    _run(postroom, refresh_lands)
    assert _integration(postroom).token_cache is None  # forgotten, and stays forgotten
