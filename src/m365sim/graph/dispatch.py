"""Graph v1.0 request dispatch: one path for HTTP requests and ``$batch`` items.

A :class:`GraphRequest` (method, path below ``/v1.0``, query, headers, body) goes through
:func:`handle`, which in order: authenticates the caller, finds the route, resolves the target
mailbox (``/me`` or ``/users/{id | upn}``), counts the request against the (application,
mailbox) throttle, applies injected faults, checks permissions and runs the handler under the
store's lock. Every failure leaves as Graph's OData error envelope with Graph's status; an
unexpected exception becomes 500 ``generalException`` with the request id, never a traceback.

Routes are registered with :func:`route`. Literal segments match case-insensitively (Graph's
are), OData key syntax ``mailFolders('inbox')`` is accepted as ``mailFolders/inbox``, and
``{name}`` captures one segment.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from m365sim import jsonbody
from m365sim.errors import GraphError, graph_error_body
from m365sim.graph.access import Caller, Operation, authenticate, authorize_mailbox, resolve_user
from m365sim.state import EmulatorState, RequestRecord
from m365sim.store import Tenant, User

log = logging.getLogger("m365sim.graph")

JSON_CONTENT_TYPE = (
    "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;"
    "charset=utf-8"
)


@dataclass
class GraphRequest:
    method: str
    path: str  # below /v1.0, starting with "/"
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes = b""
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    in_batch: bool = False
    base_url: str | None = None  # "https://host:port/v1.0" as the client addressed us
    # The (application, mailbox) throttle slot was already taken for this request: $batch
    # takes the slots of a group of parallel items together (see throttle_key_for).
    throttle_held: bool = False

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    @property
    def prefers(self) -> list[str]:
        """The ``Prefer`` header's preferences (several headers are joined by commas)."""
        raw = self.headers.get("prefer", "")
        return [p.strip() for p in raw.split(",") if p.strip()]

    @property
    def immutable_ids(self) -> bool:
        return any(
            p.replace(" ", "").lower() in ('idtype="immutableid"', "idtype=immutableid")
            for p in self.prefers
        )

    def max_page_size(self) -> int | None:
        for pref in self.prefers:
            name, _, value = pref.partition("=")
            if name.strip().lower() == "odata.maxpagesize":
                try:
                    size = int(value.strip().strip('"'))
                except ValueError:
                    return None
                return size if size > 0 else None
        return None


@dataclass
class GraphResponse:
    status: int
    body: Any = None  # JSON-able, or bytes for raw content, or None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = JSON_CONTENT_TYPE


@dataclass
class Ctx:
    """What a route handler receives."""

    state: EmulatorState
    req: GraphRequest
    caller: Caller
    params: dict[str, str]
    user: User | None = None  # the mailbox owner for mailbox routes

    @property
    def tenant(self) -> Tenant:
        return self.caller.tenant

    @property
    def mailbox_user(self) -> User:
        assert self.user is not None
        return self.user

    def json(self) -> dict[str, Any]:
        """The request body as a JSON object, or 400 as Graph answers malformed payloads."""
        if not self.req.body.strip():
            raise GraphError(400, "BadRequest", "Empty Payload. JSON content expected.")
        data = read_json_body(self.state, self.req.body)
        if not isinstance(data, dict):
            raise GraphError(400, "BadRequest", "Invalid JSON payload: an object is expected.")
        return data

    def link(self, path_and_query: str) -> str:
        return f"{self.req.base_url or self.state.graph_base}{path_and_query}"


def read_json_body(state: EmulatorState, raw: bytes) -> Any:
    """Any JSON value of a request body, or Graph's 400 (syntax, nesting, lone surrogates)."""
    try:
        return jsonbody.load(raw, max_depth=state.config.json_max_depth)
    except jsonbody.JsonBodyError as exc:
        if exc.kind == "syntax":
            raise GraphError(
                400,
                "BadRequest",
                "Unable to read JSON request payload. Please ensure Content-Type header is set "
                "and payload is of valid JSON format.",
            ) from exc
        raise GraphError(400, "RequestBodyRead", exc.message) from exc


Handler = Callable[[Ctx], GraphResponse]
AsyncHandler = Callable[[Ctx], Awaitable[GraphResponse]]


@dataclass
class Route:
    method: str
    template: str
    pattern: re.Pattern[str]
    handler: Handler | AsyncHandler
    mailbox: bool
    op: Operation | None
    is_async: bool


_ROUTES: list[Route] = []
_KEY_SYNTAX = re.compile(r"""([A-Za-z$]+)\(\s*(?:'([^']*)'|"([^"]*)")\s*\)""")


def _compile(template: str) -> re.Pattern[str]:
    parts = []
    for segment in template.strip("/").split("/"):
        if segment.startswith("{") and segment.endswith("}"):
            parts.append(f"(?P<{segment[1:-1]}>[^/]+)")
        else:
            parts.append(re.escape(segment))
    return re.compile("^/" + "/".join(parts) + "$", re.IGNORECASE)


def route(
    method: str, template: str, *, mailbox: bool = False, op: Operation | None = None
) -> Callable[[Any], Any]:
    """Register a handler. ``mailbox=True`` templates are relative to ``/me`` or ``/users/{id}``
    and require ``op`` (the permission check for the target mailbox)."""

    def register(fn: Any) -> Any:
        _ROUTES.append(
            Route(
                method.upper(),
                template,
                _compile(template),
                fn,
                mailbox,
                op,
                asyncio.iscoroutinefunction(fn),
            )
        )
        # Most specific first: a literal segment wins over a {parameter} in the same place, so
        # ".../messages/delta" is not taken for ".../messages/{id}" (stable otherwise).
        _ROUTES.sort(key=_specificity)
        return fn

    return register


def _specificity(candidate: Route) -> tuple[int, ...]:
    return tuple(
        1 if s.startswith("{") and s.endswith("}") else 0
        for s in candidate.template.strip("/").split("/")
    )


def normalize_path(path: str) -> str:
    path = path.split("?", 1)[0]
    path = _KEY_SYNTAX.sub(lambda m: f"{m.group(1)}/{m.group(2) or m.group(3)}", path)
    path = "/" + "/".join(unquote(s) for s in path.strip("/").split("/") if s)
    return path


def split_mailbox(path: str) -> tuple[str, str] | None:
    """``/me/x`` -> ("me", "/x"); ``/users/{key}/x`` -> (key, "/x"); otherwise None."""
    segments = path.strip("/").split("/")
    if segments[0].lower() == "me" and len(segments) > 1:
        return "me", "/" + "/".join(segments[1:])
    if segments[0].lower() == "users" and len(segments) > 2:
        return segments[1], "/" + "/".join(segments[2:])
    return None


def _find(method: str, path: str, mailbox: bool) -> tuple[Route | None, dict[str, str], bool]:
    """(route, params, path_known). ``path_known`` with no route means 405."""
    known = False
    for candidate in _ROUTES:
        if candidate.mailbox != mailbox:
            continue
        match = candidate.pattern.match(path)
        if match is None:
            continue
        known = True
        if candidate.method == method:
            return candidate, match.groupdict(), True
    return None, {}, known


def throttle_key_for(state: EmulatorState, req: GraphRequest) -> tuple[str, str] | None:
    """The (application, mailbox) throttle key :func:`handle` would count ``req`` against.

    ``None`` when the request targets no mailbox or would fail before throttling (bad token,
    unknown route or user); :func:`handle` then produces that error itself. Side-effect free.
    """
    try:
        caller = authenticate(state, req.header("authorization"))
        path = normalize_path(req.path)
        split = split_mailbox(path)
        if split is None:
            return None
        found, _, _ = _find(req.method, split[1], mailbox=True)
        if found is None:
            return None
        return caller.client_id, resolve_user(caller, split[0]).id
    except GraphError:
        return None


def error_response(state: EmulatorState, req: GraphRequest, err: GraphError) -> GraphResponse:
    body = graph_error_body(
        err.code,
        err.message,
        now=state.clock.now(),
        request_id=req.request_id,
        client_request_id=req.header("client-request-id"),
        inner=err.inner,
    )
    return GraphResponse(err.status, body, dict(err.headers))


async def handle(state: EmulatorState, req: GraphRequest) -> GraphResponse:
    """Run one Graph request (top-level or batch item) and record it."""
    endpoint = f"{req.method} {req.path}"
    mailbox_id: str | None = None
    client_id: str | None = None
    throttle_key: tuple[str, str] | None = None
    try:
        caller = authenticate(state, req.header("authorization"))
        client_id = caller.client_id
        path = normalize_path(req.path)
        split = split_mailbox(path)
        user: User | None = None
        found: Route | None = None
        params: dict[str, str] = {}
        known = False
        if split is not None:
            found, params, known = _find(req.method, split[1], mailbox=True)
        if found is None and not known:
            found, params, known = _find(req.method, path, mailbox=False)
        if found is None:
            if known:
                raise GraphError(
                    405,
                    "BadRequest",
                    f"The HTTP method '{req.method}' is not allowed for this resource.",
                )
            first = path.strip("/").split("/")[-1] or path
            raise GraphError(400, "BadRequest", f"Resource not found for the segment '{first}'.")
        prefix = ""
        if found.mailbox:
            assert split is not None
            user = resolve_user(caller, split[0])
            mailbox_id = user.id
            prefix = "/users/{id}"
        endpoint = f"{found.method} {prefix}{found.template}"
        if user is not None and not req.throttle_held:
            throttle_key = (caller.client_id, user.id)
            state.throttle.acquire(throttle_key)
        injection = state.faults.pick(req.method, path)
        if injection is not None:
            if injection.latency_ms:
                await asyncio.sleep(injection.latency_ms / 1000)
            if injection.disconnect and not req.in_batch:
                raise Disconnect()
            if injection.status is not None:
                from m365sim.graph.faults import FAULT_STATUSES

                code, message = FAULT_STATUSES[injection.status]
                headers = {}
                if injection.retry_after is not None:
                    headers["Retry-After"] = str(injection.retry_after)
                raise GraphError(injection.status, code, message, headers=headers)
        if user is not None and found.op is not None:
            authorize_mailbox(state, caller, user, found.op)
        ctx = Ctx(state=state, req=req, caller=caller, params=params, user=user)
        if found.is_async:
            response = await found.handler(ctx)  # type: ignore[misc]
        else:
            with state.store.lock:
                response = found.handler(ctx)  # type: ignore[assignment]
        assert isinstance(response, GraphResponse)
    except GraphError as err:
        response = error_response(state, req, err)
    except Disconnect:
        _record(state, req, 0, endpoint, mailbox_id, client_id)
        raise
    except Exception:  # the envelope, never a traceback
        log.exception("unhandled error in %s %s", req.method, req.path)
        response = error_response(
            state,
            req,
            GraphError(
                500, "generalException", "An internal server error occurred. The operation failed."
            ),
        )
    finally:
        if throttle_key is not None:
            state.throttle.release(throttle_key)
    response.headers.setdefault("request-id", req.request_id)
    response.headers.setdefault(
        "client-request-id", req.header("client-request-id") or req.request_id
    )
    _record(state, req, response.status, endpoint, mailbox_id, client_id)
    return response


def _record(
    state: EmulatorState,
    req: GraphRequest,
    status: int,
    endpoint: str,
    mailbox_id: str | None,
    client_id: str | None,
) -> None:
    state.record(
        RequestRecord(
            time=state.clock.time(),
            method=req.method,
            path=req.path,
            status=status,
            endpoint=endpoint,
            mailbox_id=mailbox_id,
            client_id=client_id,
            request_id=req.request_id,
            in_batch=req.in_batch,
        )
    )


class Disconnect(Exception):
    """Injected fault: cut the connection instead of answering."""
