"""Editing categories and rules after setup, the "test against a recent email" preview and the
colours in Outlook: Postroom ⇄ m365sim over real HTTP(S), real PostgreSQL.

Asserted on what a person sees (the page, its status code, the problems in plain words), on
what is stored (``Category`` rows, never a subject) and on what Graph received (the preview
only reads; the colour button creates master categories).
"""

from __future__ import annotations

import html
import os
import re
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text, update

from m365sim.state import EmulatorState
from m365sim.store import Category as OutlookCategory
from postroom.integrations.models import Category, Integration
from postroom.processing.models import LedgerEntry
from tests.helpers import Org
from tests.postroom.conftest import Postroom
from tests.postroom.test_connect import connect_personal, finish_wizard
from tests.postroom.test_sync import wait_for_jobs
from tests.postroom.webtools import add_member, csrf, post_form, sign_up

CATEGORIES_PATH = "/integrations/{integration_id}/categories"


def finished(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState, **options: str
) -> tuple[Org, str]:
    """Sign up, connect Alice personally, finish the wizard (category Invoices)."""
    org = postroom.org(sim)
    sign_up(web)
    base = connect_personal(
        web, postroom, org, options={"shared_access": "on", **options}
    ).removesuffix("/setup")
    finish_wizard(web, base)
    return org, base


def stored(postroom: Postroom) -> list[tuple[Any, ...]]:
    with postroom.database.session() as db:
        rows = db.scalars(select(Category).order_by(Category.position))
        return [
            (c.name, c.color, c.folder, c.forward_to, c.description, c.rules, c.position)
            for c in rows
        ]


def category_id(postroom: Postroom, name: str) -> str:
    with postroom.database.session() as db:
        found = db.scalar(select(Category.id).where(Category.name == name))
    assert found is not None
    return found


def submit(web: httpx.Client, base: str, data: dict[str, Any]) -> httpx.Response:
    page = web.get("/integrations")  # any page has the session's CSRF token
    return web.post(f"{base}/categories", data={"csrf_token": csrf(page.text), **data})


def invoice_form(cid: str, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "category_id": cid,
        "name": "Invoices",
        "color": "preset7",
        "folder": "Finance/Invoices",
        "forward_to": "",
        "description": "Bills from suppliers",
        "mode": "any",
        "rule_field": ["Subject", "From.Email"],
        "rule_operator": ["CONTAINS", "ENDS_WITH"],
        "rule_value": ["invoice", "@vendor.test"],
        "action": "save",
    }
    data.update(changes)
    return data


def test_edit_rules_add_reorder_and_delete_categories(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    _, base = finished(web, postroom, sim)
    listing = web.get(f"{base}/categories")
    assert listing.status_code == 200
    assert "Invoices" in listing.text and "No rules (learned model only)" in listing.text
    cid = category_id(postroom, "Invoices")
    edit = web.get(f"{base}/categories", params={"edit": cid})
    assert 'name="rule_field"' in edit.text and "Test against a recent email" in edit.text

    # "Add condition" re-renders the unsaved form with one more row; nothing is stored.
    before = stored(postroom)
    more = submit(web, base, invoice_form(cid, action="add_condition"))
    assert more.status_code == 200
    assert more.text.count('name="rule_field"') == 3
    assert 'value="@vendor.test"' in more.text
    assert stored(postroom) == before
    fewer = submit(web, base, invoice_form(cid, action="remove_condition:0"))
    assert fewer.text.count('name="rule_field"') == 1 and 'value="invoice"' not in fewer.text

    # Save: the rule is stored as RuleGroup JSON; an empty row is ignored.
    saved = submit(
        web,
        base,
        invoice_form(
            cid,
            rule_field=["Subject", "", "From.Email"],
            rule_operator=["CONTAINS", "CONTAINS", "ENDS_WITH"],
            rule_value=["  invoice ", "", "@vendor.test"],
        ),
    )
    assert saved.status_code == 303, saved.text[:2000]
    assert saved.headers["location"] == f"{base}/categories?saved={cid}"
    assert stored(postroom) == [
        (
            "Invoices",
            "preset7",
            "Finance/Invoices",
            [],
            "Bills from suppliers",
            {
                "mode": "any",
                "items": [
                    {"field": "Subject", "operator": "CONTAINS", "value": "invoice"},
                    {"field": "From.Email", "operator": "ENDS_WITH", "value": "@vendor.test"},
                ],
            },
            0,
        )
    ]
    page = web.get(saved.headers["location"])
    assert "Saved “Invoices”." in page.text
    assert (
        "any of: Subject contains “invoice”; From (address) ends with “@vendor.test”" in page.text
    )

    # A second category, with a boolean and a date rule; it goes last, then moves up.
    added = submit(
        web,
        base,
        {
            "name": "Orders",
            "color": "preset4",
            "folder": "",
            "mode": "all",
            "rule_field": ["HasAttachments", "ReceivedDateTime", "Importance"],
            "rule_operator": ["EQUAL", "AFTER", "NOT_EQUALS"],
            "rule_value": ["True", "2024-03-01", "LOW"],
            "action": "save",
        },
    )
    assert added.status_code == 303, added.text[:2000]
    orders = stored(postroom)[1]
    assert orders[:3] == ("Orders", "preset4", None) and orders[6] == 1
    assert orders[5]["items"] == [
        {"field": "HasAttachments", "operator": "EQUAL", "value": True},
        {"field": "ReceivedDateTime", "operator": "AFTER", "value": "2024-03-01"},
        {"field": "Importance", "operator": "NOT_EQUALS", "value": "low"},
    ]
    oid = category_id(postroom, "Orders")
    moved = post_form(
        web, f"{base}/categories", f"{base}/categories/{oid}/move", {"direction": "up"}
    )
    assert moved.status_code == 303
    assert [row[0] for row in stored(postroom)] == ["Orders", "Invoices"]
    # A stored rule with a nested group is kept when only the flat part is edited.
    nested = {
        "mode": "any",
        "items": [
            {"field": "Subject", "operator": "CONTAINS", "value": "order"},
            {
                "mode": "all",
                "items": [
                    {"field": "From.Name", "operator": "EXISTS"},
                    {"field": "Body", "operator": "NOT_CONTAINS", "value": "unsubscribe"},
                ],
            },
        ],
    }
    with postroom.database.session() as db:
        db.execute(update(Category).where(Category.id == oid).values(rules=nested))
    form = web.get(f"{base}/categories", params={"edit": oid})
    assert "Group: all of: From (name) exists; Body (text) does not contain" in form.text
    group_json = re.search(r'name="rule_group" value="([^"]+)"', form.text)
    assert group_json is not None

    again = submit(
        web,
        base,
        {
            "category_id": oid,
            "name": "Orders",
            "color": "preset4",
            "mode": "any",
            "rule_field": "Subject",
            "rule_operator": "STARTS_WITH",
            "rule_value": "order",
            "rule_group": html.unescape(group_json.group(1)),
            "action": "save",
        },
    )
    assert again.status_code == 303, again.text[:2000]
    assert stored(postroom)[0][5] == {
        "mode": "any",
        "items": [
            {"field": "Subject", "operator": "STARTS_WITH", "value": "order"},
            nested["items"][1],
        ],
    }
    deleted = post_form(web, f"{base}/categories", f"{base}/categories/{oid}/delete")
    assert deleted.status_code == 303
    assert [row[0] for row in stored(postroom)] == ["Invoices"]
    assert (
        post_form(web, f"{base}/categories", f"{base}/categories/{oid}/delete").status_code == 404
    )


BAD_INPUTS: list[tuple[dict[str, Any], str]] = [
    ({"rule_field": "Subject2"}, "choose a field from the list (“Subject2” is not one)"),
    ({"rule_field": "x" * 5000}, "choose a field from the list"),
    ({"rule_operator": "LIKE"}, "choose how to compare from the list"),
    ({"rule_operator": "BEFORE"}, "Subject cannot be compared with “before”"),
    (
        {"rule_field": "ReceivedDateTime", "rule_operator": "AFTER", "rule_value": "2024-13-45"},
        "is not a date",
    ),
    ({"rule_value": "x" * 1001}, "longer than 1000 characters"),
    ({"rule_operator": "EXISTS", "rule_value": "something"}, "takes no value"),
    ({"rule_operator": "EQUAL", "rule_value": ""}, "needs a value"),
    (
        {"rule_field": "HasAttachments", "rule_operator": "EQUAL", "rule_value": "maybe"},
        "must be compared with true or false",
    ),
    (
        {"rule_field": "Importance", "rule_operator": "EQUAL", "rule_value": "urgent"},
        "Importance must be one of low, normal, high",
    ),
    ({"mode": "some"}, "Choose whether all conditions or any condition must match"),
    ({"rule_group": "{not json"}, "Group 1 could not be read"),
    (
        {"rule_group": '{"mode": "all", "items": [{"field": "Nope", "operator": "EQUAL"}]}'},
        "Group 1 could not be read",
    ),
    (
        {"rule_field": ["Subject"] * 51, "rule_operator": ["CONTAINS"] * 51},
        "A rule holds at most 50 conditions",
    ),
    ({"name": ""}, "Give the category a name"),
    ({"name": "n" * 300}, "The name may be at most 255 characters"),
    ({"name": "A, B"}, "may not contain commas"),
    ({"color": "purple-ish"}, "choose one of Outlook&#39;s colours"),
    ({"folder": "Deleted Items/Old"}, "Postroom never moves mail into Deleted Items"),
    ({"folder": "Finance//Invoices"}, "the folder path is not valid"),
    ({"forward_to": "not an address"}, "Not an email address: not"),
    ({"description": "d" * 2001}, "The description may be at most 2000 characters"),
    (
        {"forward_to": "ap@contoso.test", "forward_comment": "c" * 2001},
        "The forward comment may be at most 2000 characters",
    ),
    (
        {"forward_to": "ap@contoso.test", "forward_comment": "Book\x07this"},
        "may not contain control characters",
    ),
    ({"forward_comment": "Please book"}, "A forward comment needs a forward address"),
]


def test_every_kind_of_bad_input_is_explained_and_nothing_saved(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    _, base = finished(web, postroom, sim)
    cid = category_id(postroom, "Invoices")
    submit(
        web,
        base,
        {
            **invoice_form(cid),
            "rule_field": "Subject",
            "rule_operator": "CONTAINS",
            "rule_value": "invoice",
        },
    )
    before = stored(postroom)
    for change, problem in BAD_INPUTS:
        data = {
            **invoice_form(cid),
            "rule_field": "Subject",
            "rule_operator": "CONTAINS",
            "rule_value": "invoice",
            **change,
        }
        response = submit(web, base, data)
        assert response.status_code == 400, (change, response.status_code)
        assert problem in response.text, (change, re.findall(r"<li>(.*?)</li>", response.text))
        assert "Nothing was saved" in response.text
        assert stored(postroom) == before, change
    with postroom.database.session() as db:  # (stored() predates the comment)
        assert db.scalars(select(Category.forward_comment)).all() == [""]
    # A new category may not take an existing name (case-insensitive).
    duplicate = submit(web, base, {**invoice_form(""), "name": "INVOICES"})
    assert duplicate.status_code == 400
    assert "There is already a category named “INVOICES”" in duplicate.text
    # Testing a garbage rule explains it too and reads nothing from the mailbox.
    tested = submit(
        web,
        base,
        {**invoice_form(cid), "rule_operator": ["BEFORE", "ENDS_WITH"], "action": "test:whatever"},
    )
    assert tested.status_code == 400 and "cannot be compared" in tested.text
    assert submit(web, base, invoice_form("no-such-id")).status_code == 404
    assert stored(postroom) == before

    # Without the CSRF token: refused, nothing changed.
    no_csrf = web.post(f"{base}/categories", data={**invoice_form(cid), "name": "Renamed"})
    assert no_csrf.status_code == 400 and "This form has expired" in no_csrf.text
    for action in (f"{base}/categories/{cid}/delete", f"{base}/categories/colours"):
        assert web.post(action, data={}).status_code == 400
    assert stored(postroom) == before

    # An unfinished integration's categories are edited in the wizard.
    with postroom.database.session() as db:
        db.execute(update(Integration).values(finished_at=None))
    assert web.get(f"{base}/categories").headers["location"] == f"{base}/setup"
    assert submit_after_reset(web, base, cid).headers["location"] == f"{base}/setup"
    with postroom.database.session() as db:
        db.execute(update(Integration).values(finished_at=func.now()))

    # Another workspace: 404 for every page and action.
    with httpx.Client(base_url=postroom.url, trust_env=False) as other:
        sign_up(other, email="eve@other.test", workspace="Other")
        token = csrf(other.get("/integrations").text)
        assert other.get(f"{base}/categories").status_code == 404
        assert other.get(f"{base}/activity").status_code == 404
        for action, data in (
            (f"{base}/categories", invoice_form(cid)),
            (f"{base}/categories/{cid}/delete", {}),
            (f"{base}/categories/{cid}/move", {"direction": "up"}),
            (f"{base}/categories/colours", {}),
        ):
            assert other.post(action, data={"csrf_token": token, **data}).status_code == 404
    # A member of the workspace sees the categories but cannot change them.
    with httpx.Client(base_url=postroom.url, trust_env=False) as member:
        sign_up(member, email="member@acme.test", name="Max Member", workspace="Max's own")
        add_member(web, member, "member@acme.test")
        post_form(
            member,
            "/signin",
            "/signin",
            {"email": "member@acme.test", "password": "correct horse battery"},
        )
        page = member.get(f"{base}/categories", params={"edit": cid})
        assert page.status_code == 200 and "Invoices" in page.text
        assert "Only owners and admins can change categories." in page.text
        assert 'name="rule_field"' not in page.text and "/delete" not in page.text
        assert "Create colours in Outlook now" not in page.text
        assert member.get(f"{base}/activity").status_code == 200
        token = csrf(page.text)
        for action, data in (
            (f"{base}/categories", invoice_form(cid, name="Mine")),
            (f"{base}/categories/{cid}/delete", {}),
            (f"{base}/categories/{cid}/move", {"direction": "down"}),
            (f"{base}/categories/colours", {}),
        ):
            assert member.post(action, data={"csrf_token": token, **data}).status_code == 403
    assert stored(postroom) == before


def submit_after_reset(web: httpx.Client, base: str, cid: str) -> httpx.Response:
    token = csrf(web.get("/integrations").text)
    return web.post(f"{base}/categories", data={"csrf_token": token, **invoice_form(cid)})


def test_preview_decides_a_recent_email_with_unsaved_rules_and_changes_nothing(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org, base = finished(web, postroom, sim)
    cid = category_id(postroom, "Invoices")
    invoice = org.deliver(org.alice, subject="Invoice 77 for March", sender="billing@vendor.test")
    lunch = org.deliver(org.alice, subject="Lunch <b>Friday</b> & more", sender="bob@x.test")
    before = stored(postroom)
    assert before[0][5] is None  # the wizard made no rules
    form = web.get(f"{base}/categories", params={"edit": cid})
    assert f'value="test:{invoice.immutable_id}"' in form.text
    assert "Lunch &lt;b&gt;Friday&lt;/b&gt; &amp; more" in form.text  # escaped, live
    assert "<b>Friday" not in form.text
    log_start = len(sim.request_log)

    unsaved = invoice_form(
        cid, rule_field="Subject", rule_operator="CONTAINS", rule_value="invoice", mode="all"
    )
    matched = submit(web, base, {**unsaved, "action": f"test:{invoice.immutable_id}"})
    assert matched.status_code == 200, matched.text[:2000]
    assert "Result for “Invoice 77 for March”" in matched.text
    assert "<strong>Category “Invoices”</strong>, moved to" in matched.text
    assert "Subject contains “invoice” — matches" in matched.text
    assert 'value="invoice"' in matched.text  # the unsaved form is kept
    other = submit(web, base, {**unsaved, "action": f"test:{lunch.immutable_id}"})
    assert other.status_code == 200
    assert "No category would apply" in other.text
    assert "Subject contains “invoice” — does not match" in other.text
    assert "Result for “Lunch &lt;b&gt;Friday&lt;/b&gt; &amp; more”" in other.text
    gone = submit(web, base, {**unsaved, "action": "test:AAMkAGI2TG93AAA="})
    assert gone.status_code == 400 and "no longer in the mailbox" in gone.text

    # Only reads reached Graph; the mailbox, the database and the ledger are unchanged.
    graph_calls = [r for r in list(sim.request_log)[log_start:] if r.mailbox_id == org.alice.id]
    assert graph_calls and {r.method for r in graph_calls} == {"GET"}
    assert org.alice.mailbox.messages[invoice.immutable_id].categories == []
    inbox = org.alice.mailbox.folder("inbox")
    assert inbox is not None and invoice.immutable_id in inbox.messages
    assert stored(postroom) == before
    with postroom.database.session() as db:
        assert db.scalar(select(func.count()).select_from(LedgerEntry)) == 0
    with postroom.database.engine.connect() as conn:
        dump = " ".join(
            str(row)
            for table in ("categories", "integrations", "mailboxes", "ledger")
            for row in conn.execute(text(f"SELECT * FROM {table}"))
        )
    assert "Invoice 77" not in dump and "Lunch" not in dump


def test_colours_missing_in_outlook_are_listed_with_the_how_to(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org, base = finished(web, postroom, sim)  # MailboxSettings.Read only
    page = web.get(f"{base}/categories")
    assert "These categories have no colour in Outlook yet" in page.text
    assert "Categorize → All Categories" in page.text
    assert "Create colours in Outlook now" not in page.text
    refused = post_form(web, f"{base}/categories", f"{base}/categories/colours")
    assert refused.status_code == 403
    assert org.alice.mailbox.categories == {}
    org.alice.mailbox.categories["c1"] = OutlookCategory("c1", "invoices", "preset3")
    page = web.get(f"{base}/categories")
    assert "Every category already has a colour in Outlook." in page.text


def test_create_colours_in_outlook_with_the_permission(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org, base = finished(web, postroom, sim, manage_colours="on")
    page = web.get(f"{base}/categories")
    assert "do not have their colour in Outlook yet" in page.text
    created = post_form(web, f"{base}/categories", f"{base}/categories/colours")
    assert created.status_code == 303, created.text[:1000]
    assert created.headers["location"] == f"{base}/categories?coloured=1"
    assert (
        "Created 1 category with colours in Outlook." in web.get(created.headers["location"]).text
    )
    assert [(c.display_name, c.color) for c in org.alice.mailbox.categories.values()] == [
        ("Invoices", "preset7")
    ]
    again = post_form(web, f"{base}/categories", f"{base}/categories/colours")
    assert again.headers["location"] == f"{base}/categories?coloured=0"
    assert len(org.alice.mailbox.categories) == 1
    assert "Every category exists in Outlook with a colour." in web.get(f"{base}/categories").text


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
def test_rule_builder_and_preview_work_without_javascript(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    org, base = finished(web, postroom, sim)
    invoice = org.deliver(org.alice, subject="Invoice 12 from Vendor", sender="billing@vendor.test")
    org.deliver(org.alice, subject="Team lunch")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        context = browser.new_context(java_script_enabled=False)
        context.add_cookies(
            [{"name": c.name, "value": c.value or "", "url": postroom.url} for c in web.cookies.jar]
        )
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.goto(f"{postroom.url}{base}/categories")
        page.get_by_role("link", name="Edit Invoices").click()
        page.get_by_label("Match").select_option("any")
        page.get_by_label("Field of condition 1").select_option("Subject")
        page.get_by_label("Comparison of condition 1").select_option("CONTAINS")
        page.get_by_label("Value of condition 1").fill("invoice")
        page.get_by_role("button", name="Add condition").click()
        page.get_by_label("Field of condition 2").select_option("From.Email")
        page.get_by_label("Comparison of condition 2").select_option("ENDS_WITH")
        page.get_by_label("Value of condition 2").fill("@vendor.test")
        shot(page, "20-category-editor")
        page.get_by_role("button", name="Test with “Invoice 12 from Vendor”").click()
        result = page.get_by_role("status").filter(has_text="Result for")
        assert "Category “Invoices”" in result.inner_text()
        assert page.get_by_label("Value of condition 2").input_value() == "@vendor.test"
        shot(page, "21-category-test")
        page.get_by_role("button", name="Save category").click()
        assert "Saved “Invoices”." in page.inner_text("main")
        assert "any of: Subject contains “invoice”; From (address) ends with" in page.inner_text(
            "main"
        )
        shot(page, "22-categories")
        from tests.postroom.test_activity import INVOICE_PLAN, add_entry

        add_entry(postroom, invoice.immutable_id, plan=INVOICE_PLAN, actions=["label", "move"])
        page.goto(f"{postroom.url}{base}/activity")
        row = page.get_by_role("row").filter(has_text="Invoice 12 from Vendor")
        assert "labelled, moved" in row.inner_text()
        shot(page, "23-activity")
        browser.close()
    assert stored(postroom)[0][5] == {
        "mode": "any",
        "items": [
            {"field": "Subject", "operator": "CONTAINS", "value": "invoice"},
            {"field": "From.Email", "operator": "ENDS_WITH", "value": "@vendor.test"},
        ],
    }


def shot(page: Any, name: str) -> None:
    if os.environ.get("POSTROOM_SCREENSHOTS"):
        target = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
        target.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(target / f"{name}.png"), full_page=True)


def test_a_forward_comment_is_saved_shown_and_sent_above_the_forwarded_email(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org, base = finished(web, postroom, sim)
    cid = category_id(postroom, "Invoices")
    comment = "Please book this invoice.\nThanks, Alice"
    response = submit(
        web,
        base,
        invoice_form(
            cid,
            forward_to=org.bob.user_principal_name,
            forward_comment=f"  {comment.replace(chr(10), chr(13) + chr(10))}  ",
        ),
    )
    assert response.status_code == 303, response.text[:2000]
    with postroom.database.session() as db:
        category = db.get(Category, cid)
        assert category is not None and category.forward_comment == comment
    page = web.get(f"{base}/categories", params={"edit": cid})
    assert "Please book this invoice." in page.text

    postroom.drain()
    delivered = org.deliver(org.alice, subject="Invoice 5150 from a supplier")
    wait_for_jobs(postroom)
    postroom.drain()
    assert org.alice.mailbox.messages[delivered.immutable_id].categories == ["Invoices"]
    forwards = [m for m in org.bob.mailbox.messages.values() if "Invoice 5150" in m.subject]
    assert len(forwards) == 1
    assert forwards[0].body_content.startswith("Please book this invoice.")


def test_colours_created_before_the_token_failed_are_recorded_as_postroom_s(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Created in Outlook, they are Postroom's: a disconnect must offer to remove them even
    when the token failed before the next one (they were not recorded)."""
    from postroom.graph import GraphClient
    from postroom.integrations import statuses
    from postroom.integrations.graph_access import TokenFailure
    from postroom.processing.models import CreatedMasterCategory

    org, base = finished(web, postroom, sim, manage_colours="on")
    with postroom.database.session() as db:
        integration_id = db.scalars(select(Integration.id)).one()
        db.add(Category(integration_id=integration_id, name="Orders", color="preset2", position=2))
        db.commit()
    real = GraphClient.create_master_category
    calls: list[str] = []

    async def fails_second(self: GraphClient, mailbox: str, name: str, color: str) -> Any:
        calls.append(name)
        if len(calls) > 1:
            error = {"error": "invalid_grant", "error_description": "AADSTS50173: revoked"}
            raise TokenFailure(statuses.from_identity_error(error), error)
        return await real(self, mailbox, name, color)

    monkeypatch.setattr(GraphClient, "create_master_category", fails_second)
    answer = post_form(web, f"{base}/categories", f"{base}/categories/colours")
    assert answer.status_code == 303
    assert [c.display_name for c in org.alice.mailbox.categories.values()] == [calls[0]]
    with postroom.database.session() as db:
        recorded = [(c.name, c.graph_id) for c in db.scalars(select(CreatedMasterCategory))]
        status = db.scalars(select(Integration.status)).one()
    assert recorded == [(calls[0], next(iter(org.alice.mailbox.categories)))]
    assert status != "connected"  # the token failure is the integration's status
