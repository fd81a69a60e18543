"""Control API audits: request counters, throttled counts, the request log, outbound mail and
the deletion audit."""

from __future__ import annotations

import httpx

from m365sim.state import EmulatorState
from m365sim.store import OutboundMail
from tests.helpers import Org


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_counters_count_graph_requests_per_mailbox_and_endpoint(
    http: httpx.Client, org: Org
) -> None:
    token = org.token(org.alice)
    for _ in range(3):
        assert http.get("/v1.0/me/mailFolders/inbox/messages", headers=_auth(token)).is_success
    counters = http.get(f"/_emulator/counters?mailbox={org.alice.user_principal_name}").json()
    assert counters["total"] == 3
    assert counters["byMailbox"] == {org.alice.id: 3}
    assert counters["value"] == [
        {
            "mailboxId": org.alice.id,
            "method": "GET",
            "endpoint": "GET /users/{id}/mailFolders/{folder}/messages",
            "count": 3,
        }
    ]
    everything = http.get("/_emulator/counters").json()
    assert everything["total"] >= 3

    log = http.get(f"/_emulator/requests?mailbox={org.alice.id}&limit=2").json()["value"]
    assert len(log) == 2
    assert all(r["mailboxId"] == org.alice.id and r["status"] == 200 for r in log)
    assert log[0]["clientId"] == org.app.client_id and log[0]["timeIso"].endswith("Z")
    assert http.get("/_emulator/requests?limit=0").status_code == 400
    assert http.get("/_emulator/counters?mailbox=nobody@x.test").status_code == 404


def test_throttled_requests_are_counted(http: httpx.Client, org: Org, sim: EmulatorState) -> None:
    sim.config.mailbox_requests_per_window = 2
    token = org.app_token()
    statuses = [
        http.get(
            f"/v1.0/users/{org.bob.id}/mailFolders/inbox/messages", headers=_auth(token)
        ).status_code
        for _ in range(4)
    ]
    assert statuses == [200, 200, 429, 429]
    counters = http.get(f"/_emulator/counters?mailbox={org.bob.id}").json()
    assert counters["throttled"] == [
        {"clientId": org.app.client_id, "mailboxId": org.bob.id, "count": 2}
    ]
    assert counters["throttledTotal"] == 2


def test_counters_can_be_cleared(http: httpx.Client, org: Org) -> None:
    http.get("/v1.0/me", headers=_auth(org.token(org.alice)))
    assert http.delete("/_emulator/counters").status_code == 204
    assert http.get("/_emulator/counters").json()["total"] == 0
    assert http.get("/_emulator/requests").json()["value"] == []


def test_outbound_and_deletions_are_listed(
    http: httpx.Client, org: Org, sim: EmulatorState
) -> None:
    store = sim.store
    msg = org.deliver(org.alice, subject="Invoice 12")
    with store.lock:
        store.outbound.append(
            OutboundMail(
                time=store.clock.now(),
                tenant_id=org.tenant.id,
                from_mailbox=org.alice.id,
                kind="forward",
                to=["ap@fabrikam.test"],
                subject="FW: Invoice 12",
                comment="Please pay",
                source_message_id=msg.immutable_id,
                internal=False,
            )
        )
        store.record_deletion(org.tenant, org.alice.mailbox, msg.immutable_id, "delete", None)
    outbound = http.get(f"/_emulator/outbound?mailbox={org.alice.user_principal_name}").json()
    assert outbound["value"] == [
        {
            "time": outbound["value"][0]["time"],
            "tenantId": org.tenant.id,
            "fromMailbox": org.alice.id,
            "kind": "forward",
            "to": ["ap@fabrikam.test"],
            "subject": "FW: Invoice 12",
            "comment": "Please pay",
            "sourceMessageId": msg.immutable_id,
            "internal": False,
        }
    ]
    assert http.get(f"/_emulator/outbound?mailbox={org.bob.id}").json()["value"] == []
    deletions = http.get(f"/_emulator/deletions?mailbox={org.alice.id}").json()["value"]
    assert [(d["messageId"], d["action"], d["clientId"]) for d in deletions] == [
        (msg.immutable_id, "delete", None)
    ]
