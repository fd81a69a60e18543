"""The checked-in CSDL extract (src/m365sim/schema/graph-mail.json) and a JSON checker.

:func:`problems` walks a JSON value the emulator returned and reports every property name the
CSDL type does not declare (with base types) and every value whose JSON type does not fit the
declared Edm type, complex type, enum or collection. OData annotations (``@odata.*``,
``@removed``) are not properties and are skipped.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import m365sim

SCHEMA_FILE = Path(m365sim.__file__).parent / "schema" / "graph-mail.json"

# Properties the live service returns although the v1.0 CSDL does not declare them.
UNDECLARED_BUT_SERVED = {"mailFolder": {"sizeInBytes": "Edm.Int64"}}


@cache
def schema() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SCHEMA_FILE.read_text())
    return data


def _short(type_name: str) -> str:
    return type_name.removeprefix("graph.").removeprefix("microsoft.graph.")


def properties(type_name: str) -> dict[str, dict[str, Any]]:
    """Declared properties of an entity or complex type, base types included."""
    data = schema()
    name = _short(type_name)
    structured = data["entityTypes"].get(name) or data["complexTypes"].get(name)
    if structured is None:
        raise KeyError(f"{type_name} is not in the extract")
    props: dict[str, dict[str, Any]] = {}
    if structured["baseType"]:
        props.update(properties(structured["baseType"]))
    props.update(structured["properties"])
    for prop, edm in UNDECLARED_BUT_SERVED.get(name, {}).items():
        props.setdefault(prop, {"type": edm, "nullable": False})
    return props


def enum_members(type_name: str) -> list[str] | None:
    members: list[str] | None = schema()["enumTypes"].get(_short(type_name))
    return members


def operation(name: str, binding: str, kind: str = "actions") -> dict[str, Any]:
    for op in schema()[kind]:
        if op["name"] == name and op["bindingType"] == binding:
            return dict(op)
    raise KeyError(f"{name} bound to {binding}")


def problems(value: Any, type_name: str, path: str = "$") -> list[str]:
    """What in ``value`` does not conform to ``type_name`` (empty when it all does)."""
    if type_name.startswith("Collection(") and type_name.endswith(")"):
        if not isinstance(value, list):
            return [f"{path}: expected a collection, got {type(value).__name__}"]
        inner = type_name[len("Collection(") : -1]
        return [p for i, item in enumerate(value) for p in problems(item, inner, f"{path}[{i}]")]
    if value is None:
        return []
    if type_name.startswith("Edm."):
        return _primitive(value, type_name, path)
    members = enum_members(type_name)
    if members is not None:
        if value not in members:
            return [f"{path}: {value!r} is not a member of {type_name}"]
        return []
    if not isinstance(value, dict):
        return [f"{path}: expected an object of {type_name}, got {type(value).__name__}"]
    declared = properties(type_name)
    found: list[str] = []
    for key, item in value.items():
        if key.startswith("@"):
            continue
        if key not in declared:
            found.append(f"{path}.{key}: not a property of {type_name}")
            continue
        found += problems(item, declared[key]["type"], f"{path}.{key}")
    return found


def _primitive(value: Any, edm: str, path: str) -> list[str]:
    ok: bool
    if edm == "Edm.String":
        ok = isinstance(value, str)
    elif edm == "Edm.Boolean":
        ok = isinstance(value, bool)
    elif edm in ("Edm.Int32", "Edm.Int64"):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif edm == "Edm.DateTimeOffset":
        ok = isinstance(value, str) and _is_datetime(value)
    elif edm == "Edm.Binary":
        ok = isinstance(value, str) and _is_base64(value)
    elif edm == "Edm.Guid":
        ok = isinstance(value, str) and _is_guid(value)
    else:
        return [f"{path}: no check for {edm}"]
    return [] if ok else [f"{path}: {value!r} is not {edm}"]


def _is_datetime(text: str) -> bool:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return parsed.tzinfo is not None


def _is_base64(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _is_guid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
