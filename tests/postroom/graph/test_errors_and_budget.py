"""Error translation and the mailbox budget, as plain data and plain asyncio."""

from __future__ import annotations

import asyncio

import pytest

from postroom.graph.budget import MailboxBudget
from postroom.graph.errors import (
    AccessDenied,
    AuthFailed,
    Conflict,
    NotFound,
    PermanentError,
    SyncStateExpired,
    Throttled,
    TransientError,
    from_response,
)


def _body(code: str, message: str = "m") -> dict[str, object]:
    return {"error": {"code": code, "message": message, "innerError": {"request-id": "r1"}}}


@pytest.mark.parametrize(
    ("status", "code", "headers", "kind"),
    [
        (429, "ApplicationThrottled", {"retry-after": "2.5"}, Throttled),
        (503, "serviceNotAvailable", {"retry-after": "7"}, Throttled),
        (503, "serviceNotAvailable", {}, TransientError),
        (504, "gatewayTimeout", {}, TransientError),
        (401, "InvalidAuthenticationToken", {}, AuthFailed),
        (403, "ErrorAccessDenied", {}, AccessDenied),
        (404, "ErrorItemNotFound", {}, NotFound),
        (409, "ErrorFolderExists", {}, Conflict),
        (400, "ErrorFolderExists", {}, Conflict),
        (410, "SyncStateNotFound", {}, SyncStateExpired),
        (400, "BadRequest", {}, PermanentError),
    ],
)
def test_from_response_maps_each_failure(
    status: int, code: str, headers: dict[str, str], kind: type
) -> None:
    error = from_response(status, _body(code), headers)
    assert type(error) is kind
    assert error.code == code
    assert error.request_id == "r1"


def test_throttled_carries_retry_after_and_is_not_permanent() -> None:
    error = from_response(429, _body("TooManyRequests"), {"retry-after": "2.128"})
    assert isinstance(error, Throttled)
    assert error.retry_after == pytest.approx(2.128)
    assert not error.permanent


def test_policy_denial_is_recognised() -> None:
    error = from_response(403, _body("ErrorAccessDenied", "Access to OData is disabled."), {})
    assert isinstance(error, AccessDenied) and error.by_policy
    other = from_response(403, _body("ErrorAccessDenied", "Access is denied."), {})
    assert isinstance(other, AccessDenied) and not other.by_policy


def test_non_json_error_body_still_translates() -> None:
    error = from_response(502, "<html>bad gateway</html>", {})
    assert isinstance(error, TransientError) and error.status == 502


def test_budget_never_exceeds_four_in_flight_per_mailbox() -> None:
    budget = MailboxBudget(concurrency=4)
    peak = {"a": 0, "b": 0}
    now = {"a": 0, "b": 0}

    async def work(mailbox: str) -> None:
        async with budget.slot(("app", mailbox)):
            now[mailbox] += 1
            peak[mailbox] = max(peak[mailbox], now[mailbox])
            await asyncio.sleep(0.01)
            now[mailbox] -= 1

    async def main() -> None:
        await asyncio.gather(*(work("a") for _ in range(20)), *(work("b") for _ in range(6)))

    asyncio.run(main())
    assert peak == {"a": 4, "b": 4}


def test_budget_waits_when_the_window_is_spent() -> None:
    fake_now = [0.0]
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        fake_now[0] += seconds

    budget = MailboxBudget(per_window=3, window=10.0, clock=lambda: fake_now[0], sleep=fake_sleep)

    async def main() -> None:
        for _ in range(4):
            async with budget.slot(("app", "m")):
                pass

    asyncio.run(main())
    # the window, and a margin for Graph counting arrivals (2 %, at most 1 s)
    assert slept == [pytest.approx(10.2)]
    assert MailboxBudget()._span == pytest.approx(601.0)


def test_pause_holds_the_mailbox_after_a_429() -> None:
    fake_now = [0.0]
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        fake_now[0] += seconds

    budget = MailboxBudget(clock=lambda: fake_now[0], sleep=fake_sleep)
    budget.pause(("app", "m"), 2.5)

    async def main() -> None:
        async with budget.slot(("app", "m")):
            pass
        async with budget.slot(("app", "other")):
            pass

    asyncio.run(main())
    assert slept == [pytest.approx(2.5)]
