"""Change notifications end to end: store change -> Graph-shaped POST to a real receiver."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from m365sim.state import EmulatorState
from tests.helpers import Org
from tests.notifications.receiver import Hook
from tests.notifications.support import auth, inbox_subscription, subscribe

NOTIFICATION_KEYS = [
    "id",
    "subscriptionId",
    "subscriptionExpirationDateTime",
    "clientState",
    "changeType",
    "resource",
    "tenantId",
    "resourceData",
]


def delivery_log(http: httpx.Client, subscription_id: str) -> list[dict[str, Any]]:
    response = http.get("/_emulator/notifications", params={"subscription_id": subscription_id})
    assert response.status_code == 200
    entries: list[dict[str, Any]] = response.json()["value"]
    return entries


def wait_log(
    http: httpx.Client, subscription_id: str, result: str, count: int = 1, timeout: float = 5
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        entries = [e for e in delivery_log(http, subscription_id) if e["result"] == result]
        if len(entries) >= count:
            return entries
        if time.monotonic() > deadline:
            raise AssertionError(f"no {count}x {result!r} in {delivery_log(http, subscription_id)}")
        time.sleep(0.05)


def test_delivered_message_produces_a_graph_shaped_created_notification(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    target = hook(query="tenant=abc")
    sub = inbox_subscription(http, org, target, sim)
    msg = org.deliver(org.alice, subject="Invoice 4711")
    [note] = target.wait_for(1)
    assert list(note) == NOTIFICATION_KEYS
    assert note["subscriptionId"] == sub["id"]
    assert note["subscriptionExpirationDateTime"] == sub["expirationDateTime"]
    assert note["clientState"] == "secret-client-state"
    assert note["changeType"] == "created"
    assert note["tenantId"] == org.tenant.id
    resource = f"Users/{org.alice.id}/Messages/{msg.rest_id}"
    assert note["resource"] == resource
    assert note["resourceData"] == {
        "@odata.type": "#Microsoft.Graph.Message",
        "@odata.id": resource,
        "@odata.etag": f'W/"{msg.change_key}"',
        "id": msg.rest_id,
    }
    assert target.post_headers[0]["content-type"].startswith("application/json")
    assert target.post_queries == ["tenant=abc"]  # query strings are preserved on delivery
    [entry] = wait_log(http, sub["id"], "delivered")
    assert entry["url"] == target.url and entry["status"] == 202
    assert entry["change_type"] == "created" and entry["attempt"] == 0
    assert entry["latency_ms"] is not None


def test_immutable_ids_when_the_subscription_asked_for_them(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    target = hook()
    response = subscribe(
        http,
        org.app_token(),
        resource=f"users/{org.alice.id}/messages",
        url=target.url,
        sim=sim,
        headers={"Prefer": 'IdType="ImmutableId"'},
    )
    assert response.status_code == 201
    msg = org.deliver(org.alice)
    [note] = target.wait_for(1)
    assert note["resourceData"]["id"] == msg.immutable_id != msg.rest_id


def test_several_notifications_per_post_and_batch_cap(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    sim.config.delivery_coalesce_ms = 150
    target = hook()
    inbox_subscription(http, org, target, sim)
    subjects = [f"m{i}" for i in range(5)]
    for subject in subjects:
        org.deliver(org.alice, subject=subject)
    notes = target.wait_for(5)
    assert len(notes) == 5
    assert len(target.posts) < 5  # batched
    assert len({n["resourceData"]["id"] for n in notes}) == 5

    sim.config.delivery_batch_max = 2
    capped = hook()
    inbox_subscription(http, org, capped, sim)
    for subject in subjects:
        org.deliver(org.alice, subject=subject)
    capped.wait_for(5)
    assert all(len(post["value"]) <= 2 for post in capped.posts)
    assert len(capped.posts) >= 3


def test_one_post_can_carry_several_subscriptions(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    sim.config.delivery_coalesce_ms = 300
    target = hook()
    token = org.app_token()
    ids = set()
    for user in (org.alice, org.bob):
        response = subscribe(
            http, token, resource=f"users/{user.id}/messages", url=target.url, sim=sim
        )
        ids.add(response.json()["id"])
    org.deliver(org.alice)
    org.deliver(org.bob)
    notes = target.wait_for(2)
    assert {n["subscriptionId"] for n in notes} == ids
    assert len(target.posts) == 1


def test_folder_and_change_type_filters(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    token = org.app_token()
    inbox_created = hook()
    whole_mailbox = hook()
    assert subscribe(
        http,
        token,
        resource=f"users/{org.alice.id}/mailFolders('inbox')/messages",
        url=inbox_created.url,
        sim=sim,
        change_type="created",
    ).is_success
    assert subscribe(
        http, token, resource=f"users/{org.alice.id}/messages", url=whole_mailbox.url, sim=sim
    ).is_success
    in_archive = org.deliver(org.alice, folder="archive")
    in_inbox = org.deliver(org.alice)
    store = sim.store
    in_inbox.categories = ["Invoices"]
    store.update_message(org.tenant, org.alice.mailbox, in_inbox)
    seen = whole_mailbox.wait_for(3)
    assert [(n["changeType"], n["resourceData"]["id"]) for n in seen] == [
        ("created", in_archive.rest_id),
        ("created", in_inbox.rest_id),
        ("updated", in_inbox.rest_id),
    ]
    assert seen[2]["resourceData"]["@odata.etag"] == f'W/"{in_inbox.change_key}"'
    only = inbox_created.quiet(0.3)
    assert [(n["changeType"], n["resourceData"]["id"]) for n in only] == [
        ("created", in_inbox.rest_id)
    ]


def test_move_is_deleted_in_the_source_folder_with_the_old_id(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    inbox = hook()
    archive = hook()
    token = org.app_token()
    for folder, target in (("inbox", inbox), ("archive", archive)):
        assert subscribe(
            http,
            token,
            resource=f"users/{org.alice.id}/mailFolders('{folder}')/messages",
            url=target.url,
            sim=sim,
        ).is_success
    msg = org.deliver(org.alice)
    inbox.wait_for(1)
    old_id = msg.rest_id
    destination = org.alice.mailbox.folder("archive")
    assert destination is not None
    sim.store.move_message(org.tenant, org.alice.mailbox, msg, destination)
    deleted = inbox.wait_for(2)[1]
    assert (deleted["changeType"], deleted["resourceData"]["id"]) == ("deleted", old_id)
    [created] = archive.wait_for(1)
    assert created["changeType"] == "created"
    assert created["resourceData"]["id"] == msg.rest_id != old_id


def test_retries_after_5xx_until_delivered(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    target = hook(statuses=[500, 503])
    sub = inbox_subscription(http, org, target, sim)
    org.deliver(org.alice)
    [note] = target.wait_for(1)
    assert target.answered == [500, 503, 202]
    log = wait_log(http, sub["id"], "delivered")
    attempts = [
        (e["attempt"], e["result"], e["status"])
        for e in delivery_log(http, sub["id"])
        if e["kind"] == "change"
    ]
    assert attempts == [(0, "failed", 500), (1, "failed", 503), (2, "delivered", 202)]
    assert log[0]["notification_id"] == note["id"]


def test_gives_up_after_the_schedule_and_sends_missed(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    target = hook(statuses=[500, 500, 500, 500])
    lifecycle = hook()
    sub = inbox_subscription(http, org, target, sim, lifecycleNotificationUrl=lifecycle.url)
    org.deliver(org.alice)
    wait_log(http, sub["id"], "gave_up")
    assert target.answered == [500, 500, 500]  # first attempt + two retries (compressed)
    [missed] = lifecycle.wait_for(1)
    assert missed["lifecycleEvent"] == "missed"
    assert missed["subscriptionId"] == sub["id"]


def test_timeout_counts_as_failure_and_is_retried(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    sim.config.delivery_timeout = 0.3
    target = hook(delay=0.6)
    sub = inbox_subscription(http, org, target, sim)
    org.deliver(org.alice)
    timeouts = wait_log(http, sub["id"], "timeout")
    assert timeouts[0]["attempt"] == 0


def test_expired_or_deleted_subscriptions_stop_delivering(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    expiring = hook()
    inbox_subscription(http, org, expiring, sim, minutes=60)
    deleted = hook()
    sub = inbox_subscription(http, org, deleted, sim)
    gone = http.delete(f"/v1.0/subscriptions/{sub['id']}", headers=auth(org.app_token()))
    assert gone.status_code == 204
    sim.clock.advance(61 * 60)
    org.deliver(org.alice)
    assert expiring.quiet(0.3) == []
    assert deleted.quiet(0) == []


def test_notification_faults_drop_and_duplicate(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    dropped = hook()
    sub = inbox_subscription(http, org, dropped, sim)
    put = http.put("/_emulator/notification-faults", json={"drop_rate": 1.0, "seed": 7})
    assert put.status_code == 200 and put.json()["drop_rate"] == 1.0
    org.deliver(org.alice)
    wait_log(http, sub["id"], "dropped_by_fault")
    assert dropped.quiet(0.2) == []

    http.put("/_emulator/notification-faults", json={"duplicate_rate": 1.0, "seed": 7})
    doubled = hook()
    inbox_subscription(http, org, doubled, sim)
    org.deliver(org.alice)
    notes = doubled.wait_for(2)
    assert len(notes) == 2 and notes[0] == notes[1]  # same notification id: dedupe needed
    assert http.delete("/_emulator/notification-faults").json()["duplicate_rate"] == 0.0


def test_notification_faults_reorder_and_delay(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    sim.config.delivery_coalesce_ms = 150
    http.put("/_emulator/notification-faults", json={"reorder": True, "seed": 3})
    target = hook()
    inbox_subscription(http, org, target, sim)
    sent = [org.deliver(org.alice, subject=f"m{i}").rest_id for i in range(8)]
    received = [n["resourceData"]["id"] for n in target.wait_for(8)]
    assert sorted(received) == sorted(sent)
    assert received != sent

    http.put("/_emulator/notification-faults", json={"delay_ms": 400})
    slow = hook()
    inbox_subscription(http, org, slow, sim)
    started = time.monotonic()
    org.deliver(org.alice)
    slow.wait_for(1)
    assert slow.post_times[0] - started >= 0.4


def test_slow_endpoint_is_throttled_then_dropped(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    config = sim.config
    config.slow_threshold_ms = 50
    config.slow_endpoint_min_notifications = 2
    config.slow_endpoint_throttle_percent = 50
    config.slow_endpoint_drop_percent = 101  # throttle only, first
    config.slow_endpoint_delay_minutes = 0.005  # 0.3 s
    config.delivery_coalesce_ms = 10
    target = hook(delay=0.1)
    lifecycle = hook()
    sub = inbox_subscription(http, org, target, sim, lifecycleNotificationUrl=lifecycle.url)
    for _ in range(2):
        org.deliver(org.alice)
        target.wait_for(len(target.notifications()) + 1)
    org.deliver(org.alice)
    target.wait_for(3)
    entries = wait_log(http, sub["id"], "delivered", count=3)
    assert [e["throttled"] for e in entries] == [False, False, True]

    config.slow_endpoint_drop_percent = 90
    org.deliver(org.alice)
    wait_log(http, sub["id"], "dropped_slow_endpoint")
    [missed] = lifecycle.wait_for(1)
    assert missed["lifecycleEvent"] == "missed"
    assert len(target.quiet(0.2)) == 3

    # counters reset when the window (emulator clock) has passed
    sim.clock.advance(config.slow_endpoint_window_minutes * 60)
    org.deliver(org.alice)
    target.wait_for(4)


def test_graph_patch_and_move_produce_updated_then_deleted_and_created(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    target = hook()
    response = subscribe(
        http,
        org.app_token(),
        resource=f"users/{org.alice.id}/messages",
        url=target.url,
        sim=sim,
        headers={"Prefer": 'IdType="ImmutableId"'},
    )
    assert response.status_code == 201
    msg = org.deliver(org.alice)
    target.wait_for(1)
    token = org.app_token()
    base = f"/v1.0/users/{org.alice.id}/messages/{msg.immutable_id}"
    patched = http.patch(base, json={"categories": ["Invoices"]}, headers=auth(token))
    assert patched.status_code == 200, patched.text
    moved = http.post(f"{base}/move", json={"destinationId": "archive"}, headers=auth(token))
    assert moved.status_code == 201, moved.text
    notes = target.wait_for(4)
    assert [n["changeType"] for n in notes] == ["created", "updated", "deleted", "created"]
    # immutable ids: the same id throughout, also across the move
    assert {n["resourceData"]["id"] for n in notes} == {msg.immutable_id}
