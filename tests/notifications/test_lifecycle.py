"""Lifecycle notifications: on demand, before expiry, on token expiry, on lost access."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from m365sim.state import EmulatorState
from m365sim.tokens import issue_access_token
from tests.helpers import APPLICATION_ALL, Org
from tests.notifications.receiver import Hook
from tests.notifications.support import auth, expiry, inbox_subscription, subscribe

LIFECYCLE_KEYS = [
    "subscriptionId",
    "subscriptionExpirationDateTime",
    "tenantId",
    "clientState",
    "lifecycleEvent",
]


def long_app_token(org: Org, hours: float = 24 * 30) -> str:
    """An app-only token that outlives the test's clock advances."""
    sim = org.state
    return issue_access_token(
        sim.signing_key,
        now=sim.clock.time(),
        lifetime=int(hours * 3600),
        tenant_id=org.tenant.id,
        client_id=org.app.client_id,
        user_id=None,
        roles=APPLICATION_ALL,
    )


def emulator_subscriptions(http: httpx.Client, org: Org) -> list[dict[str, Any]]:
    response = http.get("/_emulator/subscriptions", params={"tenant_id": org.tenant.id})
    assert response.status_code == 200
    value: list[dict[str, Any]] = response.json()["value"]
    return value


def _subscribe_with_lifecycle(
    http: httpx.Client,
    org: Org,
    sim: EmulatorState,
    hook: Callable[..., Hook],
    *,
    token: str,
    minutes: float = 3 * 24 * 60,
) -> tuple[dict[str, Any], Hook, Hook]:
    target = hook()
    lifecycle = hook()
    response = subscribe(
        http,
        token,
        resource=f"users/{org.alice.id}/mailFolders('inbox')/messages",
        url=target.url,
        sim=sim,
        minutes=minutes,
        lifecycleNotificationUrl=lifecycle.url,
    )
    assert response.status_code == 201, response.text
    return response.json(), target, lifecycle


def test_on_demand_events_have_graphs_shape(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    sub, _, lifecycle = _subscribe_with_lifecycle(http, org, sim, hook, token=org.app_token())
    for event in ("reauthorizationRequired", "missed"):
        response = http.post(
            f"/_emulator/subscriptions/{sub['id']}/lifecycle", json={"event": event}
        )
        assert response.status_code == 202
        assert response.json() == {"subscription_id": sub["id"], "event": event, "sent": True}
    notes = lifecycle.wait_for(2)
    assert [n["lifecycleEvent"] for n in notes] == ["reauthorizationRequired", "missed"]
    for note in notes:
        assert list(note) == LIFECYCLE_KEYS
        assert note["subscriptionId"] == sub["id"]
        assert note["tenantId"] == org.tenant.id
        assert note["clientState"] == "secret-client-state"
        assert note["subscriptionExpirationDateTime"] == sub["expirationDateTime"]


def test_on_demand_subscription_removed_removes_it(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    sub, target, lifecycle = _subscribe_with_lifecycle(http, org, sim, hook, token=org.app_token())
    response = http.post(
        f"/_emulator/subscriptions/{sub['id']}/lifecycle", json={"event": "subscriptionRemoved"}
    )
    assert response.status_code == 202
    [note] = lifecycle.wait_for(1)
    assert note["lifecycleEvent"] == "subscriptionRemoved"
    got = http.get(f"/v1.0/subscriptions/{sub['id']}", headers=auth(org.app_token()))
    assert got.status_code == 404
    org.deliver(org.alice)
    assert target.quiet(0.2) == []


def test_lifecycle_control_errors(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    plain = inbox_subscription(http, org, hook(), sim)  # no lifecycleNotificationUrl
    url = f"/_emulator/subscriptions/{plain['id']}/lifecycle"
    assert http.post(url, json={"event": "missed"}).json()["sent"] is False
    bad = http.post(url, json={"event": "exploded"})
    assert bad.status_code == 400 and "event must be one of" in bad.json()["error"]
    assert http.post(url, content=b"{not json").status_code == 400
    missing = http.post("/_emulator/subscriptions/nope/lifecycle", json={"event": "missed"})
    assert missing.status_code == 404


def test_reauthorization_required_before_expiry(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    token = long_app_token(org)
    sub, _, lifecycle = _subscribe_with_lifecycle(http, org, sim, hook, token=token, minutes=180)
    assert lifecycle.quiet(0.2) == []
    sim.clock.advance(121 * 60)  # within lifecycle_reauthorize_minutes (60) of expiry
    [note] = lifecycle.wait_for(1)
    assert note["lifecycleEvent"] == "reauthorizationRequired"
    assert lifecycle.quiet(0.2) == [note]  # once per expiry, not every tick
    # renewing moves the expiry; the challenge comes again before the new one
    renewed = http.patch(
        f"/v1.0/subscriptions/{sub['id']}",
        json={"expirationDateTime": (sim.clock.now().replace(microsecond=0)).isoformat()},
        headers=auth(token),
    )
    assert renewed.status_code == 400  # "now" is not in the future
    renewed = http.patch(
        f"/v1.0/subscriptions/{sub['id']}",
        json={"expirationDateTime": expiry(sim, 180)},
        headers=auth(token),
    )
    assert renewed.status_code == 200
    sim.clock.advance(121 * 60)
    assert [n["lifecycleEvent"] for n in lifecycle.wait_for(2)] == [
        "reauthorizationRequired",
        "reauthorizationRequired",
    ]


def test_token_expiry_challenge_pauses_delivery_until_reauthorized(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    sim.config.reauthorization_grace_minutes = 30
    sub, target, lifecycle = _subscribe_with_lifecycle(
        http,
        org,
        sim,
        hook,
        token=org.app_token(),  # one hour
    )
    sim.clock.advance(61 * 60)
    [note] = lifecycle.wait_for(1)
    assert note["lifecycleEvent"] == "reauthorizationRequired"
    org.deliver(org.alice)  # within the grace period: still delivered
    target.wait_for(1)
    sim.clock.advance(31 * 60)
    org.deliver(org.alice)  # paused: lost
    assert len(target.quiet(0.3)) == 1
    lost = [
        e
        for e in http.get("/_emulator/notifications", params={"subscription_id": sub["id"]}).json()[
            "value"
        ]
        if e["result"] == "lost_reauthorization_pending"
    ]
    assert len(lost) == 1
    ok = http.post(f"/v1.0/subscriptions/{sub['id']}/reauthorize", headers=auth(org.app_token()))
    assert ok.status_code == 204
    org.deliver(org.alice)
    assert len(target.wait_for(2)) == 2


def test_revoked_consent_removes_the_subscription(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    sub, target, lifecycle = _subscribe_with_lifecycle(http, org, sim, hook, token=org.app_token())
    assert [s["id"] for s in emulator_subscriptions(http, org)] == [sub["id"]]
    sim.store.revoke_consent(org.tenant, org.app.client_id)
    [note] = lifecycle.wait_for(1)
    assert note["lifecycleEvent"] == "subscriptionRemoved"
    assert emulator_subscriptions(http, org) == []
    org.deliver(org.alice)
    assert target.quiet(0.2) == []


def test_delegated_subscription_ends_when_the_user_revokes_consent(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    # the user's own grant, not the tenant-wide admin consent
    org.tenant.admin_delegated_grants.pop(org.app.client_id, None)
    org.tenant.user_grants[(org.app.client_id, org.alice.id)] = {"Mail.Read", "User.Read"}
    lifecycle = hook()
    response = subscribe(
        http,
        org.token(org.alice, ["Mail.Read"]),
        resource="me/messages",
        url=hook().url,
        sim=sim,
        lifecycleNotificationUrl=lifecycle.url,
    )
    assert response.status_code == 201
    assert lifecycle.quiet(0.2) == []  # authorized: nothing happens
    sim.store.revoke_consent(org.tenant, org.app.client_id, org.alice.id)
    [note] = lifecycle.wait_for(1)
    assert note["lifecycleEvent"] == "subscriptionRemoved"
