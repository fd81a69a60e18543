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
        allowed = {
            "path",
            "method",
            "status",
            "rate",
            "count",
            "latency_ms",
            "disconnect",
            "retry_after",
        }
        unknown = set(spec) - allowed
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        status = spec.get("status")
        if status is not None and status not in FAULT_STATUSES:
            raise ValueError(f"status must be one of {sorted(FAULT_STATUSES)}")
        rate = float(spec.get("rate", 1.0))
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be between 0 and 1")
        count = spec.get("count")
        if count is not None and (not isinstance(count, int) or count < 1):
            raise ValueError("count must be a positive integer")
        try:
            rule = FaultRule(
                id=ids.opaque(8),
                path=str(spec.get("path", ".*")),
                method=str(spec.get("method", "*")),
                status=status,
                rate=rate,
                count=count,
                latency_ms=int(spec.get("latency_ms", 0)),
                disconnect=bool(spec.get("disconnect", False)),
                retry_after=spec.get("retry_after"),
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
