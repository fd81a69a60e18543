"""Fault injection, configurable per endpoint and method through the control API.

A :class:`FaultRule` matches requests by method and a path pattern (a regular expression searched
in the Graph path, e.g. ``/messages/[^/]+/move$``) and injects, with a probability ``rate`` or for
the next ``count`` matching requests: an error status (429, 500, 502, 503, 504, optionally with
``Retry-After``), added latency, or a dropped connection (``disconnect``: the response is cut
after it starts, which clients see as a connection error). Rules apply to batch items too.
Randomness comes from a seeded generator so a test run is repeatable.
"""

from __future__ import annotations

import random
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from m365sim import ids

FAULT_STATUSES = {
    429: ("TooManyRequests", "Please retry again later."),
    500: ("generalException", "An internal server error occurred. The operation failed."),
    502: ("badGateway", "The server, while acting as a gateway, received an invalid response."),
    503: ("serviceNotAvailable", "The service is temporarily unavailable. Please retry later."),
    504: ("gatewayTimeout", "The gateway did not receive a timely response."),
}


RULE_FIELDS = (
    "path",
    "method",
    "status",
    "rate",
    "count",
    "latency_ms",
    "disconnect",
    "retry_after",
)


@dataclass
class FaultRule:
    id: str
    path: str = ".*"
    method: str = "*"
    status: int | None = None
    rate: float = 1.0
    count: int | None = None  # inject into the next N matches only (then the rule retires)
    latency_ms: int = 0
    disconnect: bool = False
    retry_after: float | None = None
    hits: int = 0
    _pattern: re.Pattern[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._pattern = re.compile(self.path, re.IGNORECASE)

    def matches(self, method: str, path: str) -> bool:
        if self.method != "*" and self.method.upper() != method.upper():
            return False
        return self._pattern.search(path) is not None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


@dataclass
class Injection:
    status: int | None
    latency_ms: int
    disconnect: bool
    retry_after: float | None


class Faults:
    def __init__(self, seed: int = 0) -> None:
        self._rules: list[FaultRule] = []
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def add(self, spec: dict[str, Any]) -> FaultRule:
        """Validate a rule spec (from the control API) and add it; bad specs raise ValueError."""
        unknown = set(spec) - set(RULE_FIELDS)
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}; known: {list(RULE_FIELDS)}")
        path = spec.get("path", ".*")
        if not isinstance(path, str):
            raise ValueError("path must be a string (a regular expression)")
        method = spec.get("method", "*")
        if not isinstance(method, str) or not (method == "*" or method.isalpha()):
            raise ValueError('method must be an HTTP method name or "*"')
        status = spec.get("status")
        if status is not None and (
            isinstance(status, bool) or not isinstance(status, int) or status not in FAULT_STATUSES
        ):
            raise ValueError(f"status must be one of {sorted(FAULT_STATUSES)}")
        rate = spec.get("rate", 1.0)
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be a number between 0 and 1")
        count = spec.get("count")
        if count is not None and (
            isinstance(count, bool) or not isinstance(count, int) or count < 1
        ):
            raise ValueError("count must be a positive integer")
        latency_ms = spec.get("latency_ms", 0)
        if isinstance(latency_ms, bool) or not isinstance(latency_ms, int) or latency_ms < 0:
            raise ValueError("latency_ms must be a non-negative integer")
        disconnect = spec.get("disconnect", False)
        if not isinstance(disconnect, bool):
            raise ValueError("disconnect must be true or false")
        retry_after = spec.get("retry_after")
        if retry_after is not None and (
            isinstance(retry_after, bool)
            or not isinstance(retry_after, int | float)
            or retry_after < 0
        ):
            raise ValueError("retry_after must be a non-negative number of seconds")
        if status is None and not latency_ms and not disconnect:
            raise ValueError("a fault rule needs status, latency_ms or disconnect")
        try:
            rule = FaultRule(
                id=ids.opaque(8),
                path=path,
                method=method.upper(),
                status=status,
                rate=float(rate),
                count=count,
                latency_ms=latency_ms,
                disconnect=disconnect,
                retry_after=retry_after,
            )
        except re.error as exc:
            raise ValueError(f"path is not a valid regular expression: {exc}") from exc
        with self._lock:
            self._rules.append(rule)
        return rule

    def remove(self, rule_id: str) -> bool:
        with self._lock:
            before = len(self._rules)
            self._rules = [r for r in self._rules if r.id != rule_id]
            return len(self._rules) != before

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def seed(self, value: int) -> None:
        self._random.seed(value)

    def rules(self) -> list[FaultRule]:
        return list(self._rules)

    def pick(self, method: str, path: str) -> Injection | None:
        """The fault to inject into this request, if any (first matching rule that fires)."""
        if not self._rules:
            return None
        with self._lock:
            for rule in self._rules:
                if not rule.matches(method, path):
                    continue
                if self._random.random() >= rule.rate:
                    continue
                rule.hits += 1
                if rule.count is not None:
                    rule.count -= 1
                    if rule.count <= 0:
                        self._rules.remove(rule)
                return Injection(rule.status, rule.latency_ms, rule.disconnect, rule.retry_after)
        return None
