"""The organization-wide takeover (issue 12, critical) and what closes it.

Before: ``/auth/admin-consent/callback`` took the tenant from the redirect's query string and
checked only that a client-credentials token for it could be had, which is true for every
tenant whose administrator ever consented to Postroom, for anyone. Now the tenant is proven by
an administrator who signs in (OpenID Connect, code + PKCE) in the same flow, bound to the
``state``; admin consent is asked for exactly that tenant and a callback naming any other is
refused, with nothing created or changed.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import func, select

from m365sim.state import EmulatorState
from postroom.integrations.models import Integration, OAuthFlow
from tests.helpers import Org
from tests.postroom.conftest import Postroom
from tests.postroom.msdriver import through_microsoft
from tests.postroom.test_connect import connect_organization
from tests.postroom.webtools import post_form, sign_up


def _integrations(postroom: Postroom) -> list[Integration]:
    with postroom.database.session() as db:
        return list(db.scalars(select(Integration)))


@pytest.fixture
def attacker(postroom: Postroom, ssl_context: ssl.SSLContext) -> Iterator[httpx.Client]:
    """A stranger who signed up to the same Postroom (sign-up is open)."""
    with httpx.Client(
        base_url=postroom.url, timeout=30, trust_env=False, verify=ssl_context
    ) as client:
        sign_up(client, email="mallory@evil.test", name="Mallory", workspace="Evil")
        yield client


def _start(client: httpx.Client) -> str:
    start = post_form(
        client, "/integrations/new/outlook/organization", "/integrations/connect/organization"
    )
    assert start.status_code == 303
    return str(httpx.URL(start.headers["location"]).params["state"])


def _victim(postroom: Postroom, sim: EmulatorState) -> Org:
    """A tenant whose administrator did consent to Postroom (for someone else)."""
    return postroom.org(sim, consent=True)


@pytest.mark.parametrize("by", ["id", "domain", "no_admin_consent"])
def test_forged_consent_callback_for_a_consented_tenant_is_refused(
    attacker: httpx.Client, postroom: Postroom, sim: EmulatorState, by: str
) -> None:
    victim = _victim(postroom, sim)
    state = _start(attacker)
    params = {"state": state, "tenant": victim.tenant.id, "admin_consent": "True"}
    if by == "domain":
        params["tenant"] = victim.tenant.domain
    if by == "no_admin_consent":
        del params["admin_consent"]
    response = attacker.get("/auth/admin-consent/callback", params=params)
    assert response.status_code == 400
    assert "Nothing was connected" in response.text
    assert _integrations(postroom) == []
    # and the state is used up: the sign-in it was issued for cannot continue either
    with postroom.database.session() as db:
        assert db.scalar(select(func.count()).select_from(OAuthFlow)) == 0


def test_an_administrator_of_one_tenant_cannot_take_another(
    attacker: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    """Mallory administers her own tenant, proves it, and swaps the tenant in the consent
    callback for a victim's tenant that consented elsewhere: refused, nothing created."""
    own = postroom.org(sim)
    victim = _victim(postroom, sim)
    start = post_form(
        attacker, "/integrations/new/outlook/organization", "/integrations/connect/organization"
    )
    signed_in = through_microsoft(
        attacker,
        start,
        back_to=postroom.url,
        username=own.admin.user_principal_name,
        password="admin-pass",
    )
    step = attacker.get(signed_in)
    consent_url = httpx.URL(step.headers["location"])
    assert consent_url.path.startswith(f"/{own.tenant.id}/")  # consent only for her tenant
    state = consent_url.params["state"]
    for tenant in (victim.tenant.id, victim.tenant.domain):
        forged = attacker.get(
            "/auth/admin-consent/callback",
            params={"state": state, "tenant": tenant, "admin_consent": "True"},
        )
        assert forged.status_code == 400
        assert _integrations(postroom) == []
    # the state was single use: the genuine answer after the forgery is refused too
    replay = attacker.get(
        "/auth/admin-consent/callback",
        params={"state": state, "tenant": own.tenant.id, "admin_consent": "True"},
    )
    assert replay.status_code == 400
    assert _integrations(postroom) == []


def test_a_non_administrator_is_told_an_administrator_must_connect(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim, consent=True)
    sign_up(web)
    start = post_form(
        web, "/integrations/new/outlook/organization", "/integrations/connect/organization"
    )
    back = through_microsoft(
        web,
        start,
        back_to=postroom.url,
        username=org.alice.user_principal_name,
        password="alice-pass",
    )
    page = web.get(back)
    assert page.status_code == 403
    assert "An administrator of this organization must connect it" in page.text
    assert _integrations(postroom) == []


def test_without_directory_roles_in_tokens_nobody_is_proven(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim, consent=True)
    sign_up(web)
    registration = postroom.app_registration
    registration.group_membership_claims = "None"  # type: ignore[attr-defined]
    try:
        start = post_form(
            web, "/integrations/new/outlook/organization", "/integrations/connect/organization"
        )
        back = through_microsoft(
            web,
            start,
            back_to=postroom.url,
            username=org.admin.user_principal_name,
            password="admin-pass",
        )
        page = web.get(back)
    finally:
        registration.group_membership_claims = "DirectoryRole"  # type: ignore[attr-defined]
    assert page.status_code == 400
    assert "groupMembershipClaims" in page.text
    assert _integrations(postroom) == []


def test_a_callback_state_not_bound_to_a_proven_administrator_is_refused(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    """A personal sign-in's state, or none at all, never reaches the consent callback."""
    org = postroom.org(sim, consent=True)
    sign_up(web)
    personal = post_form(
        web,
        "/integrations/new/outlook/personal",
        "/integrations/connect/personal",
        {"shared_access": "on"},
    )
    state = httpx.URL(personal.headers["location"]).params["state"]
    for params in (
        {"state": state, "tenant": org.tenant.id, "admin_consent": "True"},
        {"tenant": org.tenant.id, "admin_consent": "True"},
    ):
        response = web.get("/auth/admin-consent/callback", params=params)
        assert response.status_code == 400
    assert _integrations(postroom) == []


def test_a_tenant_connected_in_another_workspace_needs_its_administrator_to_confirm(
    web: httpx.Client, attacker: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    sign_up(web)
    assert connect_organization(web, postroom, org).endswith("/setup")
    # A second workspace: even its (genuine) administrator sees a confirmation first.
    start = post_form(
        attacker, "/integrations/new/outlook/organization", "/integrations/connect/organization"
    )
    signed_in = through_microsoft(
        attacker,
        start,
        back_to=postroom.url,
        username=org.admin.user_principal_name,
        password="admin-pass",
    )
    confirm = attacker.get(signed_in)
    assert confirm.status_code == 200
    assert "already connected to another Postroom workspace" in confirm.text
    assert len(_integrations(postroom)) == 1
    go = post_form(attacker, "/integrations", "/auth/admin-consent/confirm", {"state": "forged"})
    assert go.status_code == 400 and len(_integrations(postroom)) == 1
    state = confirm.text.split('name="state" value="', 1)[1].split('"', 1)[0]
    go = post_form(attacker, "/integrations", "/auth/admin-consent/confirm", {"state": state})
    assert go.status_code == 303
    assert f"/{org.tenant.id}/v2.0/adminconsent?" in go.headers["location"]
    back = through_microsoft(
        attacker,
        go,
        back_to=postroom.url,
        username=org.admin.user_principal_name,
        password="admin-pass",
    )
    assert attacker.get(back).status_code == 303
    assert len(_integrations(postroom)) == 2


def test_the_same_tenant_twice_in_one_workspace_is_refused(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    sign_up(web)
    first = connect_organization(web, postroom, org).removesuffix("/setup")
    start = post_form(
        web, "/integrations/new/outlook/organization", "/integrations/connect/organization"
    )
    signed_in = through_microsoft(
        web,
        start,
        back_to=postroom.url,
        username=org.admin.user_principal_name,
        password="admin-pass",
    )
    page = web.get(signed_in)
    assert page.status_code == 409
    assert "already connected here" in page.text and first in page.text
    assert len(_integrations(postroom)) == 1
