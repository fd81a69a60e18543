"""Control API of this part: configuration, notification faults, log and subscriptions."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from m365sim.state import EmulatorState
from tests.helpers import Org
from tests.notifications.receiver import Hook
from tests.notifications.support import inbox_subscription


def test_config_get_and_patch(http: httpx.Client, sim: EmulatorState) -> None:
    got = http.get("/_emulator/config")
    assert got.status_code == 200
    assert got.json()["subscription_max_minutes"] == sim.config.subscription_max_minutes
    patched = http.patch(
        "/_emulator/config",
        json={"mailbox_requests_per_window": 50, "delivery_retry_delays": [1, 2.5]},
    )
    assert patched.status_code == 200
    assert patched.json()["mailbox_requests_per_window"] == 50
    assert sim.config.mailbox_requests_per_window == 50
    assert sim.config.delivery_retry_delays == [1.0, 2.5]


def test_config_patch_rejects_unknown_names_and_wrong_types_atomically(
    http: httpx.Client, sim: EmulatorState
) -> None:
    before = sim.config.to_dict()
    for body in (
        {"mailbox_concurrency": 2, "no_such_setting": 1},
        {"mailbox_concurrency": 2, "throttling_enabled": "yes"},
        {"mailbox_concurrency": "2"},
        {"delivery_retry_delays": ["soon"]},
        {"notification_ca_file": 5},
    ):
        response = http.patch("/_emulator/config", json=body)
        assert response.status_code == 400, body
        assert response.json()["error"]
    assert sim.config.to_dict() == before  # nothing half-applied
    assert http.patch("/_emulator/config", content=b"[1, 2]").status_code == 400
    assert http.patch("/_emulator/config", content=b"{oops").status_code == 400


def test_notification_faults_validation(http: httpx.Client, sim: EmulatorState) -> None:
    for body in (
        {"drop_rate": 2},
        {"duplicate_rate": "half"},
        {"delay_ms": -1},
        {"reorder": "yes"},
        {"seed": 1.5},
        {"explode": True},
    ):
        response = http.put("/_emulator/notification-faults", json=body)
        assert response.status_code == 400, body
        assert response.json()["error"]
    assert http.get("/_emulator/notification-faults").json() == {
        "drop_rate": 0.0,
        "duplicate_rate": 0.0,
        "delay_ms": 0,
        "reorder": False,
        "seed": 0,
    }


def test_subscriptions_and_log_views(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    sub = inbox_subscription(http, org, hook(), sim)
    listed = http.get("/_emulator/subscriptions", params={"mailbox_id": org.alice.id}).json()
    [entry] = [s for s in listed["value"] if s["id"] == sub["id"]]
    assert entry["tenantId"] == org.tenant.id
    assert entry["folderId"] == org.alice.mailbox.well_known["inbox"]
    assert entry["reauthorizationRequired"] is False
    log = http.get(
        "/_emulator/notifications", params={"subscription_id": sub["id"], "kind": "validation"}
    ).json()["value"]
    assert [e["result"] for e in log] == ["validated"]
    assert http.get("/_emulator/notifications", params={"limit": "x"}).status_code == 400
    assert http.delete("/_emulator/notifications").status_code == 204
    after = http.get("/_emulator/notifications", params={"subscription_id": sub["id"]})
    assert after.json()["value"] == []
