"""What a person sees when a wizard step comes back with an error, in Chromium: every typed
category row with the error beside the row it concerns, the chosen backfill option still
chosen; and after go-live, "Mailboxes and folders" reached from the integration's page
(issue 19 items 4, 5)."""

from __future__ import annotations

from typing import Any

from m365sim.state import EmulatorState
from tests.postroom.conftest import Postroom
from tests.postroom.test_browser import browser, page, shot  # noqa: F401  (fixtures)
from tests.postroom.webtools import finish_sign_up_in_browser


def test_typed_input_stays_after_errors_in_a_real_browser(
    page: Any,  # noqa: F811
    postroom: Postroom,
    sim: EmulatorState,
) -> None:
    org = postroom.org(sim)
    page.goto(f"{postroom.url}/signup")
    page.get_by_label("Your name").fill("Kim Keeps")
    page.get_by_label("Work email").fill("kim@acme.test")
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_label("Organization").fill("Acme")
    page.get_by_role("button", name="Create account").click()
    finish_sign_up_in_browser(page, "kim@acme.test")
    page.goto(f"{postroom.url}/integrations/new/outlook/personal")
    page.get_by_role("button", name="Connect Account").click()
    page.locator("#login").fill(org.alice.user_principal_name)
    page.locator("#passwd").fill("alice-pass")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("button", name="Accept").click()
    page.wait_for_url("**/setup/1")
    page.get_by_role("button", name="This is right — continue").click()
    page.wait_for_url("**/setup/2")
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url("**/setup/3")

    # Step 3: three categories, one forward address mistyped.
    names = page.get_by_label("Category name")
    forwards = page.get_by_label("Forward to")
    folders = page.get_by_label("Folder")
    for i, (name, folder, forward) in enumerate(
        [
            ("Invoices", "Finance/Invoices", "ap@acme.test"),
            ("Orders", "Sales/Orders", "orders at acme"),
            ("Support", "", "help@acme.test"),
        ]
    ):
        names.nth(i).fill(name)
        folders.nth(i).fill(folder)
        forwards.nth(i).fill(forward)
    page.get_by_label("Colour").nth(1).select_option("preset4")
    page.get_by_role("button", name="Continue").click()
    page.get_by_text("Please fix:").wait_for()
    assert page.url.endswith("/setup/3")
    assert [names.nth(i).input_value() for i in range(3)] == ["Invoices", "Orders", "Support"]
    assert forwards.nth(1).input_value() == "orders at acme"
    assert folders.nth(0).input_value() == "Finance/Invoices"
    assert page.get_by_label("Colour").nth(1).input_value() == "preset4"
    row = page.locator("tr.category-row").nth(1)
    assert row.locator(".field-error").is_visible()
    assert "Not an email address" in row.locator(".field-error").inner_text()
    assert page.locator("tr.category-row .field-error").count() == 1
    shot(page, "25-wizard-error-kept")
    # A row added after the error starts blank, without the error.
    page.get_by_role("button", name="Add a category").click()
    assert page.locator("tr.category-row .field-error").count() == 1
    forwards.nth(1).fill("orders@acme.test")
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url("**/setup/4")

    # Step 4: existing mail since a date, but the date left out.
    assert page.locator('input[name="since"]').input_value() == ""
    page.locator('input[name="mode"][value="since"]').check()
    page.get_by_role("button", name="Continue").click()
    page.get_by_text("Please fix:").wait_for()
    assert page.locator('input[name="mode"][value="since"]').is_checked()
    assert not page.locator('input[name="mode"][value="off"]').is_checked()
    assert page.locator("#error-since").is_visible()
    page.get_by_label("No backfill").check()
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url("**/setup/5")
    page.get_by_role("button", name="Finish").click()
    page.wait_for_selector('[data-status="connected"]')

    # After go-live: mailboxes and folders from the integration's page; categories untouched.
    page.get_by_role("link", name="Mailboxes and folders").click()
    page.wait_for_url("**/mailboxes-and-folders")
    page.get_by_label("Archive").check()
    shot(page, "26-mailboxes-and-folders")
    page.get_by_role("button", name="Save mailboxes and folders").click()
    page.wait_for_selector('[data-status="connected"]')
    page.get_by_role("link", name="Categories and rules").click()
    for name in ("Invoices", "Orders", "Support"):
        assert page.get_by_text(name, exact=True).first.is_visible()
