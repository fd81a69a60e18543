"""What happened, for tests to assert on: request counters, the request log, throttling, mail
that left the mailboxes (sent / forwarded) and the deletion audit.

These are the emulator's own records (Microsoft has nothing like them); they let a test say
"Postroom made exactly one forward and no delete" or "no mailbox was polled more than N
times". Counters are keyed by (mailbox, method, route template) as the Graph dispatcher records
them (``EmulatorState.record``); throttled counts come from the (application, mailbox)
throttle (graph.md 5). ``DELETE /_emulator/counters`` starts a new measurement.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from m365sim.clock import iso
from m365sim.control.common import JsonDict, bad, endpoint, find_mailbox, ok
from m365sim.state import EmulatorState

MAX_LIMIT = 20_000


def camel(name: str) -> str:
    head, *rest = name.rstrip("_").split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def record_json(obj: Any) -> JsonDict:
    """A dataclass record as camelCase JSON (date-times as ISO 8601, sets as sorted lists)."""
    out: JsonDict = {}
    for f in dataclasses.fields(obj):
        if f.name.startswith("_"):
            continue
        value = getattr(obj, f.name)
        if isinstance(value, datetime):
            value = iso(value)
        elif isinstance(value, set | frozenset):
            value = sorted(value)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = record_json(value)
        out[camel(f.name)] = value
    return out


def _limit(request: Request, default: int = 100) -> int:
    raw = request.query_params.get("limit", str(default))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise bad(f"limit must be a number between 1 and {MAX_LIMIT}")
    return int(raw)


def build_routes(state: EmulatorState) -> list[BaseRoute]:
    store = state.store

    def mailbox_keys(request: Request) -> set[str] | None:
        key = request.query_params.get("mailbox")
        if not key:
            return None
        _, user = find_mailbox(store, key)
        return {user.id, user.user_principal_name, user.user_principal_name.lower()}

    @endpoint
    async def counters(request: Request) -> Response:
        if request.method == "DELETE":
            with state.log_lock:
                state.counters.clear()
                state.request_log.clear()
            state.throttle.throttled.clear()
            return Response(status_code=204)
        wanted = mailbox_keys(request)
        with state.log_lock:
            items = list(state.counters.items())
        rows: list[JsonDict] = []
        by_mailbox: dict[str, int] = {}
        by_endpoint: dict[str, int] = {}
        total = 0
        for (mailbox_id, method, route), count in items:
            if wanted is not None and mailbox_id not in wanted:
                continue
            rows.append(
                {"mailboxId": mailbox_id, "method": method, "endpoint": route, "count": count}
            )
            by_mailbox[mailbox_id] = by_mailbox.get(mailbox_id, 0) + count
            by_endpoint[route] = by_endpoint.get(route, 0) + count
            total += count
        rows.sort(key=lambda r: (-int(r["count"]), str(r["endpoint"])))
        throttled = [
            {"clientId": client_id, "mailboxId": mailbox_id, "count": count}
            for (client_id, mailbox_id), count in list(state.throttle.throttled.items())
            if wanted is None or mailbox_id in wanted
        ]
        return ok(
            {
                "total": total,
                "value": rows,
                "byMailbox": by_mailbox,
                "byEndpoint": by_endpoint,
                "throttled": throttled,
                "throttledTotal": sum(t["count"] for t in throttled),
            }
        )

    @endpoint
    async def requests(request: Request) -> Response:
        wanted = mailbox_keys(request)
        limit = _limit(request)
        client_id = request.query_params.get("clientId")
        method = request.query_params.get("method", "").upper()
        with state.log_lock:
            records = list(state.request_log)
        chosen = [
            r
            for r in records
            if (wanted is None or r.mailbox_id in wanted)
            and (client_id is None or r.client_id == client_id)
            and (not method or r.method == method)
        ][-limit:]
        value = []
        for r in chosen:
            item = {camel(k): v for k, v in r.to_dict().items()}
            item["timeIso"] = iso(datetime.fromtimestamp(r.time, tz=UTC))
            value.append(item)
        return ok({"value": value})

    @endpoint
    async def outbound(request: Request) -> Response:
        wanted = mailbox_keys(request)
        limit = _limit(request, MAX_LIMIT)
        with store.lock:
            rows = [
                record_json(o) for o in store.outbound if wanted is None or o.from_mailbox in wanted
            ]
        return ok({"value": rows[-limit:]})

    @endpoint
    async def deletions(request: Request) -> Response:
        wanted = mailbox_keys(request)
        limit = _limit(request, MAX_LIMIT)
        client_id = request.query_params.get("clientId")
        with store.lock:
            rows = [
                record_json(d)
                for d in store.deletions
                if (wanted is None or d.mailbox_id in wanted)
                and (client_id is None or d.client_id == client_id)
            ]
        return ok({"value": rows[-limit:]})

    return [
        Route("/_emulator/counters", counters, methods=["GET", "DELETE"]),
        Route("/_emulator/requests", requests, methods=["GET"]),
        Route("/_emulator/outbound", outbound, methods=["GET"]),
        Route("/_emulator/deletions", deletions, methods=["GET"]),
    ]
