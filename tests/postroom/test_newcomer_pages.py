"""What a newcomer reads on the pages (issue 19 items 11, 12, 15, 18, 19, 20, 21, 23), over
real HTTP against m365sim and a real PostgreSQL: the permissions the connect page lists follow
its options, a category with another colour in Outlook is named and can be aligned, the
integration page links the Model page and says in people's words how each folder is found
(polled, and why) with true counts, polled folders are looked at every 15 s while mail
arrives, the rule test reads any mailbox of the integration, the colour choice carries its
swatch, and the emulator's Outbound page shows a forward's comment.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
from sqlalchemy import select, text, update

from m365sim.state import EmulatorState
from m365sim.store import Category as OutlookCategory
from postroom.integrations.models import Mailbox
from postroom.processing.message_keys import message_key
from postroom.processing.models import LedgerEntry
from postroom.sync.models import FolderSync
from tests.helpers import Org
from tests.postroom.conftest import Postroom
from tests.postroom.test_activity import INVOICE_PLAN, add_entry
from tests.postroom.test_editor import category_id, finished, invoice_form, submit
from tests.postroom.test_sync import setup_personal
from tests.postroom.webtools import post_form, sign_up


def _scopes(location: str) -> set[str]:
    scope = parse_qs(urlsplit(location).query)["scope"][0]
    return {s.rsplit("/", 1)[-1] for s in scope.split()}


# ---------------------------------------------------------------------- item 11
def test_the_permissions_list_follows_the_options(web: httpx.Client, postroom: Postroom) -> None:
    sign_up(web)
    page = web.get("/integrations/new/outlook/personal").text
    lists = dict(re.findall(r'<ul data-permissions="([^"]+)" hidden>(.*?)</ul>', page, re.S))
    named = {key: set(re.findall(r"<code>([^<]+)</code>", body)) for key, body in lists.items()}
    assert named["0-standard"] == {
        "User.Read",
        "MailboxSettings.Read",
        "Mail.ReadWrite",
        "Mail.Send",
        "offline_access",
    }
    assert named["1-standard"] == named["0-standard"] | {
        "Mail.ReadWrite.Shared",
        "Mail.Send.Shared",
    }
    assert named["1-minimal"] == {
        "User.Read",
        "Mail.ReadWrite",
        "Mail.ReadWrite.Shared",
        "offline_access",
    }
    assert "MailboxSettings.ReadWrite" in named["0-colours"]
    assert "MailboxSettings.Read" not in named["0-colours"]
    # Without JavaScript: every permission, the shared ones included, each with when.
    everything = page.split("data-permissions-all", 1)[1].split("</div>", 1)[0]
    for scope in ("Mail.ReadWrite.Shared", "Mail.Send.Shared", "MailboxSettings.ReadWrite"):
        assert f"<code>{scope}</code>" in everything
    # The two contradicting options say so; the server asks for minimal only.
    assert 'data-excludes="manage-colours"' in page
    assert "Not together with minimal permissions" in page
    both = post_form(
        web,
        "/integrations/new/outlook/personal",
        "/integrations/connect/personal",
        {"shared_access": "on", "minimal": "on", "manage_colours": "on"},
    )
    assert both.status_code == 303
    assert _scopes(both.headers["location"]) >= {"Mail.ReadWrite", "Mail.ReadWrite.Shared"}
    assert not _scopes(both.headers["location"]) & {
        "MailboxSettings.ReadWrite",
        "MailboxSettings.Read",
        "Mail.Send",
    }


# ---------------------------------------------------------------------- item 12
def test_a_category_with_another_colour_in_outlook_is_named_and_aligned(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org, base = finished(web, postroom, sim, manage_colours="on")  # Invoices: preset7
    outlook_id = str(uuid.uuid4())  # Outlook's category ids are GUIDs
    org.alice.mailbox.categories[outlook_id] = OutlookCategory(outlook_id, "invoices", "preset3")
    page = web.get(f"{base}/categories").text
    assert 'data-other-colour="Invoices"' in page
    assert "another colour in Outlook than here" in page
    differ = page.split('id="colours-differ"', 1)[1]
    assert "in Outlook\n" in differ or "in Outlook" in differ
    assert re.search(r"in Outlook\s*<span[^>]*data-colour=\"#fff100\"></span> Yellow", differ)
    assert re.search(r"here <span[^>]*data-colour=\"#00bcf2\"></span> Blue", differ)
    aligned = post_form(
        web, f"{base}/categories", f"{base}/categories/colours", {"action": "align"}
    )
    assert aligned.status_code == 303, re.findall(r"alert error.*?</div>", aligned.text, re.S)
    assert aligned.headers["location"] == f"{base}/categories?aligned=1"
    assert [(c.display_name, c.color) for c in org.alice.mailbox.categories.values()] == [
        ("invoices", "preset7")  # only the colour changed
    ]
    after = web.get(aligned.headers["location"]).text
    assert "Gave 1 category in Outlook Postroom&#39;s colour." in after
    assert 'data-other-colour="Invoices"' not in after


def test_without_the_permission_another_colour_is_named_with_the_way_to_align(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org, base = finished(web, postroom, sim)  # MailboxSettings.Read only
    org.alice.mailbox.categories["c1"] = OutlookCategory("c1", "Invoices", "preset0")
    page = web.get(f"{base}/categories").text
    assert 'data-other-colour="Invoices"' in page
    assert "Change them in Outlook to the colours here" not in page
    assert "Categorize → All Categories" in page
    refused = post_form(
        web, f"{base}/categories", f"{base}/categories/colours", {"action": "align"}
    )
    assert refused.status_code == 403
    assert org.alice.mailbox.categories["c1"].color == "preset0"


# ---------------------------------------------------------------------- items 15, 18
def test_the_integration_page_links_the_model_and_says_things_in_peoples_words(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org, base = finished(web, postroom, sim)
    postroom.drain()
    with postroom.database.session() as db:
        inbox = db.scalar(select(FolderSync).where(FolderSync.folder_key == "inbox"))
        assert inbox is not None
        db.add(
            FolderSync(
                integration_id=inbox.integration_id,
                mailbox_id=inbox.mailbox_id,
                folder_key="watch:Finance/Invoices",
                folder_id="x",
                watch=True,
            )
        )
        db.execute(update(FolderSync).where(FolderSync.id == inbox.id).values(processed_count=2))
    message = org.deliver(org.alice, subject="Invoice 1")
    add_entry(postroom, message.immutable_id, plan=INVOICE_PLAN, actions=["label", "move"])
    with postroom.database.session() as db:
        box = db.scalar(select(Mailbox))
        assert box is not None
        for n in range(3):  # found by "Apply to existing mail"
            db.add(
                LedgerEntry(
                    integration_id=box.integration_id,
                    mailbox_id=box.id,
                    message_id=f"old-{n}",
                    message_key=message_key(f"<old-{n}@test>", b"k" * 32),
                    state="done",
                    historical=True,
                    plan=INVOICE_PLAN,
                    actions_done=["label", "move"],
                )
            )
    page = web.get(base).text
    assert f'href="{base}/model"' in page
    sync = page.split('aria-label="Sync"', 1)[1].split("</table>", 1)[0]
    assert "watch:" not in sync
    assert "Finance/Invoices" in sync and "watched so that corrections" in sync
    assert "<td>Inbox</td>" in sync and "<td>inbox</td>" not in sync
    assert "New mail processed" in sync
    boxes = page.split('aria-label="Mailboxes"', 1)[1].split("</table>", 1)[0]
    assert 'data-processed="4"' in boxes and "3 of them existing mail" in boxes
    assert "your mailbox" in boxes and "<td>own</td>" not in boxes
    # the parts that change refresh themselves (app.js swaps them)
    for part in ("live-status", "live-sync", "live-mailboxes", "live-actions"):
        assert f'id="{part}" data-live' in page
    activity = web.get(f"{base}/activity").text
    assert 'id="live-activity" data-live' in activity
    assert "colour created" not in activity and "folder created" not in activity


# ---------------------------------------------------------------------- item 19
def _queued_syncs(postroom: Postroom) -> int:
    with postroom.database.engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM procrastinate_jobs "
                    "WHERE status = 'todo' AND task_name = 'postroom:sync_folder'"
                )
            ).scalar_one()
        )


def _poll(postroom: Postroom) -> int:
    from postroom.sync.jobs import poll_now
    from postroom.sync.queue import make_runtime

    runtime = make_runtime(postroom.settings, postroom.database, postroom.app.state.box)

    async def run() -> int:
        async with runtime.queue.open_async():
            return await poll_now(runtime)

    return asyncio.run(run())


def _shared_polled(web: httpx.Client, postroom: Postroom, org: Org) -> str:
    base = setup_personal(web, postroom, org, shared=org.shared.user_principal_name)
    postroom.drain()
    return base


def test_a_polled_shared_mailbox_is_looked_at_every_15_seconds_while_mail_arrives(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    base = _shared_polled(web, postroom, org)
    with postroom.database.session() as db:
        polled = db.scalar(select(FolderSync).where(FolderSync.mode == "polling"))
        assert polled is not None
        polled_id, shared_box = polled.id, polled.mailbox_id
        # looked at 20 s ago; quiet (no mail yet): not due before the configured interval
        db.execute(
            update(FolderSync)
            .where(FolderSync.id == polled_id)
            .values(last_synced_at=datetime.now(UTC) - timedelta(seconds=20))
        )
    assert _poll(postroom) == 0
    # mail arrived there a minute ago: now it is looked at every 15 s
    with postroom.database.session() as db:
        box = db.get(Mailbox, shared_box)
        assert box is not None
        db.add(
            LedgerEntry(
                integration_id=box.integration_id,
                mailbox_id=box.id,
                message_id="recent",
                message_key=message_key("<recent@test>", b"k" * 32),
                state="done",
                plan=INVOICE_PLAN,
                claimed_at=datetime.now(UTC) - timedelta(minutes=1),
            )
        )
    assert _poll(postroom) == 1 and _queued_syncs(postroom) == 1
    msg = org.deliver(org.shared, subject="Invoice to the shared mailbox")
    postroom.drain()
    with postroom.database.session() as db:
        row = db.scalar(select(LedgerEntry).where(LedgerEntry.message_id == msg.immutable_id))
        assert row is not None and row.state == "done"
    # a folder with notifications is never polled by this
    with postroom.database.session() as db:
        db.execute(update(FolderSync).values(last_synced_at=None))
        db.execute(update(FolderSync).where(FolderSync.id == polled_id).values(active=False))
    assert _poll(postroom) == 0

    # the page says that the shared mailbox is polled, how often and why
    with postroom.database.session() as db:
        db.execute(update(FolderSync).where(FolderSync.id == polled_id).values(active=True))
    page = web.get(base).text
    sync = page.split('aria-label="Sync"', 1)[1].split("</table>", 1)[0]
    polled_row = [r for r in sync.split("<tr") if "data-polled" in r]
    assert len(polled_row) == 1 and org.shared.user_principal_name in polled_row[0]
    quiet = postroom.settings.poll_interval_seconds
    assert f"checked every 15 s while mail is arriving, every {quiet} s when quiet" in polled_row[0]
    assert "does not send notifications for a shared mailbox on a personal" in polled_row[0]


def test_the_poll_runs_every_15_seconds_on_every_worker_once() -> None:
    from croniter import croniter

    from postroom.sync.jobs import build_blueprint, poll_interval

    blueprint = build_blueprint()
    tasks = {key[0]: task for key, task in blueprint.periodic_registry.periodic_tasks.items()}
    assert "poll" in tasks
    start = datetime(2024, 1, 1, tzinfo=UTC)
    ticks = croniter(tasks["poll"].cron, start)
    assert [(ticks.get_next(datetime) - start).seconds for _ in range(3)] == [15, 30, 45]
    from postroom.settings import Settings

    settings = Settings(poll_interval_seconds=60)
    now = datetime.now(UTC)
    assert poll_interval(settings, None, now) == 60
    assert poll_interval(settings, now - timedelta(minutes=2), now) == 15
    assert poll_interval(settings, now - timedelta(minutes=11), now) == 60


# ---------------------------------------------------------------------- item 20
def test_the_rule_test_offers_every_mailbox_of_the_integration(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    base = _shared_polled(web, postroom, org)
    cid = category_id(postroom, "Invoices")
    shared_mail = org.deliver(org.shared, subject="Invoice for the team mailbox")
    with postroom.database.session() as db:
        shared = db.scalar(select(Mailbox).where(Mailbox.kind == "shared"))
        assert shared is not None
        shared_id = shared.id
    form = web.get(f"{base}/categories", params={"edit": cid}).text
    assert f'<option value="{shared_id}"' in form  # the shared mailbox can be chosen
    assert org.shared.user_principal_name in form
    shown = submit(web, base, invoice_form(cid, action="show_recent", test_mailbox=shared_id))
    assert shown.status_code == 200, shown.text[:1000]
    assert "Invoice for the team mailbox" in shown.text
    assert f'name="shown_mailbox" value="{shared_id}"' in shown.text
    result = submit(
        web,
        base,
        invoice_form(
            cid,
            action=f"test:{shared_mail.immutable_id}",
            shown_mailbox=shared_id,
            mode="all",
            rule_field="Subject",
            rule_operator="CONTAINS",
            rule_value="invoice",
        ),
    )
    assert result.status_code == 200, result.text[:1000]
    assert "Result for “Invoice for the team mailbox”" in result.text
    assert "<strong>Category “Invoices”</strong>" in result.text
    assert org.shared.mailbox.messages[shared_mail.immutable_id].categories == []  # read only


# ---------------------------------------------------------------------- item 21
def test_the_colour_choice_carries_its_swatch(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    _, base = finished(web, postroom, sim)  # Invoices: preset7, Blue (#00bcf2)
    cid = category_id(postroom, "Invoices")
    form = web.get(f"{base}/categories", params={"edit": cid}).text
    picker = form.split('class="with-swatch"', 1)[1].split("</select>", 1)[0]
    assert 'class="swatch big" data-colour="#00bcf2"' in picker
    assert "data-swatch" in picker and 'data-hex="#e74856"' in picker


# ---------------------------------------------------------------------- item 23
def test_the_outbound_page_shows_a_forwards_comment(
    http: httpx.Client, org: Org, graph_url: str
) -> None:
    message = org.deliver(org.alice, subject="Invoice 9 to book")
    headers = {"Authorization": f"Bearer {org.token(org.alice)}"}
    base = f"{graph_url}/users/{org.alice.id}/messages"
    draft = http.post(
        f"{base}/{message.immutable_id}/createForward",
        headers=headers,
        json={
            "comment": "Please book this invoice.",
            "toRecipients": [{"emailAddress": {"address": "ap@fabrikam.test"}}],
        },
    )
    assert draft.status_code == 201, draft.text
    sent = http.post(f"{base}/{draft.json()['id']}/send", headers=headers)
    assert sent.status_code == 202, sent.text
    page = http.get("/viewer/outbound").text
    row = [r for r in page.split("<tr>") if "Invoice 9 to book" in r]
    assert len(row) == 1 and "<td>Please book this invoice.</td>" in row[0]
