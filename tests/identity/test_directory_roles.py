"""Directory roles as Entra shows them: ``wids`` in id tokens (only when the app registration's
groupMembershipClaims asks for it), role assignments through the control API and scenarios,
and who may grant tenant-wide admin consent (Graph application permissions need a Global or
Privileged Role Administrator)."""

from __future__ import annotations

import json
import urllib.parse
import uuid

import httpx
import pytest

from m365sim import roles
from m365sim.persist import restore, snapshot
from m365sim.scenario import load_scenario, read_scenario, validate
from m365sim.state import EmulatorState
from m365sim.store import Store, User
from tests.helpers import REDIRECT_URI, Org, make_org
from tests.identity.browser import Browser
from tests.identity.conftest import MsalFactory
from tests.identity.flows import GRAPH, claims, sign_in_with_msal

GA = "62e90394-69f5-4237-9190-012177145e10"
PRA = "e8611ab8-c189-46e8-94e1-60213ab1f814"
APP_ADMIN = "9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3"
CLOUD_APP_ADMIN = "158c047a-c907-4556-b7ef-446551a6b5f7"
EXCHANGE_ADMIN = "29232cdf-9323-42fd-ade2-1d097af3e4de"
USER_ROLE = "b79fbf4d-3ef9-4689-8143-76b194e85509"
SIGN_IN = ["User.Read"]  # MSAL adds openid profile offline_access


def _add_user(sim: EmulatorState, org: Org, alias: str, role_ids: set[str]) -> User:
    return sim.store.add_user(
        org.tenant,
        user_principal_name=f"{alias}@{org.tenant.domain}",
        display_name=alias.title(),
        password=f"{alias}-pass",
        directory_roles=set(role_ids),
    )


def _admin_consent_url(base_url: str, tenant: str, client_id: str, scope: str) -> str:
    query = {
        "client_id": client_id,
        "scope": scope,
        "redirect_uri": REDIRECT_URI,
        "state": "roles-1",
    }
    return f"{base_url}/{tenant}/v2.0/adminconsent?" + urllib.parse.urlencode(query)


# ----------------------------------------------------------------------------- wids


def test_global_admin_id_token_carries_wids_through_msal(
    org: Org, msal_app: MsalFactory, browser: Browser
) -> None:
    assert org.app.group_membership_claims == "DirectoryRole"
    result = sign_in_with_msal(msal_app(), browser, org.admin, SIGN_IN)
    assert "id_token_claims" in result, result
    assert result["id_token_claims"]["wids"] == [GA, USER_ROLE]
    assert claims(result["id_token"])["wids"] == [GA, USER_ROLE]
    # Graph's own access tokens carry wids too (shaped by Graph, not by the client's manifest)
    assert claims(result["access_token"])["wids"] == [GA, USER_ROLE]


def test_a_user_without_roles_holds_only_the_user_role(
    org: Org, msal_app: MsalFactory, browser: Browser
) -> None:
    result = sign_in_with_msal(msal_app(), browser, org.alice, SIGN_IN)
    assert result["id_token_claims"]["wids"] == [USER_ROLE]
    assert not org.alice.is_admin


def test_no_wids_when_the_app_does_not_ask_for_directory_roles(
    org: Org, msal_app: MsalFactory, browser: Browser, sim: EmulatorState
) -> None:
    org.app.group_membership_claims = "None"
    result = sign_in_with_msal(msal_app(), browser, org.admin, SIGN_IN)
    assert "wids" not in result["id_token_claims"]
    # SecurityGroup alone does not emit wids unless the setting says it does (unverified)
    org.app.group_membership_claims = "SecurityGroup"
    again = sign_in_with_msal(msal_app(), browser, org.admin, SIGN_IN)
    assert "wids" not in again["id_token_claims"]
    sim.config.wids_with_security_group = True
    third = sign_in_with_msal(msal_app(), browser, org.admin, SIGN_IN)
    assert third["id_token_claims"]["wids"] == [GA, USER_ROLE]


def test_all_emits_wids_and_graph_access_token_wids_can_be_turned_off(
    org: Org, msal_app: MsalFactory, browser: Browser, sim: EmulatorState
) -> None:
    org.app.group_membership_claims = "All"
    exchange = _add_user(sim, org, "exa", {EXCHANGE_ADMIN})
    sim.config.graph_access_token_wids = False
    result = sign_in_with_msal(msal_app(), browser, exchange, SIGN_IN)
    assert result["id_token_claims"]["wids"] == [EXCHANGE_ADMIN, USER_ROLE]
    assert "wids" not in claims(result["access_token"])
    assert not exchange.is_admin  # an Exchange Administrator may not grant admin consent


def test_wids_follow_a_role_change_on_the_next_token(
    org: Org, msal_app: MsalFactory, browser: Browser, http: httpx.Client
) -> None:
    app = msal_app()
    first = sign_in_with_msal(app, browser, org.bob, SIGN_IN)
    assert first["id_token_claims"]["wids"] == [USER_ROLE]
    patched = http.patch(
        f"/_emulator/tenants/{org.tenant.id}/users/{org.bob.user_principal_name}",
        json={"directoryRoles": [PRA]},
    )
    assert patched.status_code == 200, patched.text
    refreshed = app.acquire_token_by_refresh_token(first["refresh_token"], SIGN_IN)
    assert refreshed["id_token_claims"]["wids"] == [PRA, USER_ROLE]


# ----------------------------------------------------------------------------- admin consent


@pytest.fixture
def customer(sim: EmulatorState) -> Org:
    """A second organization that has never consented to the first one's app."""
    return make_org(sim, consent=False)


@pytest.mark.parametrize("role", [APP_ADMIN, CLOUD_APP_ADMIN])
def test_application_administrators_cannot_grant_graph_application_permissions(
    role: str,
    org: Org,
    customer: Org,
    browser: Browser,
    base_url: str,
    sim: EmulatorState,
) -> None:
    appadmin = _add_user(sim, customer, "appadmin", {role})
    assert appadmin.is_admin and not appadmin.may_consent_graph_app_roles
    url = _admin_consent_url(base_url, customer.tenant.id, org.app.client_id, f"{GRAPH}/.default")
    refused = browser.sign_in(url, appadmin.user_principal_name, "appadmin-pass")
    # the same answer a non-administrator gets
    assert refused.params["admin_consent"] == "True"
    assert refused.params["error"] == "consent_required"
    assert refused.params["error_description"].startswith("AADSTS90094: ")
    assert refused.params["state"] == "roles-1"
    assert org.app.client_id not in customer.tenant.app_role_grants
    assert org.app.client_id not in customer.tenant.admin_delegated_grants


def test_application_administrator_may_grant_delegated_permissions(
    org: Org, customer: Org, browser: Browser, base_url: str, sim: EmulatorState
) -> None:
    appadmin = _add_user(sim, customer, "appadmin", {APP_ADMIN})
    url = _admin_consent_url(base_url, customer.tenant.id, org.app.client_id, f"{GRAPH}/Mail.Read")
    granted = browser.sign_in(url, appadmin.user_principal_name, "appadmin-pass")
    assert granted.params["admin_consent"] == "True" and "error" not in granted.params
    assert customer.tenant.admin_delegated_grants[org.app.client_id] == {"Mail.Read"}
    assert customer.tenant.app_role_grants.get(org.app.client_id, set()) == set()


def test_privileged_role_administrator_may_grant_application_permissions(
    org: Org, customer: Org, browser: Browser, base_url: str, sim: EmulatorState
) -> None:
    pra = _add_user(sim, customer, "pra", {PRA})
    url = _admin_consent_url(base_url, customer.tenant.id, org.app.client_id, f"{GRAPH}/.default")
    granted = browser.sign_in(url, pra.user_principal_name, "pra-pass")
    assert granted.params["admin_consent"] == "True" and "error" not in granted.params
    assert customer.tenant.app_role_grants[org.app.client_id] == set(
        org.app.application_permissions
    )


def test_exchange_administrator_is_not_an_admin_for_consent(
    org: Org, customer: Org, browser: Browser, base_url: str, sim: EmulatorState
) -> None:
    exa = _add_user(sim, customer, "exa", {EXCHANGE_ADMIN})
    url = _admin_consent_url(base_url, customer.tenant.id, org.app.client_id, f"{GRAPH}/Mail.Read")
    refused = browser.sign_in(url, exa.user_principal_name, "exa-pass")
    assert refused.params["error"] == "consent_required"


# ----------------------------------------------------------------------------- control API


def test_control_api_sets_and_shows_directory_roles(
    org: Org, http: httpx.Client, msal_app: MsalFactory, browser: Browser
) -> None:
    created = http.post(
        f"/_emulator/tenants/{org.tenant.id}/users",
        json={
            "userPrincipalName": f"carla@{org.tenant.domain}",
            "displayName": "Carla Cloud",
            "password": "carla-pass",
            "directoryRoles": ["Cloud Application Administrator", EXCHANGE_ADMIN, USER_ROLE],
        },
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["directoryRoles"] == sorted([CLOUD_APP_ADMIN, EXCHANGE_ADMIN])
    assert body["isAdmin"] is True
    path = f"/_emulator/tenants/{org.tenant.domain}/users/carla"
    assert http.get(path).json()["directoryRoles"] == body["directoryRoles"]

    demoted = http.patch(path, json={"directoryRoles": []})
    assert demoted.status_code == 200
    assert demoted.json()["directoryRoles"] == [] and demoted.json()["isAdmin"] is False
    promoted = http.patch(path, json={"isAdmin": True})
    assert promoted.json()["directoryRoles"] == [GA]
    carla = org.tenant.user(f"carla@{org.tenant.domain}")
    assert carla is not None
    result = sign_in_with_msal(msal_app(), browser, carla, SIGN_IN)
    assert result["id_token_claims"]["wids"] == [GA, USER_ROLE]

    templates = http.get("/_emulator/directoryRoles").json()["value"]
    assert {"id": GA, "displayName": "Global Administrator", "implicit": False} in templates


def test_control_api_role_input_errors_are_clear(org: Org, http: httpx.Client) -> None:
    path = f"/_emulator/tenants/{org.tenant.id}/users/{org.alice.id}"
    unknown = http.patch(path, json={"directoryRoles": ["Supreme Leader"]})
    assert unknown.status_code == 400
    assert "not a role template id" in unknown.json()["error"]
    contradiction = http.patch(path, json={"directoryRoles": [GA], "isAdmin": False})
    assert contradiction.status_code == 400
    other = http.patch(path, json={"password": "x"})
    assert other.status_code == 400 and "unknown field" in other.json()["error"]
    shared = http.patch(
        f"/_emulator/tenants/{org.tenant.id}/users/{org.shared.id}", json={"directoryRoles": [GA]}
    )
    assert shared.status_code == 400
    assert org.alice.directory_roles == set() and org.shared.directory_roles == set()


def test_control_api_app_group_membership_claims(org: Org, http: httpx.Client) -> None:
    created = http.post(
        "/_emulator/apps",
        json={
            "displayName": "Roles app",
            "homeTenantId": org.tenant.id,
            "redirectUris": [REDIRECT_URI],
            "secret": "roles-app-secret",
            "groupMembershipClaims": "securitygroup, directoryrole",
        },
    )
    assert created.status_code == 201, created.text
    assert created.json()["groupMembershipClaims"] == "SecurityGroup, DirectoryRole"
    cid = created.json()["clientId"]
    plain = http.post(
        "/_emulator/apps",
        json={"displayName": "Plain", "homeTenantId": org.tenant.id, "redirectUris": []},
    )
    assert plain.json()["groupMembershipClaims"] == "None"
    patched = http.patch(f"/_emulator/apps/{cid}", json={"groupMembershipClaims": "All"})
    assert patched.status_code == 200 and patched.json()["groupMembershipClaims"] == "All"
    for bad in ("Everything", "None, All", ""):
        refused = http.patch(f"/_emulator/apps/{cid}", json={"groupMembershipClaims": bad})
        assert refused.status_code == 400, bad
    assert http.get(f"/_emulator/apps/{cid}").json()["groupMembershipClaims"] == "All"


# ----------------------------------------------------------------------------- scenarios, files


def test_demo_scenario_admin_is_global_administrator_and_postroom_asks_for_roles() -> None:
    data, base_dir = read_scenario("demo")
    store = Store()
    result = load_scenario(store, data, base_dir=base_dir)
    admin = next(u for u in result.users if u["userPrincipalName"].startswith("admin@"))
    assert admin["directoryRoles"] == [GA] and admin["isAdmin"] is True
    others = [u for u in result.users if not u["userPrincipalName"].startswith("admin@")]
    assert others and all(u["directoryRoles"] == [] for u in others)
    postroom = next(a for a in store.apps.values() if a.display_name == "Postroom")
    assert postroom.group_membership_claims == "DirectoryRole"


def test_scenario_roles_by_name_and_legacy_is_admin() -> None:
    result = validate(
        {
            "tenants": [
                {
                    "displayName": "Roles",
                    "domain": f"r{uuid.uuid4().hex[:8]}.test",
                    "users": [
                        {
                            "userPrincipalName": "ga",
                            "displayName": "GA",
                            "password": "p",
                            "isAdmin": True,
                        },
                        {
                            "userPrincipalName": "pra",
                            "displayName": "PRA",
                            "password": "p",
                            "directoryRoles": ["privileged role administrator"],
                        },
                    ],
                }
            ],
            "apps": [],
        }
    )
    by_name = {u["userPrincipalName"].split("@")[0]: u for u in result.users}
    assert by_name["ga"]["directoryRoles"] == [GA]
    assert by_name["pra"]["directoryRoles"] == [PRA]


def test_state_file_keeps_roles_and_reads_older_is_admin() -> None:
    store = Store()
    tenant = store.add_tenant(display_name="T", domain=f"s{uuid.uuid4().hex[:8]}.test")
    user = store.add_user(
        tenant, user_principal_name=f"a@{tenant.domain}", display_name="A", password="p"
    )
    user.directory_roles = {APP_ADMIN}
    app = store.add_app(
        display_name="X",
        home_tenant_id=tenant.id,
        redirect_uris=[],
        group_membership_claims="DirectoryRole",
    )
    data = json.loads(json.dumps(snapshot(store)))
    copy = Store()
    restore(copy, data)
    assert copy.tenants[tenant.id].users[user.id].directory_roles == {APP_ADMIN}
    assert copy.apps[app.client_id].group_membership_claims == "DirectoryRole"
    # a file saved before directory roles existed
    raw_user = data["tenants"][tenant.id]["users"][user.id]
    del raw_user["directory_roles"]
    raw_user["is_admin"] = True
    older = Store()
    restore(older, data)
    assert older.tenants[tenant.id].users[user.id].directory_roles == {GA}


def test_roles_module_rules() -> None:
    assert roles.wids({GA, USER_ROLE}) == [GA, USER_ROLE]
    assert roles.may_consent_delegated({CLOUD_APP_ADMIN})
    assert not roles.may_consent_graph_app_roles({APP_ADMIN, CLOUD_APP_ADMIN, EXCHANGE_ADMIN})
    assert roles.may_consent_graph_app_roles({PRA})
    assert roles.parse_group_membership_claims("DirectoryRole,All") == {"DirectoryRole", "All"}
    assert roles.parse_group_membership_claims("None, DirectoryRole") is None
