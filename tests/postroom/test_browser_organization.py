"""The organization-wide connect flow in a real browser (issue 12): the administrator signs in
(proving the tenant and the role), then grants admin consent for that tenant, then the wizard."""

from __future__ import annotations

from typing import Any

from m365sim.state import EmulatorState
from tests.postroom.conftest import Postroom
from tests.postroom.test_browser import browser, page, shot  # noqa: F401  (fixtures)
from tests.postroom.webtools import finish_sign_up_in_browser


def test_organization_connect_in_a_real_browser(
    page: Any,  # noqa: F811
    postroom: Postroom,
    sim: EmulatorState,
) -> None:
    org = postroom.org(sim)
    page.goto(f"{postroom.url}/signup")
    page.get_by_label("Your name").fill("Olga Owner")
    page.get_by_label("Work email").fill("olga@acme.test")
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_label("Organization").fill("Acme Logistics")
    page.get_by_role("button", name="Create account").click()
    finish_sign_up_in_browser(page, "olga@acme.test")

    page.goto(f"{postroom.url}/integrations/new/outlook/organization")
    assert "Global Administrator" in page.content()  # the page explains who can connect
    shot(page, "30-organization-connect")
    page.get_by_role("button", name="Connect Account").click()

    # Step one: the administrator signs in at Microsoft (proves tenant and role).
    page.wait_for_url(f"{postroom.settings.authority_host}/**")
    page.locator("#login").fill(org.admin.user_principal_name)
    page.locator("#passwd").fill("admin-pass")
    page.get_by_role("button", name="Sign in").click()
    # Step two: Microsoft's admin-consent page for exactly that tenant.
    page.wait_for_url(f"**/{org.tenant.id}/**")
    shot(page, "31-microsoft-admin-consent")
    page.get_by_role("button", name="Accept").click()

    page.wait_for_url("**/setup/1")
    assert org.tenant.id in page.content()
    shot(page, "32-organization-wizard")
