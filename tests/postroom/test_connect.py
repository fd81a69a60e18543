"""Connecting Outlook end to end: Postroom ⇄ m365sim over real HTTP(S), real PostgreSQL.

Personal (authorization code + PKCE through the sign-in and consent pages), the setup wizard
with its reset rule, organization-wide admin consent (accepted, refused, out-of-scope
mailboxes), token failures becoming statuses, Reconnect keeping every setting, and the
security negatives (bad ``state``, another workspace's ids, no token in the database).
"""

from __future__ import annotations

import httpx
from sqlalchemy import func, select

from m365sim.identity import events
from m365sim.state import EmulatorState
from postroom.integrations.models import Category, Integration, Mailbox, OAuthFlow
from tests.helpers import Org
from tests.postroom.conftest import Postroom
from tests.postroom.msdriver import through_microsoft
from tests.postroom.webtools import csrf, post_form, sign_up


def _integration(postroom: Postroom) -> Integration:
    with postroom.database.session() as db:
        items = list(db.scalars(select(Integration)))
    assert len(items) == 1
    return items[0]


def connect_personal(
    web: httpx.Client, postroom: Postroom, org: Org, *, options: dict[str, str] | None = None
) -> str:
    """Sign in as Alice through Microsoft's pages; return the integration's page path."""
    start = post_form(
        web,
        "/integrations/new/outlook/personal",
        "/integrations/connect/personal",
        options or {"shared_access": "on"},
    )
    assert start.status_code == 303
    assert start.headers["location"].startswith(postroom.settings.authority_host)
    assert "code_challenge=" in start.headers["location"]
    back = through_microsoft(
        web,
        start,
        back_to=postroom.url,
        username=org.alice.user_principal_name,
        password="alice-pass",
    )
    done = web.get(back)
    assert done.status_code == 303, done.text[:400]
    return str(done.headers["location"])


def finish_wizard(web: httpx.Client, base: str, *, shared: str = "") -> None:
    for step, data in (
        (1, {}),
        (2, {"own": "on", "folders": "inbox", "shared": shared}),
        (
            3,
            {
                "name": "Invoices",
                "color": "preset7",
                "folder": "Finance/Invoices",
                "forward_to": "",
            },
        ),
        (4, {"mode": "off"}),
    ):
        response = post_form(web, f"{base}/setup/{step}", f"{base}/setup/{step}", data)
        assert response.status_code == 303, (step, response.text[:2000])
        assert response.headers["location"] == f"{base}/setup/{step + 1}"
    response = post_form(web, f"{base}/setup/5", f"{base}/setup/5")
    assert response.status_code == 303 and response.headers["location"] == base


def test_personal_connect_wizard_and_connected(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    sign_up(web)
    setup = connect_personal(web, postroom, org)
    assert setup.endswith("/setup")
    base = setup.removesuffix("/setup")
    step1 = web.get(f"{base}/setup/1")
    assert org.alice.user_principal_name in step1.text
    finish_wizard(web, base, shared=org.shared.user_principal_name)
    page = web.get(base)
    assert 'data-status="connected"' in page.text
    item = _integration(postroom)
    assert item.kind == "personal" and item.tenant_id == org.tenant.id
    assert item.account_oid == org.alice.id
    with postroom.database.session() as db:
        boxes = {(m.kind, m.address) for m in db.scalars(select(Mailbox))}
        cats = list(db.scalars(select(Category)))
    assert boxes == {
        ("own", org.alice.user_principal_name),
        ("shared", org.shared.user_principal_name),
    }
    assert [(c.name, c.color, c.folder) for c in cats] == [
        ("Invoices", "preset7", "Finance/Invoices")
    ]
    # Token cache at rest: encrypted, no token or secret readable in a dump.
    assert item.token_cache is not None
    raw = bytes(item.token_cache)
    assert b"refresh_token" not in raw and b"RefreshToken" not in raw and b"eyJ" not in raw
    with postroom.database.session() as db:
        assert db.scalar(select(func.count()).select_from(OAuthFlow)) == 0  # state used up


def test_wizard_reload_resumes_and_earlier_edit_resets_only_after_confirmation(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    sign_up(web)
    base = connect_personal(web, postroom, org).removesuffix("/setup")
    for step, data in (
        (1, {}),
        (2, {"own": "on", "folders": "inbox"}),
        (3, {"name": "Orders", "color": "preset4"}),
    ):
        assert (
            post_form(web, f"{base}/setup/{step}", f"{base}/setup/{step}", data).status_code == 303
        )
    resume = web.get(f"{base}/setup")
    assert resume.headers["location"] == f"{base}/setup/4"
    # Editing step 2 again: first a warning, nothing reset.
    warned = post_form(web, f"{base}/setup/2", f"{base}/setup/2", {"own": "on", "folders": "inbox"})
    assert warned.status_code == 409
    assert "takes you back through step 3 (Processing)" in warned.text
    item = _integration(postroom)
    assert item.wizard_step == 4 and "processing" in item.wizard_data
    # Confirmed: the wizard continues at step 3 (progress reset; what was entered is kept).
    confirmed = post_form(
        web,
        f"{base}/setup/2",
        f"{base}/setup/2",
        {"own": "on", "folders": "inbox", "confirm_reset": "yes"},
    )
    assert confirmed.headers["location"] == f"{base}/setup/3"
    item = _integration(postroom)
    assert item.wizard_step == 3 and "processing" in item.wizard_data
    # Skipping ahead is not possible.
    assert web.get(f"{base}/setup/5").headers["location"] == f"{base}/setup/3"


def test_bad_processing_input_is_explained_and_nothing_saved(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    sign_up(web)
    base = connect_personal(web, postroom, org).removesuffix("/setup")
    post_form(web, f"{base}/setup/1", f"{base}/setup/1")
    post_form(web, f"{base}/setup/2", f"{base}/setup/2", {"own": "on", "folders": "inbox"})
    bad = post_form(
        web,
        f"{base}/setup/3",
        f"{base}/setup/3",
        {
            "name": "Spam",
            "color": "purple-ish",
            "folder": "Deleted Items",
            "forward_to": "not an address",
        },
    )
    assert bad.status_code == 400
    assert "choose one of Outlook" in bad.text
    shared_refused = post_form(
        web,
        f"{base}/setup/2",
        f"{base}/setup/2",
        {
            "own": "on",
            "folders": "inbox",
            "confirm_reset": "yes",
            "shared": "orders@elsewhere.test",
        },
    )
    assert shared_refused.status_code == 400  # connected without shared access
    assert _integration(postroom).wizard_step == 3


def test_minimal_permissions_turn_forwarding_off(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    sign_up(web)
    base = connect_personal(web, postroom, org, options={"minimal": "on"}).removesuffix("/setup")
    item = _integration(postroom)
    assert not any(s.endswith("/Mail.Send") for s in item.granted_scopes)
    post_form(web, f"{base}/setup/1", f"{base}/setup/1")
    post_form(web, f"{base}/setup/2", f"{base}/setup/2", {"own": "on", "folders": "inbox"})
    refused = post_form(
        web,
        f"{base}/setup/3",
        f"{base}/setup/3",
        {"name": "Orders", "color": "preset1", "forward_to": "ops@acme.test"},
    )
    assert refused.status_code == 400 and "Mail.Send" in refused.text


def test_bad_state_and_replayed_callbacks_connect_nothing(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    sign_up(web)
    forged = web.get("/auth/callback", params={"state": "forged", "code": "abc"})
    assert forged.status_code == 400 and "not valid" in forged.text
    start = post_form(web, "/integrations/new/outlook/personal", "/integrations/connect/personal")
    back = through_microsoft(
        web,
        start,
        back_to=postroom.url,
        username=org.alice.user_principal_name,
        password="alice-pass",
    )
    # Someone else (another Postroom user) cannot use this callback.
    with httpx.Client(base_url=postroom.url, trust_env=False) as other:
        sign_up(other, email="mallory@evil.test", workspace="Evil")
        stolen = other.get(back)
        assert stolen.status_code == 400, stolen.headers.get("location")
    with postroom.database.session() as db:
        assert db.scalar(select(func.count()).select_from(Integration)) == 0
    # The rightful user completes it; a replay afterwards is refused.
    assert web.get(back).status_code == 303
    assert web.get(back).status_code == 400


def test_another_workspaces_integration_is_404(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    sign_up(web)
    base = connect_personal(web, postroom, org).removesuffix("/setup")
    with httpx.Client(base_url=postroom.url, trust_env=False) as other:
        sign_up(other, email="eve@other.test", workspace="Other")
        assert other.get(base).status_code == 404
        assert other.get(f"{base}/setup/1").status_code == 404
        page = other.get("/integrations")
        response = other.post(f"{base}/reconnect", data={"csrf_token": csrf(page.text)})
        assert response.status_code == 404


def test_admin_password_reset_needs_reconnect_and_reconnect_keeps_settings(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    sign_up(web)
    base = connect_personal(web, postroom, org).removesuffix("/setup")
    finish_wizard(web, base)
    events.admin_reset_password(sim, org.alice, new_password="alice-new-pass")
    checked = post_form(web, base, f"{base}/check")
    assert checked.status_code == 200 and 'data-ok="no"' in checked.text  # the report
    page = web.get(base)
    assert 'data-status="needs_reconnect"' in page.text
    assert "administrator" in page.text  # the reason in plain words
    item = _integration(postroom)
    assert item.status_reason == "sessions_revoked"
    # Reconnect: sign in again with the new password; everything else is kept.
    start = post_form(web, base, f"{base}/reconnect")
    assert "login_hint=" in start.headers["location"]
    back = through_microsoft(
        web,
        start,
        back_to=postroom.url,
        username=org.alice.user_principal_name,
        password="alice-new-pass",
    )
    assert web.get(back).headers["location"] == base
    assert 'data-status="connected"' in web.get(base).text
    with postroom.database.session() as db:
        assert db.scalar(select(func.count()).select_from(Category)) == 1
        assert db.scalar(select(func.count()).select_from(Mailbox)) == 1


def test_reconnect_with_a_different_account_is_refused(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    sign_up(web)
    base = connect_personal(web, postroom, org).removesuffix("/setup")
    start = post_form(web, base, f"{base}/reconnect")
    back = through_microsoft(
        web, start, back_to=postroom.url, username=org.bob.user_principal_name, password="bob-pass"
    )
    refused = web.get(back)
    assert refused.status_code == 400 and "different Microsoft account" in refused.text
    assert _integration(postroom).account_oid == org.alice.id


def connect_organization(
    web: httpx.Client,
    postroom: Postroom,
    org: Org,
    *,
    consent: str = "accept",
    start_path: str = "/integrations/new/outlook/organization",
    action: str = "/integrations/connect/organization",
) -> str:
    """The administrator proves the tenant by signing in, then grants admin consent for it;
    returns where Postroom sends the browser afterwards."""
    start = post_form(web, start_path, action)
    assert "/oauth2/v2.0/authorize?" in start.headers["location"]
    assert "code_challenge=" in start.headers["location"]
    signed_in = through_microsoft(
        web,
        start,
        back_to=postroom.url,
        username=org.admin.user_principal_name,
        password="admin-pass",
    )
    step = web.get(signed_in)
    assert step.status_code == 303, step.text[:500]
    assert f"/{org.tenant.id}/v2.0/adminconsent?" in step.headers["location"]
    back = through_microsoft(
        web,
        step,
        back_to=postroom.url,
        username=org.admin.user_principal_name,
        password="admin-pass",
        consent=consent,
    )
    done = web.get(back)
    assert done.status_code == 303, done.text[:500]
    return str(done.headers["location"])


def test_organization_wide_connect_and_policy_scoped_mailboxes(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    sign_up(web)
    setup = connect_organization(web, postroom, org)
    assert setup.endswith("/setup")
    base = setup.removesuffix("/setup")
    item = _integration(postroom)
    assert item.kind == "organization" and item.tenant_id == org.tenant.id
    assert item.token_cache is None and item.account_oid is None  # only the tenant id
    assert item.consent and item.consent["granted_via"] == "owner@acme.test"
    assert item.consent["granted_by"] == org.admin.user_principal_name
    assert org.admin.user_principal_name in web.get(base).text  # who consented, on the page
    # Restrict the app to a group holding Alice's and the shared mailbox only.
    group = sim.store.add_group(
        org.tenant,
        display_name="Postroom mailboxes",
        mail=f"postroom@{org.tenant.domain}",
        members={org.alice.id, org.shared.id},
    )
    from m365sim.store import AccessPolicy

    org.tenant.access_policies["p1"] = AccessPolicy(
        "p1", postroom.app_registration.client_id, group.id, "RestrictAccess"
    )
    assert post_form(web, f"{base}/setup/1", f"{base}/setup/1").status_code == 303
    step2 = web.get(f"{base}/setup/2")
    assert org.bob.user_principal_name in step2.text
    refused = post_form(
        web, f"{base}/setup/2", f"{base}/setup/2", {"mailboxes": org.bob.id, "folders": "inbox"}
    )
    assert refused.status_code == 400
    assert "access denied by your organization" in refused.text
    page = web.get(f"{base}/setup/2")
    ok = web.post(
        f"{base}/setup/2",
        data={
            "csrf_token": csrf(page.text),
            "mailboxes": [org.alice.id, org.shared.id],
            "folders": "inbox",
        },
    )
    assert ok.status_code == 303, ok.text[:1000]


def test_refused_admin_consent_is_a_status_with_retry(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    sign_up(web)
    target = connect_organization(web, postroom, org, consent="cancel")
    page = web.get(target)
    assert 'data-status="admin_consent_missing"' in page.text
    assert "Retry admin consent" in page.text
    assert _integration(postroom).status_reason == "consent_refused"
    # Retry, accepted this time: the same integration becomes ready for setup.
    again = connect_organization(
        web, postroom, org, start_path=target, action=f"{target}/reconnect"
    )
    assert again == f"{target}/setup"
    assert _integration(postroom).status == "setup"
    # issue 19, item 8: the tenant is named on the confirm step and the detail page
    assert org.tenant.id in web.get(f"{target}/setup/1").text
    assert "Tenant None" not in web.get(f"{target}/setup/1").text
    assert org.tenant.id in web.get(target).text
