"""Helpers for change-notification tests: creating subscriptions over HTTPS."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from m365sim.state import EmulatorState
from tests.helpers import Org
from tests.notifications.receiver import Hook


def expiry(sim: EmulatorState, minutes: float = 120) -> str:
    """An expirationDateTime ``minutes`` ahead of the emulator's clock."""
    return (sim.clock.now() + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def auth(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


def subscribe(
    http: httpx.Client,
    token: str,
    *,
    resource: str,
    url: str,
    sim: EmulatorState,
    change_type: str = "created,updated,deleted",
    minutes: float = 120,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> httpx.Response:
    body: dict[str, Any] = {
        "changeType": change_type,
        "notificationUrl": url,
        "resource": resource,
        "expirationDateTime": expiry(sim, minutes),
        "clientState": "secret-client-state",
    }
    body.update(extra)
    return http.post("/v1.0/subscriptions", json=body, headers=auth(token, **(headers or {})))


def inbox_subscription(
    http: httpx.Client, org: Org, hook: Hook, sim: EmulatorState, **extra: Any
) -> dict[str, Any]:
    """An app-only subscription on Alice's inbox, asserted to be created."""
    response = subscribe(
        http,
        org.app_token(),
        resource=f"users/{org.alice.id}/mailFolders('inbox')/messages",
        url=hook.url,
        sim=sim,
        **extra,
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body
