"""Fault injection through the control API, observed by a real client over HTTPS."""

from __future__ import annotations

import time

import httpx
import pytest

from m365sim.state import EmulatorState
from tests.helpers import Org


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _add(http: httpx.Client, **spec: object) -> dict[str, object]:
    response = http.post("/_emulator/faults", json=spec)
    assert response.status_code == 201, response.text
    rule: dict[str, object] = response.json()
    return rule


def test_status_for_the_next_n_requests_with_retry_after(
    http: httpx.Client, org: Org, sim: EmulatorState
) -> None:
    rule = _add(http, path="^/me$", method="GET", status=503, count=2, retry_after=1.5)
    assert rule["hits"] == 0
    token = org.token(org.alice)
    first, second, third = (http.get("/v1.0/me", headers=_auth(token)) for _ in range(3))
    for response in (first, second):
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1.5"
        error = response.json()["error"]
        assert error["code"] == "serviceNotAvailable"
        assert error["innerError"]["request-id"] == response.headers["request-id"]
    assert third.status_code == 200
    assert http.get("/_emulator/faults").json()["value"] == []  # the rule retired


def test_rate_is_seeded_and_repeatable(http: httpx.Client, org: Org, sim: EmulatorState) -> None:
    token = org.token(org.alice)

    def pattern() -> list[int]:
        _add(http, path="^/me$", status=500, rate=0.5, seed=42)
        statuses = [http.get("/v1.0/me", headers=_auth(token)).status_code for _ in range(30)]
        assert http.delete("/_emulator/faults").json() == {"removed": 1}
        return statuses

    first = pattern()
    assert 5 < first.count(500) < 25
    assert set(first) == {200, 500}
    assert pattern() == first  # same seed, same faults


def test_latency(http: httpx.Client, org: Org, sim: EmulatorState) -> None:
    _add(http, path="^/me$", latency_ms=300)
    started = time.monotonic()
    response = http.get("/v1.0/me", headers=_auth(org.token(org.alice)))
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.3


def test_disconnect_is_a_connection_error_for_the_client(
    http: httpx.Client, org: Org, sim: EmulatorState
) -> None:
    _add(http, path="^/me$", disconnect=True, count=1)
    token = org.token(org.alice)
    with pytest.raises(httpx.TransportError):
        http.get("/v1.0/me", headers=_auth(token))
    assert http.get("/v1.0/me", headers=_auth(token)).status_code == 200


def test_rules_match_by_method_and_path(http: httpx.Client, org: Org, sim: EmulatorState) -> None:
    _add(http, path="/mailFolders/inbox$", method="get", status=502)
    token = org.app_token()
    inbox = http.get(f"/v1.0/users/{org.alice.id}/mailFolders/inbox", headers=_auth(token))
    assert inbox.status_code == 502
    assert inbox.json()["error"]["code"] == "badGateway"
    # other paths and other methods are untouched
    folders = http.get(f"/v1.0/users/{org.alice.id}/mailFolders", headers=_auth(token))
    assert folders.status_code == 200
    assert http.get("/v1.0/me", headers=_auth(org.token(org.alice))).status_code == 200
    listed = http.get("/_emulator/faults").json()["value"]
    assert [(r["method"], r["status"], r["hits"]) for r in listed] == [("GET", 502, 1)]


def test_remove_one_rule_or_all(http: httpx.Client, sim: EmulatorState) -> None:
    first = _add(http, path="^/a$", status=500)
    _add(http, path="^/b$", status=500)
    assert http.delete(f"/_emulator/faults/{first['id']}").status_code == 204
    assert http.delete(f"/_emulator/faults/{first['id']}").status_code == 404
    assert [r["path"] for r in http.get("/_emulator/faults").json()["value"]] == ["^/b$"]
    assert http.delete("/_emulator/faults").json() == {"removed": 1}


@pytest.mark.parametrize(
    "spec",
    [
        {"path": "^/me$", "status": 418},
        {"path": "^/me$", "status": "500"},
        {"path": "^/me$", "status": 500, "rate": 2},
        {"path": "^/me$", "status": 500, "count": 0},
        {"path": "^/me$", "latency_ms": "slow"},
        {"path": "^/me$", "disconnect": "yes"},
        {"path": "(", "status": 500},
        {"path": "^/me$", "status": 500, "retry_after": "soon"},
        {"path": "^/me$", "status": 500, "method": "GE T"},
        {"path": "^/me$", "status": 500, "colour": "red"},
        {"path": "^/me$", "status": 500, "seed": "x"},
        {"path": "^/me$"},
    ],
)
def test_bad_fault_specs_are_400(
    http: httpx.Client, sim: EmulatorState, spec: dict[str, object]
) -> None:
    response = http.post("/_emulator/faults", json=spec)
    assert response.status_code == 400
    assert isinstance(response.json()["error"], str) and response.json()["error"]
    assert http.get("/_emulator/faults").json()["value"] == []


def test_non_object_bodies_are_400(http: httpx.Client, sim: EmulatorState) -> None:
    assert http.post("/_emulator/faults", content=b"[]").status_code == 400
    assert http.post("/_emulator/faults", content=b"{nope").status_code == 400
