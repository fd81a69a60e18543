"""Outlook's per (application, mailbox) limits: 10,000 requests per 10 minutes, 4 at a time.

Every Graph request that targets a mailbox (and every item of a ``$batch``) is counted here,
keyed by (client id, mailbox id) as Exchange evaluates it (graph.md 5):

* over ``mailbox_requests_per_window`` requests in the sliding ``mailbox_window_seconds`` the
  caller gets 429 ``TooManyRequests`` "Please retry again later." with ``Retry-After`` (seconds
  until enough of the window has drained, at least ``throttle_retry_after``) and Graph's
  ``innerError`` ``{"code": "429", "message": "Please retry after", "status": "429"}``;
* a request while ``mailbox_concurrency`` others are in flight gets 429 ``ApplicationThrottled``
  "Application is over its MailboxConcurrency limit." with ``Retry-After: 1``.

Usage keeps accruing while throttled (refused requests are counted too), as Microsoft
documents: hammering makes it worse and ``Retry-After`` grows. One mailbox's throttling never
affects another's, nor another application's use of the same mailbox. The 15 MB per 30 seconds
upload limit is not modelled. Windows use the emulator clock, so advancing it drains them.
"""

from __future__ import annotations

import threading
from collections import deque

from m365sim.clock import Clock
from m365sim.config import EmulatorConfig
from m365sim.errors import GraphError

Key = tuple[str, str]  # (client id, mailbox id)


class Throttle:
    def __init__(self, config: EmulatorConfig, clock: Clock) -> None:
        self._config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[Key, deque[float]] = {}
        self._in_flight: dict[Key, int] = {}
        self.throttled: dict[Key, int] = {}

    def acquire(self, key: Key) -> None:
        """Count one request and take a concurrency slot, or raise a 429 GraphError."""
        config = self._config
        if not config.throttling_enabled:
            with self._lock:
                self._in_flight[key] = self._in_flight.get(key, 0) + 1
            return
        now = self._clock.time()
        with self._lock:
            window = self._windows.setdefault(key, deque())
            horizon = now - config.mailbox_window_seconds
            while window and window[0] <= horizon:
                window.popleft()
            window.append(now)  # usage accrues even when the request is refused
            if len(window) > config.mailbox_requests_per_window:
                self.throttled[key] = self.throttled.get(key, 0) + 1
                # Retry-After: until enough of the window has drained, at least the default.
                excess = len(window) - config.mailbox_requests_per_window
                drain_at = window[min(excess, len(window) - 1)] + config.mailbox_window_seconds
                retry_after = max(config.throttle_retry_after, drain_at - now)
                raise GraphError(
                    429,
                    "TooManyRequests",
                    "Please retry again later.",
                    headers={"Retry-After": _fmt(retry_after)},
                    inner={"code": "429", "message": "Please retry after", "status": "429"},
                )
            in_flight = self._in_flight.get(key, 0)
            if in_flight >= config.mailbox_concurrency:
                self.throttled[key] = self.throttled.get(key, 0) + 1
                raise GraphError(
                    429,
                    "ApplicationThrottled",
                    "Application is over its MailboxConcurrency limit.",
                    headers={"Retry-After": _fmt(1.0)},
                )
            self._in_flight[key] = in_flight + 1

    def release(self, key: Key) -> None:
        with self._lock:
            remaining = self._in_flight.get(key, 0) - 1
            if remaining > 0:
                self._in_flight[key] = remaining
            else:
                self._in_flight.pop(key, None)

    def in_flight(self, key: Key) -> int:
        return self._in_flight.get(key, 0)

    def usage(self, key: Key) -> int:
        with self._lock:
            window = self._windows.get(key)
            if not window:
                return 0
            horizon = self._clock.time() - self._config.mailbox_window_seconds
            return sum(1 for t in window if t > horizon)

    def reset(self) -> None:
        with self._lock:
            self._windows.clear()
            self.throttled.clear()


def _fmt(seconds: float) -> str:
    """Retry-After as Graph writes it: whole seconds when whole, else up to 3 decimals."""
    if float(seconds).is_integer():
        return str(int(seconds))
    return f"{seconds:.3f}".rstrip("0").rstrip(".")
