"""An invitation accepted in a real browser (Playwright, Debian's Chromium), then the header's
workspace switcher: the invitee signs in from the mailed link, accepts, lands in the inviting
workspace and switches back to their own."""

from __future__ import annotations

from typing import Any

import httpx

from tests.postroom.conftest import Postroom
from tests.postroom.test_browser import browser, page  # noqa: F401  (the fixtures)
from tests.postroom.webtools import finish_sign_up_in_browser, invitation_link, invite, sign_up


def test_an_invitation_accepted_in_a_browser_and_the_switcher(
    page: Any,  # noqa: F811
    postroom: Postroom,
) -> None:
    # Max has his own workspace.
    page.goto(f"{postroom.url}/signup")
    page.get_by_label("Your name").fill("Max Member")
    page.get_by_label("Work email").fill("max@acme.test")
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_label("Organization").fill("Max Consulting")
    page.get_by_role("button", name="Create account").click()
    finish_sign_up_in_browser(page, "max@acme.test")
    assert page.locator('select[name="workspace_id"]').count() == 0
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/signin")

    # Olga invites him to Acme (over HTTP); Max opens the mailed link, signed out.
    with httpx.Client(base_url=postroom.url, trust_env=False, timeout=30) as olga:
        sign_up(olga)
        assert invite(olga, "max@acme.test", "admin").status_code == 200
    page.goto(invitation_link("max@acme.test"))
    assert page.get_by_role("heading", name="Join Acme").is_visible()
    page.get_by_role("link", name="Sign in as max@acme.test to accept").click()
    page.wait_for_url("**/signin?next=*")
    page.get_by_label("Email").fill("max@acme.test")
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/invitations/accept?token=*")
    page.get_by_role("button", name="Accept and join Acme").click()
    page.wait_for_url("**/integrations")
    who = page.locator(".who > span").first
    assert " ".join(who.text_content().split()) == "Max Member · Acme admin"

    # The switcher lists both workspaces and switches back.
    switcher = page.get_by_label("Workspace")
    assert sorted(switcher.locator("option").all_inner_texts()) == ["Acme", "Max Consulting"]
    switcher.select_option(label="Max Consulting")
    page.get_by_role("button", name="Switch").click()
    page.wait_for_url("**/integrations")
    who = page.locator(".who > span").first
    assert " ".join(who.text_content().split()) == "Max Member · Max Consulting owner"
