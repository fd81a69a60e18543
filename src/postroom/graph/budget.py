"""Per (application, mailbox) request budget shared by all work in one process.

Outlook throttles each (app, mailbox) pair at 4 concurrent requests and 10,000 requests per 10
minutes (graph.md 5). Staying inside that is cheaper than recovering from 429s, so every
request first takes a slot here: at most ``concurrency`` in flight, and no more than
``per_window`` started in any ``window`` seconds (callers wait, they are not refused).

A request leaves the window :data:`MARGIN` of the window (at most a second) after Graph would
let it go: Graph counts a request when it arrives, the budget when it starts, and a request
that arrives faster than the one it replaces would otherwise be the window's one too many
(a 429, and the whole mailbox paused for its ``Retry-After``). Measured on the backfill
benchmark (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

BudgetKey = tuple[str, str]  # (application id, mailbox id)
MARGIN = 0.02  # of the window, at most MAX_MARGIN seconds
MAX_MARGIN = 1.0


class _Bucket:
    def __init__(self, concurrency: int) -> None:
        self.semaphore = asyncio.Semaphore(concurrency)
        self.started: deque[float] = deque()
        self.lock = asyncio.Lock()
        # a Retry-After from Graph pauses the whole mailbox, not only the request that got it
        self.paused_until = 0.0


class MailboxBudget:
    def __init__(
        self,
        *,
        concurrency: int = 4,
        per_window: int = 10_000,
        window: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.concurrency = concurrency
        self.per_window = per_window
        self.window = window
        self._clock = clock
        self._sleep = sleep
        self._buckets: dict[BudgetKey, _Bucket] = {}

    @property
    def _span(self) -> float:
        """How long a start counts against the window: the window and the margin."""
        return self.window + min(self.window * MARGIN, MAX_MARGIN)

    def _bucket(self, key: BudgetKey) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self.concurrency)
        return bucket

    def pause(self, key: BudgetKey, seconds: float) -> None:
        """Hold every request for this mailbox for ``seconds`` (after a 429)."""
        bucket = self._bucket(key)
        bucket.paused_until = max(bucket.paused_until, self._clock() + seconds)

    def in_flight(self, key: BudgetKey) -> int:
        bucket = self._buckets.get(key)
        if bucket is None:
            return 0
        return self.concurrency - bucket.semaphore._value

    @asynccontextmanager
    async def slot(self, key: BudgetKey) -> AsyncIterator[None]:
        bucket = self._bucket(key)
        async with bucket.semaphore:
            async with bucket.lock:
                while True:
                    now = self._clock()
                    wait = bucket.paused_until - now
                    while bucket.started and bucket.started[0] <= now - self._span:
                        bucket.started.popleft()
                    if len(bucket.started) >= self.per_window:
                        wait = max(wait, bucket.started[0] + self._span - now)
                    if wait <= 0:
                        break
                    await self._sleep(wait)
                bucket.started.append(self._clock())
            yield


DEFAULT_BUDGET = MailboxBudget()
