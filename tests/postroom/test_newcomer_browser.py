"""What a newcomer sees, in Chromium (issue 19 items 11, 15, 17, 21, 22): every main page fits a
phone (390 px wide: nothing scrolls sideways but a table inside its card), the permissions list
on the personal connect page follows the toggles, the colour choice shows its swatch, pages
with changing state refresh themselves, and the small layout glitches are gone.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from sqlalchemy import select, update

from m365sim.identity.protocol import BROWSER_COOKIE, SSO_COOKIE
from m365sim.state import EmulatorState
from postroom.integrations.models import Integration
from postroom.processing.models import LedgerEntry
from tests.postroom.conftest import Postroom
from tests.postroom.test_activity import INVOICE_PLAN, add_entry
from tests.postroom.test_browser import browser, page, shot  # noqa: F401  (fixtures)
from tests.postroom.test_connect import connect_personal
from tests.postroom.test_editor import category_id
from tests.postroom.webtools import post_form, sign_up

PHONE = {"width": 390, "height": 844}


def _signed_in(tab: Any, web: httpx.Client, postroom: Postroom) -> None:
    """The browser gets Postroom's session of ``web``; not the emulator's sign-in (cookies do
    not tell ports apart), so Microsoft's pages ask who signs in."""
    tab.context.add_cookies(
        [
            {"name": c.name, "value": c.value or "", "url": postroom.url}
            for c in web.cookies.jar
            if c.name not in (BROWSER_COOKIE, SSO_COOKIE)
        ]
    )


def _width(tab: Any) -> int:
    return int(tab.evaluate("document.documentElement.scrollWidth"))


def _fits(tab: Any, path: str, postroom: Postroom) -> None:
    tab.goto(f"{postroom.url}{path}")
    assert _width(tab) <= PHONE["width"], (path, _width(tab))
    # the header's name and Sign out are on the screen, not beside it
    for name in ("Sign out",):
        if not tab.get_by_role("button", name=name).count():
            continue  # a page shown without the signed-in header (help, errors)
        box = tab.get_by_role("button", name=name).bounding_box()
        assert box is not None and box["x"] + box["width"] <= PHONE["width"], (path, name, box)


def test_every_main_page_fits_a_phone(
    page: Any,  # noqa: F811
    web: httpx.Client,
    postroom: Postroom,
    sim: EmulatorState,
) -> None:
    org = postroom.org(sim)
    sign_up(web, name="Philippa Phone-Width Tester", workspace="Acme Logistics International")
    base = connect_personal(web, postroom, org).removesuffix("/setup")
    page.set_viewport_size(PHONE)
    _signed_in(page, web, postroom)
    long_folder = "Finance/Invoices/Suppliers-and-subcontractors-2024"
    steps = (
        (1, {}),
        (2, {"own": "on", "folders": "inbox", "shared": org.shared.user_principal_name}),
        (
            3,
            {
                "name": "Invoices",
                "color": "preset7",
                "folder": long_folder,
                "forward_to": "accounts-payable-department@acme-logistics.test",
            },
        ),
        (4, {"mode": "off"}),
    )
    for step, data in steps:
        _fits(page, f"{base}/setup/{step}", postroom)
        if step == 3:
            shot(page, "40-phone-wizard-3")
        answer = post_form(web, f"{base}/setup/{step}", f"{base}/setup/{step}", data)
        assert answer.status_code == 303, answer.text[:1000]
    _fits(page, f"{base}/setup/5", postroom)
    page.get_by_role("button", name="Finish").click()
    page.wait_for_selector('[data-status="connected"]')

    message = org.deliver(
        org.alice,
        subject="Invoice 2024-000123 for the quarterly subcontracting agreement renewal",
        sender="billing-department-notifications@very-long-vendor-domain.example",
    )
    add_entry(postroom, message.immutable_id, plan=INVOICE_PLAN, actions=["label", "move"])
    cid = category_id(postroom, "Invoices")
    for path in (
        "/integrations",
        base,
        f"{base}/categories",
        f"{base}/categories?edit={cid}",
        f"{base}/activity",
        f"{base}/model",
        f"{base}/mailboxes-and-folders",
        f"{base}/existing-mail",
        "/workspace/members",
        "/account",
        "/integrations/new/outlook",
        "/integrations/new/outlook/personal",
        "/integrations/new/outlook/organization",
        "/help",
        "/help/register-app",
        "/help/restrict-mailboxes",
        "/help/status/needs_reconnect",
        "/integrations/00000000-0000-0000-0000-000000000000",  # the error page
    ):
        _fits(page, path, postroom)
        if path == base:
            shot(page, "41-phone-integration")
    # and the pages of someone not signed in
    page.context.clear_cookies()
    for path in ("/signin", "/signup"):
        page.goto(f"{postroom.url}{path}")
        assert _width(page) <= PHONE["width"], (path, _width(page))


def test_the_activity_table_stays_inside_its_card_on_a_laptop(
    page: Any,  # noqa: F811
    web: httpx.Client,
    postroom: Postroom,
    sim: EmulatorState,
) -> None:
    from tests.postroom.test_editor import finished

    org, base = finished(web, postroom, sim)
    for n in range(3):
        message = org.deliver(
            org.alice,
            subject=f"Statement {n}: STATEMENT-0042-7781-2231-ACCOUNTS-RECEIVABLE-Q{n}-FINAL",
            sender="statements-and-notifications@long-bank-name.example",
        )
        plan = {**INVOICE_PLAN, "folder": "Finance/Invoices/Statements-and-reconciliations"}
        add_entry(
            postroom,
            message.immutable_id,
            plan=plan,
            actions=["master_category", "label", "folder", "move", "forward_draft", "forward_sent"],
        )
    page.set_viewport_size({"width": 1280, "height": 900})
    _signed_in(page, web, postroom)
    page.goto(f"{postroom.url}{base}/activity")
    table = page.get_by_role("table", name="Activity").bounding_box()
    inside = page.locator("main").evaluate(
        "e => e.getBoundingClientRect().right - parseFloat(getComputedStyle(e).paddingRight)"
    )
    assert table is not None
    assert table["x"] + table["width"] <= inside + 0.5, (table, inside)
    assert _width(page) <= 1280


def test_small_glitches_are_gone(
    page: Any,  # noqa: F811
    web: httpx.Client,
    postroom: Postroom,
    sim: EmulatorState,
) -> None:
    from tests.postroom.test_editor import finished

    org, base = finished(web, postroom, sim)
    post_form(
        web,
        f"{base}/categories?new=1",
        f"{base}/categories",
        {"name": "Orders", "color": "preset4", "mode": "all", "action": "save"},
    )
    _signed_in(page, web, postroom)

    # The Connect modal: no list bullet before the provider card.
    page.goto(f"{postroom.url}/integrations")
    page.get_by_role("link", name="Connect Integration").click()
    card = page.get_by_role("dialog").locator("li.choice")
    assert card.evaluate("e => getComputedStyle(e).listStyleType") == "none"

    # The comparison table does not touch the choice cards above it.
    page.goto(f"{postroom.url}/integrations/new/outlook")
    cards = page.locator(".choices").bounding_box()
    table = page.get_by_role("table", name="Comparison of the account types").bounding_box()
    assert cards is not None and table is not None
    assert table["y"] - (cards["y"] + cards["height"]) >= 12

    # Up / Down / Delete look like Edit (link colour, no button chrome).
    page.goto(f"{postroom.url}{base}/categories")
    edit = page.get_by_role("link", name="Edit Invoices")
    delete = page.get_by_role("button", name="Delete Invoices")
    down = page.get_by_role("button", name="Move Invoices down")
    colour = edit.evaluate("e => getComputedStyle(e).color")
    assert delete.evaluate("e => getComputedStyle(e).color") == colour
    assert down.evaluate("e => getComputedStyle(e).color") == colour
    assert delete.evaluate("e => getComputedStyle(e).fontSize") == edit.evaluate(
        "e => getComputedStyle(e).fontSize"
    )

    # "Retry admin consent" stands clear of the alert above it.
    with postroom.database.session() as db:
        db.execute(
            update(Integration).values(
                status="admin_consent_missing", status_reason="consent_missing"
            )
        )
    page.goto(f"{postroom.url}{base}")
    alert = page.locator("section.alert").first.bounding_box()
    retry = page.get_by_role("button", name="Retry admin consent").bounding_box()
    assert alert is not None and retry is not None
    assert retry["y"] - (alert["y"] + alert["height"]) >= 12

    # "Try again" and "Troubleshooting" apart, after declining Microsoft's consent page.
    page.goto(f"{postroom.url}/integrations/new/outlook/personal")
    page.get_by_role("button", name="Connect Account").click()
    page.locator("#login").fill(org.bob.user_principal_name)
    page.locator("#passwd").fill("bob-pass")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("button", name="Cancel").click()
    again = page.get_by_role("link", name="Try again").bounding_box()
    help_link = page.get_by_role("link", name="Troubleshooting").bounding_box()
    assert again is not None and help_link is not None
    assert help_link["x"] - (again["x"] + again["width"]) >= 8


def _ledger_count(postroom: Postroom) -> int:
    with postroom.database.session() as db:
        return len(list(db.scalars(select(LedgerEntry.id))))


def _wait(condition: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _codes(tab: Any) -> list[str]:
    listed = tab.locator("#permissions ul:visible code")
    return [listed.nth(i).inner_text() for i in range(listed.count())]


def test_the_permissions_list_follows_the_toggles_in_a_browser(
    page: Any,  # noqa: F811
    web: httpx.Client,
    postroom: Postroom,
) -> None:
    sign_up(web)
    _signed_in(page, web, postroom)
    page.goto(f"{postroom.url}/integrations/new/outlook/personal")
    page.get_by_text("Permissions requested").click()
    assert "Mail.ReadWrite.Shared" not in _codes(page)
    assert "MailboxSettings.Read" in _codes(page)
    page.get_by_label("Allow access to shared mailboxes").check()
    assert {"Mail.ReadWrite.Shared", "Mail.Send.Shared"} <= set(_codes(page))
    colours = page.get_by_label("Manage category colours in Outlook")
    colours.check()
    assert "MailboxSettings.ReadWrite" in _codes(page)
    assert "MailboxSettings.Read" not in _codes(page)
    shot(page, "42-personal-permissions")
    # Minimal and colours contradict each other: ticking one turns the other off.
    minimal = page.get_by_label("Ask for minimal permissions")
    minimal.check()
    assert not colours.is_checked() and colours.is_disabled()
    assert set(_codes(page)) == {
        "User.Read",
        "Mail.ReadWrite",
        "Mail.ReadWrite.Shared",
        "offline_access",
    }
    minimal.uncheck()
    assert colours.is_enabled() and not colours.is_checked()
    colours.check()
    assert "MailboxSettings.ReadWrite" in _codes(page)


def test_the_colour_swatch_follows_the_choice(
    page: Any,  # noqa: F811
    web: httpx.Client,
    postroom: Postroom,
    sim: EmulatorState,
) -> None:
    from tests.postroom.test_editor import finished

    _, base = finished(web, postroom, sim)
    _signed_in(page, web, postroom)
    page.goto(f"{postroom.url}{base}/categories?edit={category_id(postroom, 'Invoices')}")
    swatch = page.locator("#editor .with-swatch .swatch")
    assert swatch.get_attribute("data-colour") == "#00bcf2"
    assert swatch.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(0, 188, 242)"
    page.get_by_label("Colour", exact=True).select_option("preset24")
    assert swatch.get_attribute("data-colour") == "#8e0b3b"
    assert swatch.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(142, 11, 59)"


def test_the_integration_page_refreshes_itself(
    page: Any,  # noqa: F811
    web: httpx.Client,
    postroom: Postroom,
    sim: EmulatorState,
) -> None:
    from tests.postroom.test_editor import finished

    org, base = finished(web, postroom, sim)
    _signed_in(page, web, postroom)
    page.goto(f"{postroom.url}{base}")
    page.get_by_role("link", name="Learned model").wait_for()
    page.evaluate("window.scrollTo(0, 200); window.kept = 'still this page'")
    before = page.locator("#live-mailboxes [data-processed]").first.get_attribute("data-processed")
    assert before == "0"
    message = org.deliver(org.alice, subject="Invoice 5")
    add_entry(postroom, message.immutable_id, plan=INVOICE_PLAN, actions=["label", "move"])
    with postroom.database.session() as db:
        db.execute(update(Integration).values(status="needs_reconnect"))
    page.wait_for_selector('#live-mailboxes [data-processed="1"]', timeout=25_000)
    page.wait_for_selector('#live-status [data-status="needs_reconnect"]', timeout=25_000)
    assert page.evaluate("window.kept") == "still this page"  # no reload
    assert _ledger_count(postroom) == 1
