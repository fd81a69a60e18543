"""Reset, state summary, scenarios, save / load / snapshot (on a private emulator), and the
state file round trip."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from m365sim import persist
from m365sim.clock import Clock
from m365sim.scenario import load_scenario, read_scenario, validate
from m365sim.server import EmulatorServer
from m365sim.store import Store
from m365sim.tokens import issue_access_token

DEMO_TENANT = "8d5f2c1e-4b7a-4e3d-9c2b-1a0f6e5d4c3b"
DEMO_APP = "6f1b9f3e-5c2a-4d8e-9b7a-2c4d6e8f0a1b"


def _app_token(server: EmulatorServer, roles: list[str]) -> str:
    state = server.state
    return issue_access_token(
        state.signing_key,
        now=state.clock.time(),
        lifetime=3600,
        tenant_id=DEMO_TENANT,
        client_id=DEMO_APP,
        user_id=None,
        roles=roles,
    )


def test_demo_scenario_loads_and_reset_empties_everything(
    private: httpx.Client, private_server: EmulatorServer
) -> None:
    loaded = private.post("/_emulator/scenario", json={"name": "demo"})
    assert loaded.status_code == 201, loaded.text
    result = loaded.json()
    assert result["messages"] == 40
    assert result["tenants"][0]["domain"] == "contoso-logistics.test"
    assert {u["userPrincipalName"] for u in result["users"]} == {
        "admin@contoso-logistics.test",
        "alice@contoso-logistics.test",
        "bob@contoso-logistics.test",
    }
    app = result["apps"][0]
    assert app["clientId"] == DEMO_APP
    assert "http://localhost:8000/auth/admin-consent/callback" in app["redirectUris"]

    state = private.get("/_emulator/state").json()
    assert state["messages"] == 40 and state["mailboxes"] == 5 and state["apps"] == 1

    # the demo is not consented: Postroom's onboarding does that
    private.post(
        f"/_emulator/tenants/{DEMO_TENANT}/consents", json={"clientId": DEMO_APP, "admin": True}
    ).raise_for_status()
    token = _app_token(private_server, ["Mail.ReadWrite", "User.Read.All"])
    orders = private.get(
        "/v1.0/users/orders@contoso-logistics.test/mailFolders/inbox/messages?$top=50",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert orders.status_code == 200
    subjects = {m["subject"] for m in orders.json()["value"]}
    assert "Commande n° 7712 - livraison à Liège" in subjects  # the raw ISO-8859-1 one
    assert "Spoedorder - 6 pallets naar Zwolle" in subjects

    private.post("/_emulator/faults", json={"status": 503, "path": "/messages"})
    assert private.post("/_emulator/reset").json() == {"reset": True}
    empty = private.get("/_emulator/state").json()
    assert (empty["tenants"], empty["apps"], empty["messages"]) == ([], 0, 0)
    assert private_server.state.faults.rules() == []
    assert private.get("/_emulator/counters").json()["total"] == 0


def test_bad_or_conflicting_scenarios_change_nothing(private: httpx.Client) -> None:
    private.post("/_emulator/scenario", json={"name": "demo"}).raise_for_status()
    before = private.get("/_emulator/state").json()

    again = private.post("/_emulator/scenario", json={"name": "demo"})
    assert again.status_code == 409 and "already" in again.json()["error"]

    broken = """
name: broken
tenants:
  - displayName: Broken Inc
    domain: broken.test
    users:
      - userPrincipalName: ok@broken.test
        displayName: OK
        password: pw
      - userPrincipalName: nopass@broken.test
        displayName: No password
"""
    refused = private.post("/_emulator/scenario", json={"yaml": broken})
    assert refused.status_code == 400
    assert refused.json()["error"].startswith("tenants[0].users[1].password is required")
    assert private.get("/_emulator/state").json() == {
        **before,
        "now": private.get("/_emulator/state").json()["now"],
        "requestsLogged": private.get("/_emulator/state").json()["requestsLogged"],
    }
    not_yaml = private.post(
        "/_emulator/scenario", content=b"tenants: [", headers={"Content-Type": "application/yaml"}
    )
    assert not_yaml.status_code == 400 and "not valid YAML" in not_yaml.json()["error"]
    unknown = private.post("/_emulator/scenario", json={"name": "nope"})
    assert unknown.status_code == 404
    both = private.post("/_emulator/scenario", json={"name": "demo", "yaml": "x: 1"})
    assert both.status_code == 400

    replaced = private.post("/_emulator/scenario", json={"name": "demo", "reset": True})
    assert replaced.status_code == 201


def test_scenario_as_json_object_with_config_generated_mail_and_policies(
    private: httpx.Client, private_server: EmulatorServer
) -> None:
    scenario = {
        "name": "policy",
        "config": {"mailbox_requests_per_window": 50_000},
        "tenants": [
            {
                "displayName": "Policy Inc",
                "domain": "policy.test",
                "users": [
                    {
                        "userPrincipalName": "ann",
                        "displayName": "Ann",
                        "password": "pw",
                        "generate": {"count": 25, "seed": 7, "folder": "Inbox/Generated"},
                    }
                ],
                "sharedMailboxes": [
                    {"userPrincipalName": "desk", "displayName": "Desk", "fullAccess": ["ann"]}
                ],
                "groups": [{"displayName": "Scoped", "mail": "scoped", "members": ["desk"]}],
                "consents": [{"clientId": DEMO_APP, "admin": True}],
                "accessPolicies": [
                    {"appId": DEMO_APP, "groupMail": "scoped", "accessRight": "RestrictAccess"}
                ],
            }
        ],
        "apps": [
            {
                "clientId": DEMO_APP,
                "displayName": "Postroom",
                "homeTenantId": "policy.test",
                "secret": "s",
                "applicationPermissions": ["Mail.ReadWrite"],
            }
        ],
    }
    created = private.post("/_emulator/scenario", json={"scenario": scenario})
    assert created.status_code == 201, created.text
    assert created.json()["messages"] == 25
    state = private_server.state
    assert state.config.mailbox_requests_per_window == 50_000
    tenant = state.store.tenant("policy.test")
    assert tenant is not None
    token = issue_access_token(
        state.signing_key,
        now=state.clock.time(),
        lifetime=3600,
        tenant_id=tenant.id,
        client_id=DEMO_APP,
        user_id=None,
        roles=["Mail.ReadWrite"],
    )
    headers = {"Authorization": f"Bearer {token}"}
    desk = private.get("/v1.0/users/desk@policy.test/mailFolders/inbox/messages", headers=headers)
    ann = private.get("/v1.0/users/ann@policy.test/mailFolders/inbox/messages", headers=headers)
    assert (desk.status_code, ann.status_code) == (200, 403)
    generated = private.get("/_emulator/mailboxes/ann@policy.test/messages?folder=Inbox/Generated")
    assert len(generated.json()["value"]) == 25

    # the same seed generates the same mail
    again = Store(Clock())
    load_scenario(again, scenario)
    user = again.find_user("ann@policy.test")
    assert user is not None
    first = sorted(m["subject"] for m in generated.json()["value"])
    assert sorted(m.subject for m in user[1].mailbox.messages.values()) == first
    state.config.mailbox_requests_per_window = 10_000


def test_save_load_round_trip_over_the_control_api(
    private: httpx.Client, private_server: EmulatorServer
) -> None:
    private.post("/_emulator/scenario", json={"name": "demo"}).raise_for_status()
    delivered = private.post(
        "/_emulator/mailboxes/orders@contoso-logistics.test/deliver",
        content=b"Subject: saved \xe9\r\nFrom: a@b.test\r\n\r\nbody",
        headers={"Content-Type": "message/rfc822"},
    ).json()
    saved = private.post("/_emulator/save", json={"name": "demo-state.json"})
    assert saved.status_code == 200, saved.text
    assert Path(saved.json()["path"]).is_file() and saved.json()["bytes"] > 10_000

    private.post("/_emulator/reset").raise_for_status()
    assert private.get("/_emulator/mailboxes").json()["value"] == []
    loaded = private.post("/_emulator/load", json={"name": "demo-state.json"})
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["messages"] == 41

    private.post(
        f"/_emulator/tenants/{DEMO_TENANT}/consents", json={"clientId": DEMO_APP, "admin": True}
    ).raise_for_status()
    token = _app_token(private_server, ["Mail.ReadWrite"])
    listed = private.get(
        "/v1.0/users/orders@contoso-logistics.test/mailFolders/inbox/messages?$top=50",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert listed.status_code == 200
    assert "saved é" in {m["subject"] for m in listed.json()["value"]}
    found = private_server.state.store.find_user("orders@contoso-logistics.test")
    assert found is not None and found[1].mailbox.message(delivered["id"]) is not None

    assert private.post("/_emulator/save", json={"name": "../escape.json"}).status_code == 400
    assert private.post("/_emulator/load", json={"name": "missing.json"}).status_code == 404


def test_snapshot_round_trip_and_bad_snapshot(private: httpx.Client) -> None:
    private.post("/_emulator/scenario", json={"name": "demo"}).raise_for_status()
    snap = private.get("/_emulator/snapshot").json()
    assert snap["format"] == "m365sim-state"
    private.post("/_emulator/reset").raise_for_status()
    restored = private.post("/_emulator/snapshot", content=json.dumps(snap).encode())
    assert restored.status_code == 200 and restored.json()["messages"] == 40

    broken = dict(snap)
    broken["tenants"] = {"x": {"id": "x"}}
    refused = private.post("/_emulator/snapshot", content=json.dumps(broken).encode())
    assert refused.status_code == 400 and "missing field" in refused.json()["error"]
    assert private.get("/_emulator/state").json()["messages"] == 40
    wrong = private.post("/_emulator/snapshot", content=b'{"format": "other"}')
    assert wrong.status_code == 400


def test_persist_round_trip_keeps_every_field(tmp_path: Path) -> None:
    store = Store(Clock())
    data, base = read_scenario("demo")
    load_scenario(store, data, base_dir=base)
    tenant = store.tenant("contoso-logistics.test")
    assert tenant is not None
    tenant.user_grants[(DEMO_APP, next(iter(tenant.users)))] = {"Mail.Read"}
    store.clock.advance(3600)
    path = tmp_path / "state.json"
    persist.save(store, path)

    other = Store(Clock())
    persist.load(other, path)
    assert persist.snapshot(other) | {"savedAt": None} == persist.snapshot(store) | {
        "savedAt": None
    }
    assert other.clock.offset == 3600
    found = other.find_user("alice@contoso-logistics.test")
    assert found is not None and found[0].id == DEMO_TENANT
    assert other.tenant("contoso-logistics.test") is not None

    path.write_text("{not json")
    with pytest.raises(persist.StateFileError):
        persist.load(other, path)
    assert other.find_user("alice@contoso-logistics.test") is not None


def test_builtin_scenarios_validate() -> None:
    for name in ("demo", "blank"):
        data, base = read_scenario(name)
        validate(data, base_dir=base)


def test_reset_also_resets_extensions(
    private: httpx.Client, private_server: EmulatorServer
) -> None:
    class Extension:
        calls = 0

        def reset(self) -> None:
            Extension.calls += 1

    private_server.state.extensions["test-extension"] = Extension()
    try:
        private.post("/_emulator/reset").raise_for_status()
        assert Extension.calls == 1
    finally:
        del private_server.state.extensions["test-extension"]


def test_eml_files_load_from_scenario_files_only(tmp_path: Path, private: httpx.Client) -> None:
    (tmp_path / "mails").mkdir()
    (tmp_path / "mails" / "one.eml").write_bytes(
        b"From: shop@x.test\r\nSubject: From a file\r\n\r\nbody"
    )
    scenario = {
        "tenants": [
            {
                "displayName": "Files",
                "domain": "files.test",
                "sharedMailboxes": [
                    {
                        "userPrincipalName": "box",
                        "displayName": "Box",
                        "messages": [{"eml": "mails/one.eml", "isRead": True}],
                    }
                ],
            }
        ]
    }
    path = tmp_path / "files.yaml"
    path.write_text(json.dumps(scenario))
    data, base = read_scenario(str(path))
    store = Store(Clock())
    assert load_scenario(store, data, base_dir=base).messages == 1
    found = store.find_user("box@files.test")
    assert found is not None
    (msg,) = found[1].mailbox.messages.values()
    assert msg.subject == "From a file" and msg.is_read

    over_http = private.post("/_emulator/scenario", json={"scenario": scenario})
    assert over_http.status_code == 400 and "raw instead" in over_http.json()["error"]
