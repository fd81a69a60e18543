"""JSON batching: ``POST /$batch`` (graph.md 3.9).

``{"requests": [{"id", "method", "url", "headers"?, "body"?, "dependsOn"?}]}`` -> 200
``{"responses": [{"id", "status", "headers", "body"}]}`` in request order, whatever the items'
outcomes. Each item runs through :func:`dispatch.handle` exactly like a top-level request
(authentication with the batch's ``Authorization`` header, routing, throttling, fault
injection, permissions), so it answers with Graph's status and error body of its own.

Validation of the batch as a whole (400 ``BadRequest``, nothing runs): the body must be a JSON
object with a non-empty ``requests`` array of at most 20 objects, each with a string ``id``,
``method`` and ``url``; ids are unique (case-insensitive); ``dependsOn`` names other items and
has no cycles; an item with a ``body`` has a ``Content-Type`` header ("Write request id : 1
does not contain Content-Type header or body."). The messages other than that one are not
verified against Graph. Unknown item properties are ignored (msgraph-core sends
``depends_on``).

Item URLs are relative: ``/me/messages``, ``me/messages`` and ``/v1.0/me/messages`` (what
msgraph-core's ``BatchRequestItem`` sends) are all accepted; absolute URLs and other API
versions answer a per-item 400. A JSON ``body`` is sent as JSON; a string body is base64
(Graph's form for non-JSON content).

Sequencing and concurrency
  Items run in waves: those whose ``dependsOn`` items have all finished. An item whose
  dependency did not succeed (non-2xx) answers 424 ``FailedDependency`` without running.
  Items of one wave run in parallel, as on Graph, and so count together against the
  per-(application, mailbox) concurrency limit of four: the batch takes the throttle slots of a
  whole wave before running any of it (``dispatch.throttle_key_for`` finds each item's key;
  ``GraphRequest.throttle_held`` tells :func:`handle` the slot is taken). More than four
  parallel items on one mailbox therefore get per-item 429 ``ApplicationThrottled``
  "...MailboxConcurrency limit." with their own ``Retry-After``, which is what Microsoft
  documents and what SDKs must handle themselves (they do not retry batch items).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from m365sim.errors import GraphError
from m365sim.graph.dispatch import (
    JSON_CONTENT_TYPE,
    Ctx,
    GraphRequest,
    GraphResponse,
    error_response,
    handle,
    read_json_body,
    route,
    throttle_key_for,
)
from m365sim.graph.http import parse_query
from m365sim.state import RequestRecord

MAX_REQUESTS = 20
_METHODS = {"GET", "POST", "PATCH", "PUT", "DELETE"}


def _invalid(message: str = "Invalid batch payload format.") -> GraphError:
    return GraphError(400, "BadRequest", message)


@dataclass
class _Item:
    id: str
    method: str
    url: str
    headers: dict[str, str]
    body: Any
    has_body: bool
    depends_on: list[str] = field(default_factory=list)
    request: GraphRequest | None = None
    error: GraphError | None = None  # a per-item failure found before running it


def _parse_items(payload: dict[str, Any]) -> list[_Item]:
    requests = payload.get("requests")
    if not isinstance(requests, list) or not requests:
        raise _invalid()
    if len(requests) > MAX_REQUESTS:
        raise _invalid(f"Number of batch request steps exceeds the maximum of {MAX_REQUESTS}.")
    items: list[_Item] = []
    seen: set[str] = set()
    for raw in requests:
        if not isinstance(raw, dict):
            raise _invalid()
        item_id, method, url = raw.get("id"), raw.get("method"), raw.get("url")
        if not all(isinstance(v, str) and v.strip() for v in (item_id, method, url)):
            raise _invalid()
        assert isinstance(item_id, str) and isinstance(method, str) and isinstance(url, str)
        if item_id.lower() in seen:
            raise _invalid(f"Batch request id '{item_id}' is duplicated; ids must be unique.")
        seen.add(item_id.lower())
        headers_raw = raw.get("headers") or {}
        if not isinstance(headers_raw, dict) or not all(
            isinstance(v, str) for v in headers_raw.values()
        ):
            raise _invalid()
        headers = {str(k).lower(): v for k, v in headers_raw.items()}
        has_body = "body" in raw and raw["body"] is not None
        if has_body and "content-type" not in headers:
            raise _invalid(
                f"Write request id : {item_id} does not contain Content-Type header or body."
            )
        depends = raw.get("dependsOn") or []
        if not isinstance(depends, list) or not all(isinstance(d, str) for d in depends):
            raise _invalid()
        items.append(
            _Item(item_id, method.upper(), url.strip(), headers, raw.get("body"), has_body, depends)
        )
    by_id = {i.id.lower(): i for i in items}
    for item in items:
        for dep in item.depends_on:
            if dep.lower() not in by_id or dep.lower() == item.id.lower():
                raise _invalid(f"Request '{item.id}' depends on unknown request '{dep}'.")
        item.depends_on = [by_id[d.lower()].id for d in item.depends_on]
    _check_cycles(items)
    return items


def _check_cycles(items: list[_Item]) -> None:
    remaining = {i.id: set(i.depends_on) for i in items}
    while remaining:
        free = [k for k, deps in remaining.items() if not deps & remaining.keys()]
        if not free:
            raise _invalid("The dependsOn references of the batch requests form a cycle.")
        for key in free:
            del remaining[key]


def _build_request(ctx: Ctx, item: _Item) -> GraphRequest:
    url = item.url
    if url.lower().startswith(("http://", "https://")):
        raise GraphError(400, "BadRequest", "Invalid request URL: batch URLs must be relative.")
    if not url.startswith("/"):
        url = "/" + url
    lowered = url.lower()
    if lowered.startswith("/v1.0/") or lowered == "/v1.0":
        url = url[len("/v1.0") :] or "/"
    elif lowered.startswith("/beta/"):
        raise GraphError(400, "BadRequest", "Batch requests must use the same version: v1.0.")
    path, _, raw_query = url.partition("?")
    if path.strip("/").lower() == "$batch":
        raise GraphError(400, "BadRequest", "A batch request cannot contain another batch.")
    if item.method not in _METHODS:
        raise GraphError(
            405, "BadRequest", f"The HTTP method '{item.method}' is not allowed for this resource."
        )
    headers = dict(item.headers)
    authorization = ctx.req.header("authorization")
    if authorization is not None:
        headers["authorization"] = authorization
    body = b""
    if item.has_body:
        if isinstance(item.body, str):
            try:
                body = base64.b64decode(item.body, validate=True)
            except (binascii.Error, ValueError):
                body = item.body.encode()
        else:
            body = json.dumps(item.body).encode()
    return GraphRequest(
        method=item.method,
        path=path,
        query=parse_query(raw_query),
        headers=headers,
        body=body,
        in_batch=True,
        base_url=ctx.req.base_url,
    )


def _record_refused(ctx: Ctx, req: GraphRequest, key: tuple[str, str], status: int) -> None:
    ctx.state.record(
        RequestRecord(
            time=ctx.state.clock.time(),
            method=req.method,
            path=req.path,
            status=status,
            endpoint=f"{req.method} {req.path}",
            mailbox_id=key[1],
            client_id=key[0],
            request_id=req.request_id,
            in_batch=True,
        )
    )


def _finish(req: GraphRequest, response: GraphResponse) -> GraphResponse:
    response.headers.setdefault("request-id", req.request_id)
    response.headers.setdefault(
        "client-request-id", req.header("client-request-id") or req.request_id
    )
    return response


async def _run_wave(ctx: Ctx, wave: list[_Item]) -> dict[str, GraphResponse]:
    """Run parallel items together: their throttle slots are taken before any of them runs."""
    state = ctx.state
    results: dict[str, GraphResponse] = {}
    held: list[tuple[str, str]] = []
    runnable: list[_Item] = []
    try:
        for item in wave:
            assert item.request is not None
            key = throttle_key_for(state, item.request)
            if key is not None:
                try:
                    state.throttle.acquire(key)
                except GraphError as err:
                    results[item.id] = _finish(
                        item.request, error_response(state, item.request, err)
                    )
                    _record_refused(ctx, item.request, key, err.status)
                    continue
                held.append(key)
                item.request.throttle_held = True
            runnable.append(item)
        responses = await asyncio.gather(
            *(handle(state, item.request) for item in runnable if item.request is not None)
        )
    finally:
        for key in held:
            state.throttle.release(key)
    for item, response in zip(runnable, responses, strict=True):
        results[item.id] = response
    return results


def _item_json(item_id: str, response: GraphResponse) -> dict[str, Any]:
    headers = {
        k: v
        for k, v in response.headers.items()
        if k.lower() not in ("request-id", "client-request-id")
    }
    out: dict[str, Any] = {"id": item_id, "status": response.status, "headers": headers}
    if response.body is not None:
        headers["Content-Type"] = response.content_type
        if isinstance(response.body, bytes | bytearray):
            out["body"] = base64.b64encode(bytes(response.body)).decode()
        else:
            headers.setdefault("OData-Version", "4.0")
            out["body"] = response.body
    return out


def _failed_dependency(ctx: Ctx, item: _Item) -> GraphResponse:
    req = item.request or GraphRequest(item.method, item.url, {}, {})
    err = GraphError(
        424,
        "FailedDependency",
        "The request was not run because a request it depends on failed.",
    )
    return _finish(req, error_response(ctx.state, req, err))


@route("POST", "/$batch")
async def batch(ctx: Ctx) -> GraphResponse:
    try:
        payload = read_json_body(ctx.state, ctx.req.body) if ctx.req.body.strip() else None
    except GraphError as exc:
        if exc.code != "BadRequest":
            raise  # too deep, lone surrogates: the body reader's own 400
        raise _invalid() from exc
    if not isinstance(payload, dict):
        raise _invalid()
    items = _parse_items(payload)
    results: dict[str, GraphResponse] = {}
    for item in items:
        try:
            item.request = _build_request(ctx, item)
        except GraphError as err:
            item.error = err
    pending = list(items)
    while pending:
        ready = [i for i in pending if all(d in results for d in i.depends_on)]
        wave: list[_Item] = []
        for item in ready:
            if any(not 200 <= results[d].status < 300 for d in item.depends_on):
                results[item.id] = _failed_dependency(ctx, item)
            elif item.error is not None or item.request is None:
                req = GraphRequest(item.method, item.url, {}, {}, in_batch=True)
                failure = item.error or _invalid()
                results[item.id] = _finish(req, error_response(ctx.state, req, failure))
            else:
                wave.append(item)
        if wave:
            results.update(await _run_wave(ctx, wave))
        pending = [i for i in pending if i.id not in results]
    return GraphResponse(
        200,
        {"responses": [_item_json(i.id, results[i.id]) for i in items]},
        content_type=JSON_CONTENT_TYPE,
    )
