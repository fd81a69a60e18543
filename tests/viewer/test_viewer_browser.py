"""The viewer in a real browser (Debian's Chromium driven by Playwright): the page a person
sees, including that a hostile HTML body cannot run script.

Skipped, with the reason, when Playwright or Chromium is not installed
(``pip install playwright`` and ``apt-get install -y chromium``).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from m365sim.store import Category
from tests.helpers import Org

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = pytest.mark.skipif(
    shutil.which("chromium") is None, reason="Chromium is not installed (apt-get install chromium)"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        yield launched
        launched.close()


def test_reading_a_hostile_html_message_in_the_browser(
    browser: Any, http: httpx.Client, org: Org, base_url: str
) -> None:
    org.alice.mailbox.categories["c"] = Category(id="c", display_name="Invoices", color="preset0")
    raw = (
        b"From: Mallory <mallory@evil.test>\r\nSubject: <b>Invoice</b> 4711\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n\r\n"
        b"<p id='greeting'>Pay now</p>"
        b"<script>parent.document.title='pwned'; alert('x')</script>"
        b"<img src=x onerror=\"alert('y')\">\r\n"
    )
    delivered = http.post(
        f"/_emulator/mailboxes/{org.alice.id}/deliver?categories=Invoices",
        content=raw,
        headers={"Content-Type": "message/rfc822"},
    )
    assert delivered.status_code == 201
    org.deliver(org.alice, subject="Read already", is_read=True)

    context = browser.new_context(ignore_https_errors=True)
    page = context.new_page()
    dialogs: list[str] = []

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.goto(f"{base_url}/viewer/mailboxes/{org.alice.user_principal_name}")

    unread = page.locator("tr.unread td.subject a")
    assert unread.inner_text() == "<b>Invoice</b> 4711"  # shown as text, not markup
    weight = page.locator("tr.unread td.from").evaluate("e => getComputedStyle(e).fontWeight")
    assert weight == "700"
    chip = page.locator(".chip", has_text="Invoices")
    assert chip.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(209, 52, 56)"

    unread.click()
    page.wait_for_load_state()
    assert page.locator("h1#subject").inner_text() == "<b>Invoice</b> 4711"
    frame = page.frame_locator("iframe.html-body")
    assert frame.locator("#greeting").inner_text() == "Pay now"
    page.wait_for_timeout(300)
    assert dialogs == []
    assert page.title() != "pwned"
    context.close()


def test_recategorizing_and_moving_a_message_in_the_browser(
    browser: Any, org: Org, base_url: str
) -> None:
    """What a person does in Outlook to correct Postroom, without JavaScript: the forms post
    from the viewer's own origin (which the cross-site check lets through)."""
    mailbox = org.alice.mailbox
    mailbox.categories["s"] = Category(id="s", display_name="Sales", color="preset4")
    mailbox.categories["t"] = Category(id="t", display_name="Support", color="preset7")
    msg = org.deliver(org.alice, subject="Quote for 50 licenses", categories=["Support"])
    context = browser.new_context(ignore_https_errors=True, java_script_enabled=False)
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(f"{base_url}/viewer/mailboxes/{org.alice.id}/messages/{msg.immutable_id}")
    page.get_by_label("Support").uncheck()
    page.get_by_label("Sales").check()
    page.get_by_role("button", name="Set categories").click()
    assert page.get_by_role("status").inner_text() == "Categories changed."
    assert msg.categories == ["Sales"]
    page.get_by_label("Move to folder").select_option(label="Archive")
    page.get_by_role("button", name="Move").click()
    assert page.get_by_role("status").inner_text() == "Moved."
    archive = mailbox.folder("archive")
    assert archive is not None and msg.folder_id == archive.id
    context.close()
