"""Reading untrusted JSON request bodies without letting them break the emulator later.

Every JSON body the emulator accepts (Graph, ``$batch``, control API, identity helpers) goes
through :func:`load`, which refuses, before anything can be stored:

* **nesting deeper than a limit** — ODataLib's JSON reader stops at a maximum nesting depth
  (``MessageQuotas.MaxNestingDepth``, 100 by default) and Graph answers 400; Python's own
  parser would otherwise hit its recursion limit (a 500) somewhere below 1,000 levels.
* **lone UTF-16 surrogates** (``"x\\udc00y"`` as a JSON escape, in a value or a key). JSON
  allows the escape, but the string is not Unicode text: it cannot be encoded as UTF-8, so
  storing it would make every later response that contains it fail (the folder list, the
  viewer, a saved state file). Graph's reader refuses malformed surrogate pairs with a 400 as
  well; the wording here is the emulator's.

Both checks walk the parsed value iteratively, so a hostile body costs O(size) and never
recursion. Callers turn :class:`JsonBodyError` into their own error shape.
"""

from __future__ import annotations

import json
from typing import Any

DEFAULT_MAX_DEPTH = 100


class JsonBodyError(ValueError):
    """The body is not acceptable JSON; ``kind`` is ``syntax``, ``depth`` or ``surrogate``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def has_lone_surrogate(text: str) -> bool:
    """Whether ``text`` holds a UTF-16 surrogate code point (which UTF-8 cannot encode)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check_value(value: Any, *, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
    """Raise :class:`JsonBodyError` when a parsed JSON value nests too deep or holds a lone
    surrogate in any string (keys included)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if has_lone_surrogate(item):
                raise _surrogate()
        elif isinstance(item, dict | list):
            if depth > max_depth:
                raise _too_deep(max_depth)
            if isinstance(item, dict):
                for key, child in item.items():
                    if has_lone_surrogate(key):
                        raise _surrogate()
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)


def load(raw: bytes | str, *, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Parse and check one JSON document (see the module docstring)."""
    try:
        value = json.loads(raw)
    except RecursionError as exc:
        raise _too_deep(max_depth) from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise JsonBodyError("syntax", f"invalid JSON: {exc}") from exc
    check_value(value, max_depth=max_depth)
    return value


def _too_deep(max_depth: int) -> JsonBodyError:
    return JsonBodyError(
        "depth",
        "The maximum recursion depth limit was reached. The depth of nested values in a "
        f"single property cannot exceed {max_depth}.",
    )


def _surrogate() -> JsonBodyError:
    return JsonBodyError(
        "surrogate",
        "The JSON payload contains an invalid string: a lone UTF-16 surrogate (\\uD800-\\uDFFF "
        "without its pair) is not a character.",
    )
