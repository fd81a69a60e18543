"""The emulator's clock.

Every time the emulator reads goes through :class:`Clock`, so tests can move time forward
(token expiry, refresh-token inactivity, subscription expiry) without waiting.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta


class Clock:
    """Wall-clock time plus an offset that only ever grows."""

    def __init__(self) -> None:
        self._offset = 0.0

    def time(self) -> float:
        """Seconds since the epoch, as the emulator sees it."""
        return time.time() + self._offset

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.time(), tz=UTC)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self._offset += seconds

    @property
    def offset(self) -> float:
        return self._offset

    def reset(self) -> None:
        """Back to wall-clock time (``/_emulator/reset``, and between tests)."""
        self._offset = 0.0


def iso(dt: datetime) -> str:
    """Graph's date-time form: ``2024-08-12T08:43:22Z`` (UTC, whole seconds)."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso7(dt: datetime) -> str:
    """Graph's seven-digit fractional form, used by subscriptions: ``...T11:00:00.0000000Z``."""
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond:06d}0Z"


def parse_iso(value: str) -> datetime:
    """Parse an ISO 8601 date-time as Graph accepts it (``Z`` or offset, 7 fraction digits)."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    if "." in text:
        head, _, rest = text.partition(".")
        digits = ""
        while rest and rest[0].isdigit():
            digits += rest[0]
            rest = rest[1:]
        text = f"{head}.{(digits + '000000')[:6]}{rest}"
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def ago(clock: Clock, **kwargs: float) -> datetime:
    return clock.now() - timedelta(**kwargs)
