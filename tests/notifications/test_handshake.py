"""The validation handshake (graph.md 4.2): what the endpoint receives and how failures answer."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from m365sim.state import EmulatorState
from tests.helpers import Org
from tests.notifications.receiver import Hook, Receiver
from tests.notifications.support import auth, subscribe

FAILED_200 = (
    "Subscription validation request failed. Notification endpoint must respond with 200 OK "
    "to validation request."
)
MISMATCH = (
    "Subscription validation request failed. Response must exactly match validationToken "
    "query parameter."
)


def _create(
    http: httpx.Client, org: Org, sim: EmulatorState, url: str, **extra: Any
) -> httpx.Response:
    return subscribe(
        http,
        org.app_token(),
        resource=f"users/{org.alice.id}/mailFolders('inbox')/messages",
        url=url,
        sim=sim,
        **extra,
    )


def _subscription_count(http: httpx.Client, org: Org) -> int:
    return len(http.get("/v1.0/subscriptions", headers=auth(org.app_token())).json()["value"])


def test_endpoint_receives_a_decoded_opaque_token_as_text_plain(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    target = hook(query="tenant=abc&x=1")
    response = _create(http, org, sim, target.url)
    assert response.status_code == 201
    [token] = target.validations
    # Graph's token is text with spaces and colons: it only matches when URL-decoded
    assert token.startswith("Validation: Testing client application reachability")
    assert " " in token
    assert target.validation_content_types == ["text/plain; charset=utf-8"]


def test_non_200_answer_fails_and_creates_nothing(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    for status in (202, 404, 500):
        target = hook(validation_status=status)
        response = _create(http, org, sim, target.url)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "InvalidRequest"
        assert response.json()["error"]["message"] == FAILED_200
        assert len(target.validations) == 1
    assert _subscription_count(http, org) == 0


def test_wrong_echo_or_json_answer_fails(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    for mode in ("wrong", "json"):
        response = _create(http, org, sim, hook(validation=mode).url)
        assert response.status_code == 400
        assert response.json()["error"]["message"] == MISMATCH
    assert _subscription_count(http, org) == 0


def test_slow_answer_times_out(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    sim.config.validation_timeout = 0.3
    response = _create(http, org, sim, hook(validation_delay=1.0).url)
    assert response.status_code == 400
    assert response.json()["error"] == {
        **response.json()["error"],
        "code": "InvalidRequest",
        "message": "Subscription validation request timed out.",
    }
    assert _subscription_count(http, org) == 0


def test_unreachable_endpoint_fails(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    response = _create(http, org, sim, f"http://127.0.0.1:{port}/nobody-listens")
    assert response.status_code == 400
    assert response.json()["error"]["message"] == FAILED_200


def test_lifecycle_url_is_validated_too(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    target = hook()
    lifecycle = hook(validation_status=500)
    response = _create(http, org, sim, target.url, lifecycleNotificationUrl=lifecycle.url)
    assert response.status_code == 400
    assert len(target.validations) == 1 and len(lifecycle.validations) == 1
    assert _subscription_count(http, org) == 0


def test_https_endpoint_needs_a_trusted_certificate(
    http: httpx.Client,
    org: Org,
    sim: EmulatorState,
    tls_receiver: Receiver,
    ca_file: Path,
    notifier: object,
) -> None:
    target = tls_receiver.hook(host="localhost")
    # the emulator's local CA is not in the system trust store: the TLS handshake fails
    untrusted = _create(http, org, sim, target.url)
    assert untrusted.status_code == 400
    assert untrusted.json()["error"]["message"] == FAILED_200
    sim.config.notification_ca_file = str(ca_file)
    trusted = _create(http, org, sim, target.url)
    assert trusted.status_code == 201, trusted.text
    assert len(target.validations) == 1
