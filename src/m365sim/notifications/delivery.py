"""Delivering change and lifecycle notifications the way Microsoft Graph does (graph.md 4.2-4.5).

Flow
  The store calls :meth:`Notifier._on_change` for every message change, under the store's lock
  and possibly from any thread. The listener only looks up the mailbox's subscriptions, builds
  the notification JSON from the message as it is *now* (a move renews the REST id right after
  the ``deleted`` event), and hands the batch to the Notifier's event loop with
  ``call_soon_threadsafe``. Everything else happens on that loop.

Batching
  Notifications queue per destination URL. A flusher waits ``delivery_coalesce_ms`` and sends
  up to ``delivery_batch_max`` notifications per POST as ``{"value": [...]}`` — one POST may
  carry notifications of several subscriptions, as Graph's may. At most
  :data:`MAX_CONCURRENT_POSTS` POSTs are in flight per URL.

Retries (at-least-once)
  A POST counts as delivered on any 2xx within ``delivery_timeout`` (Graph: 3 s). Otherwise
  (other status, timeout, connection error) it is retried after each delay of
  ``delivery_retry_delays`` (Graph retries for up to four hours); after the last one the
  notifications are dropped and a ``missed`` lifecycle notification goes to subscriptions that
  have a ``lifecycleNotificationUrl``. Expired or deleted subscriptions stop receiving, also
  for retries already scheduled.

Slow endpoints (graph.md 4.5)
  Per URL, answers slower than ``slow_threshold_ms`` count as slow. Once
  ``slow_endpoint_min_notifications`` notifications were sent within the current window
  (``slow_endpoint_window_minutes`` of emulator time), an endpoint with at least
  ``slow_endpoint_throttle_percent`` slow answers is throttled (each POST waits
  ``slow_endpoint_delay_minutes`` of real time first) and at least
  ``slow_endpoint_drop_percent`` has its notifications dropped (and ``missed`` sent).

Lifecycle (graph.md 4.3-4.4)
  A periodic tick (``lifecycle_tick_seconds`` of real time, reading the emulator clock, so
  ``/_emulator/clock/advance`` makes things due) removes expired subscriptions, sends
  ``subscriptionRemoved`` (and removes the subscription) when the creator lost access to the
  mailbox, and sends ``reauthorizationRequired`` ``lifecycle_reauthorize_minutes`` before a
  subscription expires and when the creator's access token has expired. An unanswered token
  challenge pauses delivery after ``reauthorization_grace_minutes``; changes in the pause are
  lost, as Microsoft documents. ``POST /subscriptions/{id}/reauthorize`` or a renewing PATCH
  answer the challenge. The control API can send any lifecycle event on demand.

Validation handshake (graph.md 4.2)
  :meth:`Notifier.validate_endpoint` POSTs ``?validationToken=...`` (``text/plain``) and
  requires 200, ``text/plain`` and the decoded token as the body within
  ``validation_timeout``; failures become Graph's 400 ``InvalidRequest`` answers.

Faults (control API)
  :class:`NotificationFaults` drops, duplicates, delays and reorders notifications with a seeded
  random generator, to test a receiver's dedupe and resync logic.

Every attempt is written to the delivery log (:meth:`Notifier.log_entries`), which the control
API serves at ``GET /_emulator/notifications``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from m365sim.clock import iso7
from m365sim.errors import GraphError
from m365sim.notifications.registry import (
    LifecycleEvent,
    Subscription,
    change_notification,
    lifecycle_notification,
    registry,
    still_authorized,
)
from m365sim.state import EmulatorState
from m365sim.store import ChangeKind, Mailbox, Message, Tenant

log = logging.getLogger("m365sim.notifications")

MAX_CONCURRENT_POSTS = 8  # per notification URL
LOG_SIZE = 20_000
VALIDATION_TOKEN_PREFIX = "Validation: Testing client application reachability for subscription"

Kind = Literal["change", "lifecycle"]


@dataclass
class Outgoing:
    """One notification waiting for (re)delivery; ``payload`` is final when built."""

    url: str
    kind: Kind
    subscription_id: str
    event: str  # changeType, or the lifecycle event
    payload: dict[str, Any]
    resource_id: str | None = None

    @property
    def notification_id(self) -> str | None:
        value = self.payload.get("id")
        return value if isinstance(value, str) else None


@dataclass
class NotificationFaults:
    """Injected delivery faults, applied to each POST's first attempt."""

    drop_rate: float = 0.0
    duplicate_rate: float = 0.0
    delay_ms: int = 0
    reorder: bool = False
    seed: int = 0
    _random: random.Random = field(default_factory=lambda: random.Random(0), repr=False)

    FIELDS = ("drop_rate", "duplicate_rate", "delay_ms", "reorder", "seed")

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> NotificationFaults:
        """Validate a control-API spec; unknown fields or wrong types raise ValueError."""
        unknown = set(spec) - set(cls.FIELDS)
        if unknown:
            raise ValueError(f"unknown notification fault fields: {sorted(unknown)}")
        made = cls()
        for name in ("drop_rate", "duplicate_rate"):
            value = spec.get(name, 0.0)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number between 0 and 1")
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
            setattr(made, name, float(value))
        delay = spec.get("delay_ms", 0)
        if isinstance(delay, bool) or not isinstance(delay, int) or delay < 0:
            raise ValueError("delay_ms must be a non-negative integer")
        made.delay_ms = delay
        reorder = spec.get("reorder", False)
        if not isinstance(reorder, bool):
            raise ValueError("reorder must be true or false")
        made.reorder = reorder
        seed = spec.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError("seed must be an integer")
        made.seed = seed
        made._random = random.Random(seed)
        return made

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.FIELDS}

    @property
    def active(self) -> bool:
        return bool(self.drop_rate or self.duplicate_rate or self.delay_ms or self.reorder)

    def apply(self, items: list[Outgoing]) -> tuple[list[Outgoing], list[Outgoing], list[Outgoing]]:
        """(to send, dropped, duplicates to send again separately)."""
        send: list[Outgoing] = []
        dropped: list[Outgoing] = []
        duplicates: list[Outgoing] = []
        for item in items:
            if self.drop_rate and self._random.random() < self.drop_rate:
                dropped.append(item)
                continue
            send.append(item)
            if self.duplicate_rate and self._random.random() < self.duplicate_rate:
                duplicates.append(item)
        if self.reorder:
            self._random.shuffle(send)
        return send, dropped, duplicates

    def hold_back(self) -> bool:
        """With ``reorder``, hold some POSTs back so later ones overtake them."""
        return self.reorder and self._random.random() < 0.5


@dataclass
class _Endpoint:
    """Queue and slow-endpoint counters of one notification URL."""

    url: str
    pending: list[Outgoing] = field(default_factory=list)
    flushing: bool = False
    window_start: float = 0.0
    sent: int = 0
    slow: int = 0
    missed_notified: set[str] = field(default_factory=set)
    semaphore: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(MAX_CONCURRENT_POSTS)
    )

    def mode(self, state: EmulatorState) -> Literal["normal", "throttled", "dropped"]:
        config = state.config
        now = state.clock.time()
        if now - self.window_start >= config.slow_endpoint_window_minutes * 60:
            self.window_start = now
            self.sent = 0
            self.slow = 0
            self.missed_notified.clear()
        if self.sent < config.slow_endpoint_min_notifications or self.sent == 0:
            return "normal"
        percent = 100.0 * self.slow / self.sent
        if percent >= config.slow_endpoint_drop_percent:
            return "dropped"
        if percent >= config.slow_endpoint_throttle_percent:
            return "throttled"
        return "normal"

    def observe(self, count: int, slow: bool) -> None:
        self.sent += count
        if slow:
            self.slow += count


class Notifier:
    """Sends change and lifecycle notifications; one per emulator, on the server's loop."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self.faults = NotificationFaults()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._endpoints: dict[str, _Endpoint] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._tick_task: asyncio.Task[None] | None = None
        self._listening = False
        self._log: deque[dict[str, Any]] = deque(maxlen=LOG_SIZE)
        self._log_lock = threading.Lock()

    # ----------------------------------------------------------------- lifetime
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if not self._listening:
            self.state.store.add_listener(self._on_change)
            self._listening = True
        if self._tick_task is None:
            self._tick_task = self._loop.create_task(self._tick_forever())

    async def stop(self) -> None:
        tasks = [t for t in [self._tick_task, *self._tasks] if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tick_task = None
        self._tasks.clear()
        clients = list(self._clients.values())
        self._clients.clear()
        for client in clients:
            await client.aclose()
        self._loop = None

    @property
    def idle(self) -> bool:
        """Nothing queued, being sent or waiting for a retry (a test's "all notifications are
        out" check; a change made an instant ago may still be on its way to the queue)."""
        return not self._tasks and not any(e.pending for e in self._endpoints.values())

    def reset(self) -> None:
        """Forget faults, the log and slow-endpoint counters (control API / tests)."""
        self.faults = NotificationFaults()
        self.reset_log()
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._endpoints.clear)

    def reset_log(self) -> None:
        with self._log_lock:
            self._log.clear()

    # ----------------------------------------------------------------- http
    def _client(self) -> httpx.AsyncClient:
        """An HTTP client trusting ``notification_ca_file`` (or the system store)."""
        ca_file = self.state.config.notification_ca_file
        client = self._clients.get(ca_file)
        if client is None:
            context = (
                ssl.create_default_context(cafile=ca_file)
                if ca_file
                else ssl.create_default_context()
            )
            client = httpx.AsyncClient(
                verify=context,
                trust_env=False,
                follow_redirects=False,
                limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
            )
            self._clients[ca_file] = client
        return client

    async def validate_endpoint(self, url: str, *, subscription_hint: str = "") -> None:
        """Graph's validation handshake, or the 400 Graph answers when it fails."""
        config = self.state.config
        token = f"{VALIDATION_TOKEN_PREFIX} Request-Id: {uuid.uuid4()}"
        target = with_query(url, "validationToken", token)
        started = time.monotonic()
        status: int | None = None
        result = "validated"
        error: GraphError | None = None
        try:
            client = self._client()
            response = await asyncio.wait_for(
                client.post(
                    target,
                    content=b"",
                    # a one-off request: do not keep the connection to the endpoint open
                    headers={"Content-Type": "text/plain; charset=utf-8", "Connection": "close"},
                    timeout=config.validation_timeout,
                ),
                timeout=config.validation_timeout,
            )
            status = response.status_code
            content_type = response.headers.get("content-type", "")
            if status != 200:
                result = "failed"
                error = validation_failed()
            elif response.text != token or (
                config.validation_require_text_plain
                and not content_type.lower().startswith("text/plain")
            ):
                result = "mismatch"
                error = validation_mismatch()
        except (TimeoutError, httpx.TimeoutException):
            result = "timeout"
            error = GraphError(400, "InvalidRequest", "Subscription validation request timed out.")
        except (httpx.HTTPError, ssl.SSLError, OSError, ValueError):
            result = "error"
            error = validation_failed()
        self._write_log(
            {
                "kind": "validation",
                "url": url,
                "attempt": 0,
                "status": status,
                "latency_ms": round((time.monotonic() - started) * 1000, 1),
                "subscription_id": subscription_hint or None,
                "change_type": None,
                "lifecycle_event": None,
                "resource_id": None,
                "notification_id": None,
                "result": result,
                "throttled": False,
            }
        )
        if error is not None:
            raise error

    # ----------------------------------------------------------------- enqueue
    def _on_change(
        self, tenant: Tenant, mailbox: Mailbox, msg: Message, folder_id: str, kind: ChangeKind
    ) -> None:
        """Store listener: runs under the store's lock, possibly off the loop. Only enqueues."""
        watchers = registry(self.state).by_mailbox.get(mailbox.user_id)
        if not watchers or self._loop is None:
            return
        now = self.state.clock.time()
        grace = self.state.config.reauthorization_grace_minutes * 60
        items: list[Outgoing] = []
        for sub in watchers.values():
            if kind not in sub.change_types:
                continue
            if sub.folder_id is not None and sub.folder_id != folder_id:
                continue
            if sub.expired(now):
                continue
            message_id = msg.immutable_id if sub.immutable_ids else msg.rest_id
            payload = change_notification(
                sub, message_id=message_id, change_key=msg.change_key, change_type=kind
            )
            item = Outgoing(sub.notification_url, "change", sub.id, kind, payload, message_id)
            if sub.paused(now, grace):
                self._record(item, attempt=0, result="lost_reauthorization_pending")
                continue
            items.append(item)
        if items:
            self._submit(items)

    def send_lifecycle(self, sub: Subscription, event: LifecycleEvent) -> bool:
        """Queue a lifecycle notification; False when the subscription has no lifecycle URL."""
        if not sub.lifecycle_url:
            return False
        payload = lifecycle_notification(sub, event)
        self._submit([Outgoing(sub.lifecycle_url, "lifecycle", sub.id, event, payload)])
        return True

    def _submit(self, items: list[Outgoing]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            for item in items:
                self._record(item, attempt=0, result="notifier_not_running")
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._enqueue(items)
        else:
            loop.call_soon_threadsafe(self._enqueue, items)

    def _enqueue(self, items: list[Outgoing]) -> None:
        for item in items:
            endpoint = self._endpoints.get(item.url)
            if endpoint is None:
                endpoint = _Endpoint(item.url, window_start=self.state.clock.time())
                self._endpoints[item.url] = endpoint
            endpoint.pending.append(item)
            if not endpoint.flushing:
                endpoint.flushing = True
                self._spawn(self._flush(endpoint))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ----------------------------------------------------------------- delivery
    async def _flush(self, endpoint: _Endpoint) -> None:
        try:
            while endpoint.pending:
                await asyncio.sleep(max(0, self.state.config.delivery_coalesce_ms) / 1000)
                size = max(1, self.state.config.delivery_batch_max)
                while endpoint.pending:
                    batch = endpoint.pending[:size]
                    del endpoint.pending[:size]
                    self._spawn(self._deliver(endpoint, batch, attempt=0, inject=True))
        finally:
            endpoint.flushing = False

    async def _deliver(
        self, endpoint: _Endpoint, batch: list[Outgoing], *, attempt: int, inject: bool
    ) -> None:
        try:
            await self._deliver_once(endpoint, batch, attempt=attempt, inject=inject)
        except asyncio.CancelledError:
            raise
        except Exception:  # a delivery bug must never kill the loop's other work
            log.exception("notification delivery to %s failed unexpectedly", endpoint.url)

    async def _deliver_once(
        self, endpoint: _Endpoint, batch: list[Outgoing], *, attempt: int, inject: bool
    ) -> None:
        state = self.state
        config = state.config
        live = self._still_deliverable(batch, attempt)
        if not live:
            return
        faults = self.faults
        if inject and faults.active:
            live, dropped, duplicates = faults.apply(live)
            for item in dropped:
                self._record(item, attempt=attempt, result="dropped_by_fault")
            if duplicates:
                self._spawn(self._deliver(endpoint, duplicates, attempt=0, inject=False))
            if faults.delay_ms:
                await asyncio.sleep(faults.delay_ms / 1000)
            if faults.hold_back():
                await asyncio.sleep(max(faults.delay_ms, 2 * config.delivery_coalesce_ms) / 1000)
            if not live:
                return
        mode = endpoint.mode(state)
        if mode == "dropped":
            for item in live:
                self._record(item, attempt=attempt, result="dropped_slow_endpoint")
            self._notify_missed(endpoint, live)
            return
        throttled = mode == "throttled"
        if throttled:
            await asyncio.sleep(config.slow_endpoint_delay_minutes * 60)
            live = self._still_deliverable(live, attempt)
            if not live:
                return
        body = json.dumps(
            {"value": [item.payload for item in live]}, separators=(",", ":"), ensure_ascii=False
        ).encode()
        status: int | None = None
        timeout = config.delivery_timeout
        async with endpoint.semaphore:
            started = time.monotonic()
            try:
                response = await asyncio.wait_for(
                    self._client().post(
                        endpoint.url,
                        content=body,
                        headers={"Content-Type": "application/json; charset=utf-8"},
                        timeout=timeout,
                    ),
                    timeout=timeout,
                )
                status = response.status_code
                result = "delivered" if 200 <= status < 300 else "failed"
            except (TimeoutError, httpx.TimeoutException):
                result = "timeout"
            except (httpx.HTTPError, ssl.SSLError, OSError, ValueError):
                result = "error"
            latency_ms = (time.monotonic() - started) * 1000
        endpoint.observe(len(live), latency_ms > config.slow_threshold_ms or result == "timeout")
        for item in live:
            self._record(
                item,
                attempt=attempt,
                result=result,
                status=status,
                latency_ms=latency_ms,
                throttled=throttled,
            )
        if result == "delivered":
            return
        delays = config.delivery_retry_delays
        if attempt < len(delays):
            delay = delays[attempt]
            if throttled:
                delay = max(delay, config.slow_endpoint_delay_minutes * 60)
            self._spawn(self._retry(endpoint, live, attempt + 1, delay))
            return
        for item in live:
            self._record(item, attempt=attempt, result="gave_up", status=status)
        self._notify_missed(endpoint, live)

    async def _retry(
        self, endpoint: _Endpoint, items: list[Outgoing], attempt: int, delay: float
    ) -> None:
        await asyncio.sleep(max(0.0, delay))
        await self._deliver(endpoint, items, attempt=attempt, inject=False)

    def _still_deliverable(self, items: list[Outgoing], attempt: int) -> list[Outgoing]:
        """Change notifications of deleted or expired subscriptions are not sent."""
        now = self.state.clock.time()
        reg = registry(self.state)
        live: list[Outgoing] = []
        with self.state.store.lock:
            for item in items:
                if item.kind == "change":
                    sub = reg.get(item.subscription_id)
                    if sub is None:
                        self._record(item, attempt=attempt, result="subscription_removed")
                        continue
                    if sub.expired(now):
                        self._record(item, attempt=attempt, result="subscription_expired")
                        continue
                live.append(item)
        return live

    def _notify_missed(self, endpoint: _Endpoint, items: list[Outgoing]) -> None:
        """``missed`` to each affected subscription, once per slow-endpoint window."""
        reg = registry(self.state)
        targets: list[Subscription] = []
        with self.state.store.lock:
            for item in items:
                if item.kind != "change" or item.subscription_id in endpoint.missed_notified:
                    continue
                sub = reg.get(item.subscription_id)
                if sub is None:
                    continue
                endpoint.missed_notified.add(item.subscription_id)
                targets.append(sub)
        for sub in targets:
            self.send_lifecycle(sub, "missed")

    # ----------------------------------------------------------------- lifecycle
    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(max(0.01, self.state.config.lifecycle_tick_seconds))
            try:
                self.tick()
            except Exception:
                log.exception("lifecycle tick failed")

    def tick(self) -> None:
        """Expire subscriptions and send lifecycle notifications that became due."""
        state = self.state
        config = state.config
        now = state.clock.time()
        lead = config.lifecycle_reauthorize_minutes * 60
        due: list[tuple[Subscription, LifecycleEvent]] = []
        reg = registry(state)
        with state.store.lock:
            for sub in reg.all():
                if sub.expired(now):
                    reg.remove(sub.id)
                    continue
                if not still_authorized(state.store, sub):
                    reg.remove(sub.id)
                    due.append((sub, "subscriptionRemoved"))
                    continue
                if now >= sub.expires - lead and sub.expiry_challenge_for != sub.expires:
                    sub.expiry_challenge_for = sub.expires
                    due.append((sub, "reauthorizationRequired"))
                    continue
                if now >= sub.token_expires and sub.token_challenge_for != sub.token_expires:
                    sub.token_challenge_for = sub.token_expires
                    if sub.reauth_required_since is None:
                        sub.reauth_required_since = now
                    due.append((sub, "reauthorizationRequired"))
        for sub, event in due:
            self.send_lifecycle(sub, event)

    # ----------------------------------------------------------------- log
    def _record(
        self,
        item: Outgoing,
        *,
        attempt: int,
        result: str,
        status: int | None = None,
        latency_ms: float | None = None,
        throttled: bool = False,
    ) -> None:
        self._write_log(
            {
                "kind": item.kind,
                "url": item.url,
                "attempt": attempt,
                "status": status,
                "latency_ms": None if latency_ms is None else round(latency_ms, 1),
                "subscription_id": item.subscription_id,
                "change_type": item.event if item.kind == "change" else None,
                "lifecycle_event": item.event if item.kind == "lifecycle" else None,
                "resource_id": item.resource_id,
                "notification_id": item.notification_id,
                "result": result,
                "throttled": throttled,
            }
        )

    def _write_log(self, entry: dict[str, Any]) -> None:
        entry["time"] = iso7(datetime.fromtimestamp(self.state.clock.time(), UTC))
        with self._log_lock:
            self._log.append(entry)

    def log_entries(self) -> list[dict[str, Any]]:
        with self._log_lock:
            return list(self._log)


def notifier_for(state: EmulatorState) -> Notifier:
    """The emulator's Notifier (app.py creates it; a bare state gets an unstarted one)."""
    found = state.extensions.get("notifier")
    if isinstance(found, Notifier):
        return found
    made = state.extensions.setdefault("notifier", Notifier(state))
    assert isinstance(made, Notifier)
    return made


def with_query(url: str, name: str, value: str) -> str:
    """``url`` with one more query parameter, keeping the existing query string verbatim."""
    parts = urlsplit(url)
    extra = f"{quote(name, safe='')}={quote(value, safe='')}"
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def validation_failed() -> GraphError:
    return GraphError(
        400,
        "InvalidRequest",
        "Subscription validation request failed. Notification endpoint must respond with "
        "200 OK to validation request.",
    )


def validation_mismatch() -> GraphError:
    return GraphError(
        400,
        "InvalidRequest",
        "Subscription validation request failed. Response must exactly match validationToken "
        "query parameter.",
    )
