"""OData query options shared by Graph handlers ($select for now; $filter/$orderby later)."""

from __future__ import annotations

from collections.abc import Iterable

from m365sim.errors import GraphError


def select_fields(
    query: dict[str, str], *, allowed: Iterable[str], default: Iterable[str]
) -> list[str]:
    """Fields named by ``$select`` (``id`` always included), or ``default``.

    Unknown names answer 400 as Graph does:
    "Could not find a property named 'x' on type 'microsoft.graph.user'."
    """
    raw = query.get("$select")
    if raw is None or not raw.strip():
        return list(default)
    by_lower = {name.lower(): name for name in allowed}
    fields: list[str] = []
    for part in raw.split(","):
        name = part.strip()
        if not name:
            continue
        real = by_lower.get(name.lower())
        if real is None:
            raise GraphError(
                400,
                "BadRequest",
                f"Could not find a property named '{name}' on type 'microsoft.graph.entity'.",
            )
        if real not in fields:
            fields.append(real)
    if "id" in by_lower and "id" not in fields:
        fields.append("id")
    return fields
