"""Where Graph's change notifications enter: ``POST /webhooks/graph`` (and ``/lifecycle``).

* ``?validationToken=`` → the decoded token as text/plain, 200 (the subscription handshake);
* otherwise the body must be Graph's envelope (``{"value": [...]}``, at most 1 MB); each
  notification's ``clientState`` is checked (HMAC, constant time) against its subscription — a
  mismatch or unknown subscription is logged (ids only) and ignored; each valid one enqueues a
  coalesced sync of its folder; the answer is 202 within milliseconds. Malformed or oversized
  bodies get 400 and nothing is enqueued.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from postroom.sync import jobs
from postroom.sync.models import FolderSync
from postroom.sync.runtime import Runtime

log = logging.getLogger("postroom.webhooks")
router = APIRouter()
MAX_BODY = 1_000_000
MAX_NOTIFICATIONS = 1000


class BadPayload(ValueError):
    pass


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
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadPayload("payload is not JSON") from exc
    if not isinstance(data, dict) or not isinstance(data.get("value"), list):
        raise BadPayload("expected an object with a 'value' array")
    items: list[dict[str, Any]] = data["value"]
    if len(items) > MAX_NOTIFICATIONS:
        raise BadPayload("too many notifications")
    if not all(isinstance(i, dict) and isinstance(i.get("subscriptionId"), str) for i in items):
        raise BadPayload("each notification needs a subscriptionId")
    return items


def _subscriptions(runtime: Runtime, ids: set[str]) -> dict[str, tuple[str, str, str | None]]:
    with runtime.database.session() as db:
        rows = db.execute(
            select(
                FolderSync.subscription_id,
                FolderSync.id,
                FolderSync.mailbox_id,
                FolderSync.client_state_hash,
            ).where(FolderSync.subscription_id.in_(ids))
        ).all()
    return {r[0]: (r[1], r[2], r[3]) for r in rows if r[0]}


async def _verified(
    request: Request,
) -> tuple[Runtime, list[tuple[dict[str, Any], str, str]]] | Response:
    token = request.query_params.get("validationToken")
    if token is not None:
        return PlainTextResponse(token, status_code=200, media_type="text/plain")
    try:
        items = await _read(request)
    except BadPayload as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    runtime: Runtime = request.app.state.runtime
    known = await run_in_threadpool(
        _subscriptions, runtime, {str(i["subscriptionId"])[:128] for i in items}
    )
    accepted = []
    for item in items:
        found = known.get(str(item["subscriptionId"]))
        if found is None or not runtime.client_state_matches(item.get("clientState"), found[2]):
            log.warning(
                "ignored a notification for subscription %s: unknown or wrong clientState",
                str(item["subscriptionId"])[:64],
            )
            continue
        accepted.append((item, found[0], found[1]))
    return runtime, accepted


@router.post("/webhooks/graph")
async def notifications(request: Request) -> Response:
    checked = await _verified(request)
    if isinstance(checked, Response):
        return checked
    runtime, accepted = checked
    for sync_id, mailbox_id in {(s, m) for _, s, m in accepted}:
        await jobs.defer_sync(runtime, sync_id, mailbox_id)
    return Response(status_code=202)


@router.post("/webhooks/graph/lifecycle")
async def lifecycle(request: Request) -> Response:
    checked = await _verified(request)
    if isinstance(checked, Response):
        return checked
    runtime, accepted = checked
    for item, sync_id, mailbox_id in accepted:
        event = item.get("lifecycleEvent")
        if event in ("reauthorizationRequired", "subscriptionRemoved"):
            await jobs.defer_renew(runtime, sync_id, mailbox_id)
        await jobs.defer_sync(runtime, sync_id, mailbox_id)  # "missed" and the gap: catch up
    return Response(status_code=202)
