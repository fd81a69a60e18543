"""The connect flow in a real browser: Playwright driving Debian's Chromium.

Sign up, Connect Integration (the modal), Outlook → Personal with shared access, Microsoft's
sign-in and consent pages (m365sim), the whole setup wizard — including the warning before an
earlier step resets the later ones, declined and then accepted — and the Connected badge.
With ``POSTROOM_SCREENSHOTS=1`` the pages are saved to ``docs/screenshots/``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from m365sim.state import EmulatorState
from tests.postroom.conftest import Postroom
from tests.postroom.webtools import finish_sign_up_in_browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError("Chromium is missing: .ci/run must install Debian's chromium")
    pytest.skip(
        "Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True
    )

sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield instance
        instance.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    # m365sim's certificate comes from a local CA the browser does not know.
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()


def shot(page: Any, name: str) -> None:
    if os.environ.get("POSTROOM_SCREENSHOTS"):
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_personal_connect_in_a_real_browser(
    page: Any, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    page.goto(f"{postroom.url}/signup")
    page.get_by_label("Your name").fill("Olga Owner")
    page.get_by_label("Work email").fill("olga@acme.test")
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_label("Organization").fill("Acme Logistics")
    page.get_by_role("button", name="Create account").click()
    finish_sign_up_in_browser(page, "olga@acme.test")
    shot(page, "01-integrations-empty")

    page.get_by_role("link", name="Connect Integration").click()
    dialog = page.get_by_role("dialog")
    assert dialog.is_visible()
    shot(page, "02-connect-modal")
    dialog.get_by_role("link", name="Choose Outlook").click()
    page.wait_for_url("**/integrations/new/outlook")
    shot(page, "03-account-type")
    page.get_by_role("link", name="Personal Outlook account").click()
    page.get_by_label("Allow access to shared mailboxes").check()
    shot(page, "04-personal-options")
    page.get_by_role("button", name="Connect Account").click()

    # Microsoft's pages (m365sim): sign in, then consent.
    page.wait_for_url(f"{postroom.settings.authority_host}/**")
    page.locator("#login").fill(org.alice.user_principal_name)
    page.locator("#passwd").fill("alice-pass")
    shot(page, "05-microsoft-sign-in")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("heading", name="Permissions requested").is_visible()
    shot(page, "06-microsoft-consent")
    page.get_by_role("button", name="Accept").click()

    page.wait_for_url("**/setup/1")
    assert org.alice.user_principal_name in page.content()
    shot(page, "07-wizard-account")
    page.get_by_role("button", name="This is right — continue").click()
    page.wait_for_url("**/setup/2")
    page.get_by_label("Shared mailboxes (addresses, one per line)").fill(
        org.shared.user_principal_name
    )
    shot(page, "08-wizard-sync")
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url("**/setup/3")
    page.get_by_label("Category name").first.fill("Invoices")
    page.get_by_label("Colour").first.select_option("preset7")
    page.get_by_label("Folder").first.fill("Finance/Invoices")
    page.get_by_role("button", name="Add a category").click()
    assert page.get_by_label("Category name").count() == 4
    shot(page, "09-wizard-processing")
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url("**/setup/4")

    # Going back to step 2 warns first; declining changes nothing.
    page.get_by_role("link", name="2. What to sync").click()
    page.wait_for_url("**/setup/2")
    assert page.get_by_text("takes you back through step").is_visible()
    page.once("dialog", lambda d: d.dismiss())
    page.get_by_role("button", name="Continue").click()
    assert page.url.endswith("/setup/2")
    page.goto(page.url.replace("/setup/2", "/setup"))
    page.wait_for_url("**/setup/4")

    page.get_by_label("No backfill").check()
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url("**/setup/5")
    assert "Invoices" in page.content()
    shot(page, "10-wizard-review")
    page.get_by_role("button", name="Finish").click()
    page.wait_for_selector('[data-status="connected"]')
    shot(page, "11-integration-connected")
    page.get_by_role("link", name="Integrations").click()
    assert page.locator('[data-status="connected"]').count() == 1
    shot(page, "12-integrations-list")


def test_accepting_the_reset_warning_clears_later_steps(
    page: Any, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    page.goto(f"{postroom.url}/signup")
    page.get_by_label("Your name").fill("Rita Reset")
    page.get_by_label("Work email").fill("rita@acme.test")
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_label("Organization").fill("Acme")
    page.get_by_role("button", name="Create account").click()
    finish_sign_up_in_browser(page, "rita@acme.test")
    page.goto(f"{postroom.url}/integrations/new/outlook/personal")
    page.get_by_role("button", name="Connect Account").click()
    page.locator("#login").fill(org.bob.user_principal_name)
    page.locator("#passwd").fill("bob-pass")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("button", name="Accept").click()
    page.wait_for_url("**/setup/1")
    page.get_by_role("button", name="This is right — continue").click()
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url("**/setup/3")
    page.get_by_label("Category name").first.fill("Orders")
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url("**/setup/4")
    page.get_by_role("link", name="1. Confirm account").click()
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="This is right — continue").click()
    page.wait_for_url("**/setup/2")
    steps = page.get_by_role("list", name="Setup steps")
    assert steps.get_by_role("link", name="3. Processing").count() == 0
