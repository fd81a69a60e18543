"""Undo in a real browser (issue 18): the person finds the email in the activity view, clicks
Undo, and sees it undone — its category off, back in the Inbox. Playwright, Debian's Chromium.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from m365sim.state import EmulatorState
from tests.postroom.conftest import Postroom
from tests.postroom.test_browser import browser, page, shot  # noqa: F401  (fixtures)
from tests.postroom.test_newcomer_browser import PHONE, _signed_in, _width
from tests.postroom.test_requests_per_email import _drain_all
from tests.postroom.test_sync import folder_of
from tests.postroom.test_undo import _filed, _row


def test_undo_from_the_activity_view_in_a_browser(
    page: Any,  # noqa: F811
    web: httpx.Client,
    postroom: Postroom,
    sim: EmulatorState,
) -> None:
    with ThreadPoolExecutor(1) as worker:  # (playwright's loop runs in this thread)
        org, base, message_id = worker.submit(_filed, web, postroom, sim).result()
    _signed_in(page, web, postroom)
    page.goto(f"{postroom.url}{base}/activity")
    row = page.get_by_role("row").filter(has_text="Invoice 4711")
    undo = row.get_by_role("button", name="Undo what Postroom did to this email")
    assert undo.count() == 1
    undo.click()
    page.get_by_text("Undo requested").wait_for()
    with ThreadPoolExecutor(1) as worker:
        worker.submit(_drain_all, postroom).result()
    page.reload()
    row = page.get_by_role("row").filter(has_text="Invoice 4711")
    assert "undone" in row.inner_text()
    assert row.get_by_role("button", name="Undo what Postroom did to this email").count() == 0
    shot(page, "activity-undone")
    assert folder_of(org.alice, message_id) == "Inbox"
    assert org.alice.mailbox.messages[message_id].categories == ["Personal"]
    assert _row(postroom, message_id).undo_state == "done"
    # readable at phone width too
    page.set_viewport_size(PHONE)
    page.goto(f"{postroom.url}{base}/activity")
    assert _width(page) <= PHONE["width"]
