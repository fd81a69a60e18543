"""Save the emulator's whole Microsoft 365 to a JSON file and load it back.

What is saved: every tenant (users with passwords and security state, mailboxes with their
folders, messages, attachments, master categories and folder change logs, groups, consents,
application access policies), every app registration with its secrets, authorization codes,
refresh tokens, the deletion and outbound audits, and the clock's offset. What is not saved:
request logs and counters, throttling windows, fault rules and change-notification
subscriptions (they belong to a running process; clients re-subscribe after a restart, as
they must after ``subscriptionRemoved``).

The encoding follows the dataclasses in :mod:`m365sim.store` by their type annotations, so a
field another module adds (with a default) is saved and loaded without touching this file:
``datetime`` becomes ISO 8601 with microseconds, ``bytes`` base64, sets sorted lists, and dicts
with tuple keys (per-user consents) lists of ``[key, value]`` pairs. Change logs are kept, so a
delta link issued before a save still works after the load. Loading fills the existing
:class:`Store` in place (listeners such as the notification dispatcher stay attached) and only
after the whole file has been decoded, so a bad file leaves the running state untouched.

Files saved before users had directory roles carry ``is_admin``; such an administrator is
loaded as a Global Administrator.

The clock only moves forward: loading sets its offset to the saved one when that is larger.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import types
import typing
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from m365sim.store import (
    App,
    AuthCode,
    Deletion,
    OutboundMail,
    RefreshToken,
    Store,
    Tenant,
    User,
)

FORMAT = "m365sim-state"
VERSION = 1

# The Store's saved attributes and their types.
STORE_FIELDS: dict[str, Any] = {
    "tenants": dict[str, Tenant],
    "apps": dict[str, App],
    "deletions": list[Deletion],
    "outbound": list[OutboundMail],
    "auth_codes": dict[str, AuthCode],
    "refresh_tokens": dict[str, RefreshToken],
}


class StateFileError(ValueError):
    """The file is not an m365sim state file, or does not match the model."""


# ------------------------------------------------------------------------------- encoding
def encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, set | frozenset):
        items = [encode(v) for v in value]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, tuple | list):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {k: encode(v) for k, v in value.items()}
        return {"__pairs__": [[encode(k), encode(v)] for k, v in value.items()]}
    return value


# ------------------------------------------------------------------------------- decoding
_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        module = __import__(cls.__module__, fromlist=["*"])
        hints = typing.get_type_hints(cls, vars(module))
        _HINTS[cls] = hints
    return hints


def decode(tp: Any, raw: Any, where: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return raw
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if raw is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return decode(arg, raw, where)
            except StateFileError as exc:
                errors.append(str(exc))
        raise StateFileError(errors[0] if errors else f"{where}: unexpected null")
    if origin is Literal:
        if raw not in get_args(tp):
            raise StateFileError(f"{where}: {raw!r} is not one of {get_args(tp)}")
        return raw
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(raw, dict):
            raise StateFileError(f"{where}: expected an object")
        hints = _hints(tp)
        kwargs: dict[str, Any] = {}
        late: dict[str, Any] = {}
        for f in dataclasses.fields(tp):
            if f.name not in raw:
                if (
                    f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING
                    and f.init
                ):
                    raise StateFileError(f"{where}: missing field {f.name!r}")
                continue
            value = decode(hints[f.name], raw[f.name], f"{where}.{f.name}")
            if f.init:
                kwargs[f.name] = value
            else:
                late[f.name] = value
        obj = tp(**kwargs)
        for name, value in late.items():
            setattr(obj, name, value)
        if isinstance(obj, User) and raw.get("is_admin") is True and "directory_roles" not in raw:
            obj.is_admin = True  # a file saved before directory roles: Global Administrator
        return obj
    if origin in (list, tuple, set, frozenset):
        if not isinstance(raw, list):
            raise StateFileError(f"{where}: expected a list")
        args = get_args(tp)
        if origin is tuple:
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(decode(args[0], v, f"{where}[{i}]") for i, v in enumerate(raw))
            if len(args) != len(raw):
                raise StateFileError(f"{where}: expected {len(args)} items")
            return tuple(
                decode(a, v, f"{where}[{i}]")
                for i, (a, v) in enumerate(zip(args, raw, strict=True))
            )
        item = args[0] if args else Any
        values = [decode(item, v, f"{where}[{i}]") for i, v in enumerate(raw)]
        return origin(values) if origin is not list else values
    if origin is dict:
        key_tp, value_tp = get_args(tp) or (Any, Any)
        if not isinstance(raw, dict):
            raise StateFileError(f"{where}: expected an object")
        if "__pairs__" in raw:
            return {
                decode(key_tp, k, f"{where}.key"): decode(value_tp, v, f"{where}[{k!r}]")
                for k, v in raw["__pairs__"]
            }
        return {
            decode(key_tp, k, f"{where}.key"): decode(value_tp, v, f"{where}[{k!r}]")
            for k, v in raw.items()
        }
    if tp is datetime:
        if not isinstance(raw, str):
            raise StateFileError(f"{where}: expected a date-time string")
        try:
            return datetime.fromisoformat(raw)
        except ValueError as exc:
            raise StateFileError(f"{where}: {raw!r} is not a date-time") from exc
    if tp is bytes:
        if not isinstance(raw, str):
            raise StateFileError(f"{where}: expected base64 text")
        try:
            return base64.b64decode(raw, validate=True)
        except ValueError as exc:
            raise StateFileError(f"{where}: invalid base64") from exc
    if tp is float:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise StateFileError(f"{where}: expected a number")
        return float(raw)
    if tp in (int, str, bool):
        if not isinstance(raw, tp) or (tp is int and isinstance(raw, bool)):
            raise StateFileError(f"{where}: expected {tp.__name__}")
        return raw
    if tp is type(None):
        if raw is not None:
            raise StateFileError(f"{where}: expected null")
        return None
    return raw  # a type this codec does not know: keep the JSON value


# ------------------------------------------------------------------------------- entry points
def snapshot(store: Store) -> dict[str, Any]:
    """The store as a JSON-able document."""
    with store.lock:
        data: dict[str, Any] = {"format": FORMAT, "version": VERSION}
        data["clockOffset"] = store.clock.offset
        data["savedAt"] = store.clock.now().isoformat()
        for name in STORE_FIELDS:
            data[name] = encode(getattr(store, name))
        return data


def restore(store: Store, data: Any) -> None:
    """Replace the store's content with a snapshot (decoded fully before anything changes)."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise StateFileError("not an m365sim state file (format must be 'm365sim-state')")
    if data.get("version") != VERSION:
        raise StateFileError(f"unsupported state file version {data.get('version')!r}")
    decoded = {
        name: decode(tp, data.get(name, get_origin(tp)()), name)
        for name, tp in STORE_FIELDS.items()
    }
    offset = data.get("clockOffset", 0.0)
    if isinstance(offset, bool) or not isinstance(offset, int | float) or offset < 0:
        raise StateFileError("clockOffset must be a non-negative number")
    with store.lock:
        store.clear()
        for name, value in decoded.items():
            target = getattr(store, name)  # fill in place: others may hold these objects
            if isinstance(target, dict):
                target.update(value)
            else:
                target.extend(value)
        store.reindex()
        if offset > store.clock.offset:
            store.clock.advance(offset - store.clock.offset)


def save(store: Store, path: Path) -> int:
    """Write the store to ``path`` atomically (temporary file, then rename); returns bytes."""
    payload = json.dumps(snapshot(store), separators=(",", ":"), ensure_ascii=False).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)
    return len(payload)


def load(store: Store, path: Path) -> None:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError as exc:
        raise StateFileError(f"no state file at {path}") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise StateFileError(f"{path} is not valid JSON: {exc}") from exc
    restore(store, data)
