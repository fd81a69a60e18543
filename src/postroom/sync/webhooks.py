"""Where Graph's change notifications enter: ``POST /webhooks/graph`` (and ``/lifecycle``).

Anyone can reach this endpoint, so whatever arrives is answered in milliseconds, costs little,
and leaves bounded traces:

* ``?validationToken=`` → the token as ``text/plain; charset=utf-8`` with ``nosniff``, 200 (the
  subscription handshake) — only a plausible token: at most :data:`MAX_TOKEN` characters and
  no control characters, else 400.
* Otherwise the body must be Graph's envelope (``{"value": [...]}``, at most 1 MB, at most
  1,000 notifications); anything else (JSON nested too deeply included) is a 400 and nothing
  is enqueued. Each notification's ``clientState`` is checked (HMAC, constant time) against its
  subscription; unknown subscriptions and wrong ``clientState`` are ignored.
* Concurrent requests share work: the subscriptions of every request waiting at one moment are
  looked up in one query (:class:`Batcher`), and the folders to sync in one check of the queue
  — a folder whose sync is already waiting (``todo``) gets no second one, so a burst costs one
  job per folder and no unique-violation errors in PostgreSQL's own log (``queueing_lock``
  stays the guard across processes), and those to queue go in one INSERT
  (:func:`~postroom.sync.jobs.defer_syncs`). A job that has started does not cover new mail:
  then a new one is queued. The answer (202) comes after the valid ones are queued, so none
  is lost; a lost one would be repaired by the reconcile anyway (level-triggered).
* One log line per request, with counts only: never a value from the request, which could
  forge log lines (a line break in ``subscriptionId``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from sqlalchemy import select, text
from starlette.concurrency import run_in_threadpool

from postroom import metrics
from postroom.sync import jobs
from postroom.sync.models import FolderSync
from postroom.sync.runtime import Runtime

log = logging.getLogger("postroom.webhooks")
router = APIRouter()
MAX_BODY = 1_000_000
MAX_NOTIFICATIONS = 1000
MAX_TOKEN = 1024
MAX_SUBSCRIPTION_ID = 128  # FolderSync.subscription_id; a longer one cannot be ours
RENEW_EVENTS = ("reauthorizationRequired", "subscriptionRemoved")


class BadPayload(ValueError):
    pass


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Batcher(Generic[K, V]):
    """Coalesces the lookups of concurrent requests: whoever asks while a fetch runs waits for
    the next one, which serves everybody waiting with one call of ``fetch`` (so at most one
    runs at a time, and each answer is at least as fresh as the question)."""

    def __init__(self, fetch: Callable[[set[K]], Awaitable[dict[K, V]]]) -> None:
        self._fetch = fetch
        self._waiting: list[tuple[set[K], asyncio.Future[dict[K, V]]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def get(self, keys: set[K]) -> dict[K, V]:
        if not keys:
            return {}
        future: asyncio.Future[dict[K, V]] = asyncio.get_running_loop().create_future()
        self._waiting.append((keys, future))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())
        return await future

    async def _run(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            wanted: set[K] = set().union(*(keys for keys, _ in batch))
            try:
                found = await self._fetch(wanted)
            except Exception as exc:  # every waiting request learns it
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for keys, future in batch:
                if not future.done():
                    future.set_result({k: found[k] for k in keys if k in found})


@dataclass(frozen=True)
class Subscription:
    folder_sync_id: str
    mailbox_id: str
    client_state_hash: str | None


@dataclass
class Counts:
    valid: int = 0
    unknown: int = 0
    wrong_client_state: int = 0

    def __str__(self) -> str:
        return (
            f"{self.valid} valid, {self.unknown} unknown subscription, "
            f"{self.wrong_client_state} wrong clientState"
        )


class Inbox:
    """One per process: the batched subscription lookup and the batched, coalesced defer."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.subscriptions: Batcher[str, Subscription] = Batcher(self._lookup)
        self.syncs: Batcher[tuple[str, str], bool] = Batcher(self._defer_syncs)

    async def deliver(
        self, items: list[dict[str, Any]], *, kind: str, lifecycle: bool = False
    ) -> Counts:
        """Check each notification against its subscription, queue a sync of each folder with
        a valid one (lifecycle events: also a renewal), log one line with the counts."""
        ids = {
            i["subscriptionId"] for i in items if len(i["subscriptionId"]) <= MAX_SUBSCRIPTION_ID
        }
        known = await self.subscriptions.get(ids)
        counts = Counts()
        folders: set[tuple[str, str]] = set()
        renew: set[tuple[str, str]] = set()
        for item in items:
            found = known.get(item["subscriptionId"])
            if found is None:
                counts.unknown += 1
            elif not self.runtime.client_state_matches(
                item.get("clientState"), found.client_state_hash
            ):
                counts.wrong_client_state += 1
            else:
                counts.valid += 1
                folders.add((found.folder_sync_id, found.mailbox_id))
                if lifecycle and item.get("lifecycleEvent") in RENEW_EVENTS:
                    renew.add((found.folder_sync_id, found.mailbox_id))
        for sync_id, mailbox_id in renew:
            await jobs.defer_renew(self.runtime, sync_id, mailbox_id)
        # also after a lifecycle event: "missed" and the gap before a renewal need a catch-up
        queued = await self.syncs.get(folders)
        metrics.webhook("accepted", counts.valid)
        metrics.webhook("spoofed", counts.wrong_client_state)
        metrics.webhook("unknown_subscription", counts.unknown)
        level = logging.WARNING if counts.unknown or counts.wrong_client_state else logging.INFO
        log.log(level, "%s: %s; %d sync(s) queued", kind, counts, sum(queued.values()))
        return counts

    async def _lookup(self, ids: set[str]) -> dict[str, Subscription]:
        return await run_in_threadpool(_subscriptions, self.runtime, ids)

    async def _defer_syncs(self, folders: set[tuple[str, str]]) -> dict[tuple[str, str], bool]:
        """Queue a sync of each (folder sync id, mailbox id) unless one is already waiting;
        True for those queued now."""
        locks = {f"sync:{sync_id}": (sync_id, mailbox_id) for sync_id, mailbox_id in folders}
        waiting = await run_in_threadpool(_waiting_locks, self.runtime, set(locks))
        queued = dict.fromkeys(folders, False)
        wanted = [folder for lock, folder in sorted(locks.items()) if lock not in waiting]
        queued.update(await jobs.defer_syncs(self.runtime, wanted))
        return queued


def _subscriptions(runtime: Runtime, ids: set[str]) -> dict[str, Subscription]:
    with runtime.database.session() as db:
        rows = db.execute(
            select(
                FolderSync.subscription_id,
                FolderSync.id,
                FolderSync.mailbox_id,
                FolderSync.client_state_hash,
            ).where(FolderSync.subscription_id.in_(ids))
        ).all()
    return {r[0]: Subscription(r[1], r[2], r[3]) for r in rows if r[0]}


def _waiting_locks(runtime: Runtime, locks: set[str]) -> set[str]:
    """The queueing locks of ``locks`` held by a job that has not started yet."""
    with runtime.database.session() as db:
        rows = db.execute(
            text(
                "SELECT queueing_lock FROM procrastinate_jobs "
                "WHERE status = 'todo' AND queueing_lock = ANY(:locks)"
            ),
            {"locks": sorted(locks)},
        ).scalars()
        return set(rows)


def _inbox(request: Request) -> Inbox:
    runtime: Runtime = request.app.state.runtime
    inbox = getattr(request.app.state, "webhook_inbox", None)
    if not isinstance(inbox, Inbox) or inbox.runtime is not runtime:
        inbox = Inbox(runtime)
        request.app.state.webhook_inbox = inbox
    return inbox


def _plausible_token(token: str) -> bool:
    return 0 < len(token) <= MAX_TOKEN and token.isprintable()


async def _read(request: Request) -> list[dict[str, Any]]:
    size = 0
    chunks = []
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise BadPayload("payload too large")
        chunks.append(chunk)
    try:
        data = json.loads(b"".join(chunks))
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
        raise BadPayload("payload is not JSON (or nested too deeply)") from exc
    if not isinstance(data, dict) or not isinstance(data.get("value"), list):
        raise BadPayload("expected an object with a 'value' array")
    items: list[dict[str, Any]] = data["value"]
    if len(items) > MAX_NOTIFICATIONS:
        raise BadPayload("too many notifications")
    if not all(isinstance(i, dict) and isinstance(i.get("subscriptionId"), str) for i in items):
        raise BadPayload("each notification needs a subscriptionId")
    return items


async def _received(request: Request, kind: str) -> list[dict[str, Any]] | Response:
    """The notifications of a request, or the answer to give at once (the validation
    handshake, or 400 for a body that is not Graph's envelope)."""
    token = request.query_params.get("validationToken")
    if token is not None:
        if not _plausible_token(token):
            metrics.webhook("malformed")
            log.warning("%s: refused an implausible validationToken", kind)
            return PlainTextResponse("Not a validation token.", status_code=400)
        metrics.webhook("validation")
        return PlainTextResponse(
            token,
            status_code=200,
            media_type="text/plain; charset=utf-8",
            headers={"X-Content-Type-Options": "nosniff"},
        )
    try:
        return await _read(request)
    except BadPayload as exc:
        metrics.webhook("malformed")
        log.warning("%s: refused a request: %s", kind, exc)
        return JSONResponse({"error": str(exc)}, status_code=400)


@router.post("/webhooks/graph")
async def notifications(request: Request) -> Response:
    received = await _received(request, "notifications")
    if isinstance(received, Response):
        return received
    await _inbox(request).deliver(received, kind="notifications")
    return Response(status_code=202)


@router.post("/webhooks/graph/lifecycle")
async def lifecycle(request: Request) -> Response:
    received = await _received(request, "lifecycle notifications")
    if isinstance(received, Response):
        return received
    await _inbox(request).deliver(received, kind="lifecycle notifications", lifecycle=True)
    return Response(status_code=202)
