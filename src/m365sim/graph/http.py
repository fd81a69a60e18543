"""The ASGI entry for ``/v1.0/...``: HTTP in, :func:`dispatch.handle`, HTTP out.

Kept as a plain ASGI callable (no framework routing or middleware on this path) because it
carries every Graph call: the emulator must sustain well over a thousand requests a second.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from m365sim.errors import GraphError
from m365sim.graph.dispatch import (
    Disconnect,
    GraphRequest,
    GraphResponse,
    error_response,
    handle,
)
from m365sim.state import EmulatorState

MAX_BODY = 4 * 1024 * 1024  # Graph refuses JSON request bodies over 4 MB

Scope = dict[str, Any]


async def _read_body(receive: Any) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= MAX_BODY:
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    if size > MAX_BODY:
        raise GraphError(
            413, "RequestEntityTooLarge", "The maximum request length supported is 4MB."
        )
    return b"".join(chunks)


def parse_query(raw: str) -> dict[str, str]:
    query: dict[str, str] = {}
    for name, value in parse_qsl(raw, keep_blank_values=True):
        if name in query:
            raise GraphError(
                400,
                "BadRequest",
                f"Query option '{name}' was specified more than once, but it must "
                "be specified at most once.",
            )
        query[name] = value
    return query


def encode(response: GraphResponse) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    headers = [(k.lower().encode(), v.encode()) for k, v in response.headers.items()]
    if response.body is None:
        return b"", headers
    if isinstance(response.body, bytes | bytearray):
        payload = bytes(response.body)
    elif isinstance(response.body, str):
        payload = response.body.encode()
    else:
        text = json.dumps(response.body, separators=(",", ":"), ensure_ascii=False)
        try:
            payload = text.encode()
        except UnicodeEncodeError:
            # Nothing stored should hold a lone surrogate (jsonbody, mime.scrub); should one
            # slip through, answer with it escaped rather than fail the request.
            payload = json.dumps(response.body, separators=(",", ":")).encode()
        if not any(name == b"odata-version" for name, _ in headers):
            headers.append((b"odata-version", b"4.0"))  # as Graph's OData responses carry
    headers.append((b"content-type", response.content_type.encode()))
    return payload, headers


async def graph_asgi(state: EmulatorState, scope: Scope, receive: Any, send: Any) -> None:
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    path = scope["path"][len("/v1.0") :] or "/"
    host = headers.get("host", "localhost")
    req = GraphRequest(
        method=scope["method"].upper(),
        path=path,
        query={},
        headers=headers,
        base_url=f"https://{host}/v1.0",
    )
    try:
        req.query = parse_query(scope.get("query_string", b"").decode("latin-1"))
        body = await _read_body(receive)
        if body is None:
            return
        req.body = body
        response = await handle(state, req)
    except GraphError as err:
        response = error_response(state, req, err)
        response.headers.setdefault("request-id", req.request_id)
    except Disconnect:
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"100")]}
        )
        raise
    payload, raw_headers = encode(response)
    raw_headers.append((b"content-length", str(len(payload)).encode()))
    await send({"type": "http.response.start", "status": response.status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})
