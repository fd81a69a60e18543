"""Outlook throttling measured from the client side (graph.md 5): rate, concurrency, isolation."""

from __future__ import annotations

import asyncio
import ssl

import httpx

from m365sim.state import EmulatorState
from m365sim.tokens import issue_access_token
from tests.helpers import Org


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _inbox(user_id: str) -> str:
    return f"/v1.0/users/{user_id}/mailFolders/inbox"


def test_rate_limit_answers_429_with_retry_after_and_usage_keeps_accruing(
    http: httpx.Client, org: Org, sim: EmulatorState
) -> None:
    patched = http.patch("/_emulator/config", json={"mailbox_requests_per_window": 50})
    assert patched.status_code == 200
    token = org.app_token()
    statuses = []
    retry_afters = []
    for _ in range(60):
        response = http.get(_inbox(org.alice.id), headers=_auth(token))
        statuses.append(response.status_code)
        if response.status_code == 429:
            retry_afters.append(float(response.headers["Retry-After"]))
            error = response.json()["error"]
            assert error["code"] == "TooManyRequests"
            assert error["message"] == "Please retry again later."
            assert error["innerError"]["code"] == "429"
            assert error["innerError"]["request-id"]
    assert statuses == [200] * 50 + [429] * 10
    # until the oldest requests leave the 10-minute window
    assert all(0 < r <= sim.config.mailbox_window_seconds for r in retry_afters)
    assert sim.throttle.usage((org.app.client_id, org.alice.id)) == 60  # refused ones count
    assert sim.throttle.throttled[(org.app.client_id, org.alice.id)] == 10


def test_hammering_while_throttled_keeps_the_mailbox_throttled(
    http: httpx.Client, org: Org, sim: EmulatorState
) -> None:
    sim.config.mailbox_requests_per_window = 50
    window = sim.config.mailbox_window_seconds
    token = org.app_token()

    def burst(user_id: str, count: int) -> list[int]:
        return [http.get(_inbox(user_id), headers=_auth(token)).status_code for _ in range(count)]

    assert burst(org.alice.id, 50) == [200] * 50
    assert burst(org.bob.id, 50) == [200] * 50
    sim.clock.advance(window / 2)
    assert burst(org.alice.id, 10) == [429] * 10  # Alice's client keeps retrying...
    sim.clock.advance(window / 4)
    assert burst(org.alice.id, 45) == [429] * 45
    sim.clock.advance(window / 4)
    # ...so when the first 50 requests have left the window, the retries still fill it,
    [alice] = burst(org.alice.id, 1)
    assert alice == 429
    # while Bob's client, which waited, is served again
    assert burst(org.bob.id, 1) == [200]


def test_throttling_is_per_app_and_mailbox(
    http: httpx.Client, org: Org, sim: EmulatorState
) -> None:
    sim.config.mailbox_requests_per_window = 5
    token = org.app_token()
    for _ in range(5):
        assert http.get(_inbox(org.alice.id), headers=_auth(token)).status_code == 200
    assert http.get(_inbox(org.alice.id), headers=_auth(token)).status_code == 429
    # mailbox B is unaffected
    assert http.get(_inbox(org.bob.id), headers=_auth(token)).status_code == 200
    # another application on the same mailbox has its own budget
    other = sim.store.add_app(display_name="Other", home_tenant_id=org.tenant.id, redirect_uris=[])
    other_token = issue_access_token(
        sim.signing_key,
        now=sim.clock.time(),
        lifetime=3600,
        tenant_id=org.tenant.id,
        client_id=other.client_id,
        user_id=None,
        roles=["Mail.Read"],
    )
    assert http.get(_inbox(org.alice.id), headers=_auth(other_token)).status_code == 200


def test_window_drains_with_the_clock_and_reset_clears_it(
    http: httpx.Client, org: Org, sim: EmulatorState
) -> None:
    sim.config.mailbox_requests_per_window = 3
    token = org.app_token()
    for _ in range(4):
        http.get(_inbox(org.alice.id), headers=_auth(token))
    throttled = http.get(_inbox(org.alice.id), headers=_auth(token))
    assert throttled.status_code == 429
    sim.clock.advance(sim.config.mailbox_window_seconds)
    token = org.app_token()
    assert http.get(_inbox(org.alice.id), headers=_auth(token)).status_code == 200
    for _ in range(4):
        http.get(_inbox(org.alice.id), headers=_auth(token))
    assert http.get(_inbox(org.alice.id), headers=_auth(token)).status_code == 429
    assert http.post("/_emulator/throttle/reset").json() == {"reset": True}
    assert http.get(_inbox(org.alice.id), headers=_auth(token)).status_code == 200


def test_fifth_concurrent_request_gets_mailbox_concurrency_429(
    http: httpx.Client, org: Org, sim: EmulatorState, base_url: str, ssl_context: ssl.SSLContext
) -> None:
    # hold requests to the inbox in flight for a while
    rule = http.post(
        "/_emulator/faults",
        json={"path": "/mailFolders/inbox$", "method": "GET", "latency_ms": 700},
    )
    assert rule.status_code == 201
    token = org.app_token()

    async def burst() -> tuple[list[httpx.Response], httpx.Response]:
        async with httpx.AsyncClient(
            base_url=base_url, verify=ssl_context, trust_env=False, timeout=10
        ) as client:
            alice = [client.get(_inbox(org.alice.id), headers=_auth(token)) for _ in range(5)]
            bob = client.get(_inbox(org.bob.id), headers=_auth(token))
            *alice_done, bob_done = await asyncio.gather(*alice, bob)
            return list(alice_done), bob_done

    alice, bob = asyncio.run(burst())
    assert sorted(r.status_code for r in alice) == [200, 200, 200, 200, 429]
    [refused] = [r for r in alice if r.status_code == 429]
    assert refused.json()["error"]["code"] == "ApplicationThrottled"
    assert refused.json()["error"]["message"] == (
        "Application is over its MailboxConcurrency limit."
    )
    assert float(refused.headers["Retry-After"]) > 0
    assert bob.status_code == 200  # another mailbox's slots are separate


def test_throttling_can_be_switched_off(http: httpx.Client, org: Org, sim: EmulatorState) -> None:
    sim.config.mailbox_requests_per_window = 2
    sim.config.throttling_enabled = False
    token = org.app_token()
    statuses = {http.get(_inbox(org.alice.id), headers=_auth(token)).status_code for _ in range(5)}
    assert statuses == {200}
