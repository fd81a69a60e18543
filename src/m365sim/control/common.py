"""Shared plumbing of the control API: JSON in and out, clear 400/404/409 errors, lookups.

The control API is the emulator's own (not Microsoft's), so its errors are simple:
``{"error": "<what is wrong, in words>"}`` with 400 for bad input, 404 for an unknown id in the
path, 409 for a conflict (duplicate id, name or domain) and 413 for an oversized body. Builders
raise :class:`ControlError`; :func:`endpoint` turns it (and anything unexpected) into that body,
so no request ever ends in a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import wraps
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from m365sim import jsonbody
from m365sim.clock import Clock, iso, parse_iso
from m365sim.store import Recipient, Store, Tenant, User

log = logging.getLogger("m365sim.control")

JsonDict = dict[str, Any]
MAX_JSON_BODY = 64 * 1024 * 1024


class ControlError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def bad(message: str) -> ControlError:
    return ControlError(400, message)


def not_found(message: str) -> ControlError:
    return ControlError(404, message)


def conflict(message: str) -> ControlError:
    return ControlError(409, message)


def ok(body: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status)


Handler = Callable[[Request], Awaitable[Response]]


def endpoint(fn: Handler) -> Handler:
    """Wrap a route handler: ControlError -> its status; anything else -> 500 without a trace."""

    @wraps(fn)
    async def run(request: Request) -> Response:
        try:
            return await fn(request)
        except ControlError as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        except Exception as exc:
            log.exception("control API failure in %s %s", request.method, request.url.path)
            return JSONResponse(
                {"error": f"internal error in the emulator: {type(exc).__name__}"},
                status_code=500,
            )

    return run


async def read_body(request: Request, limit: int, too_large: str | None = None) -> bytes:
    """The request body, refusing (413) once it grows past ``limit`` without reading on."""
    message = too_large or f"the request body exceeds the limit of {limit} bytes"
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ControlError(413, message)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ControlError(413, message)
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(raw: bytes) -> JsonDict:
    if not raw.strip():
        raise bad("a JSON object is required in the request body")
    try:
        data = jsonbody.load(raw)
    except jsonbody.JsonBodyError as exc:
        raise bad(f"the request body is not valid JSON: {exc.message}") from exc
    if not isinstance(data, dict):
        raise bad("the request body must be a JSON object")
    return data


async def read_json(request: Request, *, optional: bool = False) -> JsonDict:
    raw = await read_body(request, MAX_JSON_BODY)
    if optional and not raw.strip():
        return {}
    return parse_json(raw)


# ------------------------------------------------------------------------- typed field access
def _where(ctx: str, name: str) -> str:
    return f"{ctx}.{name}" if ctx else name


def req_str(data: JsonDict, name: str, ctx: str = "") -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value.strip():
        raise bad(f"{_where(ctx, name)} is required and must be a non-empty string")
    return value.strip()


def opt_str(data: JsonDict, name: str, ctx: str = "", default: str | None = None) -> str | None:
    value = data.get(name)
    if value is None:
        return default
    if not isinstance(value, str):
        raise bad(f"{_where(ctx, name)} must be a string")
    return value


def opt_bool(data: JsonDict, name: str, ctx: str = "", default: bool = False) -> bool:
    value = data.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad(f"{_where(ctx, name)} must be true or false")
    return value


def opt_int(
    data: JsonDict, name: str, ctx: str = "", default: int = 0, minimum: int | None = None
) -> int:
    value = data.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(f"{_where(ctx, name)} must be an integer")
    if minimum is not None and value < minimum:
        raise bad(f"{_where(ctx, name)} must be at least {minimum}")
    return value


def str_list(data: JsonDict, name: str, ctx: str = "") -> list[str]:
    value = data.get(name)
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad(f"{_where(ctx, name)} must be a list of strings")
    return [v.strip() for v in value if v.strip()]


def obj_list(data: JsonDict, name: str, ctx: str = "") -> list[JsonDict]:
    value = data.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise bad(f"{_where(ctx, name)} must be a list of objects")
    return value


def check_keys(data: JsonDict, allowed: set[str], ctx: str = "") -> None:
    """Refuse unknown field names, so a typo ("pasword") is an error, not a silent default."""
    unknown = sorted(set(data) - allowed)
    if unknown:
        where = f" in {ctx}" if ctx else ""
        raise bad(
            f"unknown field(s){where}: {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )


# ------------------------------------------------------------------------- dates
_RELATIVE_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_when(value: Any, clock: Clock, where: str) -> datetime:
    """An ISO 8601 date-time, epoch seconds, or a time relative to now such as ``-2d3h``."""
    if isinstance(value, bool):
        raise bad(f"{where} must be a date-time")
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(float(value), tz=UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise bad(f"{where} is not a valid epoch time") from exc
    if isinstance(value, datetime):  # YAML turns unquoted timestamps into datetimes
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value.strip():
        raise bad(f"{where} must be an ISO 8601 date-time or a relative time like '-2d3h'")
    text = value.strip()
    if text[0] in "+-" and len(text) > 1 and text[1].isdigit() and "T" not in text:
        sign = -1 if text[0] == "-" else 1
        total = 0.0
        number = ""
        for ch in text[1:]:
            if ch.isdigit() or ch == ".":
                number += ch
            elif ch.lower() in _RELATIVE_UNITS and number:
                total += float(number) * _RELATIVE_UNITS[ch.lower()]
                number = ""
            else:
                raise bad(
                    f"{where}: cannot read relative time {value!r} (use e.g. '-3d', '-2h30m')"
                )
        if number:
            raise bad(f"{where}: relative time {value!r} needs a unit (w, d, h, m or s)")
        return clock.now() + timedelta(seconds=sign * total)
    try:
        return parse_iso(text)
    except ValueError as exc:
        raise bad(f"{where} is not an ISO 8601 date-time: {value!r}") from exc


def iso_or_none(dt: datetime | None) -> str | None:
    return iso(dt) if dt is not None else None


def epoch_iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return iso(datetime.fromtimestamp(seconds, tz=UTC))


# ------------------------------------------------------------------------- lookups
def find_tenant(store: Store, key: str) -> Tenant:
    tenant = store.tenant(key)
    if tenant is None:
        raise not_found(f"tenant {key!r} not found (use its id or domain)")
    return tenant


def find_mailbox(store: Store, key: str) -> tuple[Tenant, User]:
    found = store.find_user(key)
    if found is None:
        raise not_found(f"mailbox {key!r} not found (use the user's id or userPrincipalName)")
    return found


def lookup_user(tenant: Tenant, key: str) -> User | None:
    """A user by id, user principal name, or bare alias (``alice`` = ``alice@{domain}``)."""
    user = tenant.user(key)
    if user is None and "@" not in key:
        user = tenant.user(f"{key}@{tenant.domain}")
    return user


def user_in(tenant: Tenant, key: str, where: str) -> User:
    """A user named in a request body: unknown is bad input (400), not a missing resource."""
    user = lookup_user(tenant, key)
    if user is None:
        raise bad(f"{where}: no user or mailbox {key!r} in tenant {tenant.domain}")
    return user


def recipient(value: Any, where: str) -> Recipient:
    """``"a@b.c"``, ``"Name <a@b.c>"``, ``{"name", "address"}`` or Graph's
    ``{"emailAddress": {"name", "address"}}``."""
    if isinstance(value, dict):
        inner = value.get("emailAddress", value)
        if not isinstance(inner, dict):
            raise bad(f"{where}.emailAddress must be an object")
        address = inner.get("address")
        name = inner.get("name")
        if not isinstance(address, str) or "@" not in address:
            raise bad(f"{where}: an e-mail address (name@domain) is required")
        if name is not None and not isinstance(name, str):
            raise bad(f"{where}: name must be a string")
        return Recipient(name=(name or address).strip(), address=address.strip())
    if isinstance(value, str) and value.strip():
        from email.utils import parseaddr

        name, address = parseaddr(value)
        if "@" not in address:
            raise bad(f"{where}: {value!r} is not an e-mail address")
        return Recipient(name=name or address, address=address)
    raise bad(f"{where} must be an address string or an object with an address")


def recipients(data: JsonDict, name: str, ctx: str = "") -> list[Recipient]:
    value = data.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        value = [value]
    return [recipient(v, f"{_where(ctx, name)}[{i}]") for i, v in enumerate(value)]


def recipient_json(r: Recipient | None) -> JsonDict | None:
    return {"name": r.name, "address": r.address} if r is not None else None
