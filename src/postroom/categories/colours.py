"""The categories' colours in Outlook: which are missing or differ on each mailbox's master
category list, creating the missing ones and aligning those that differ (on request only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from postroom.categories.form import COLOUR_MAILBOXES, RECENT_SELECT
from postroom.graph import Conflict, GraphClient, GraphError, NotFound
from postroom.integrations.models import Category, Mailbox


# ---------------------------------------------------------------------- Graph, read only
@dataclass(frozen=True)
class OtherColour:
    """A category that exists in a mailbox's master list with another colour than Postroom's:
    Outlook shows its colour, not Postroom's."""

    name: str
    outlook: str  # the colour preset in Outlook
    wanted: str  # the category's colour preset in Postroom


@dataclass
class ColourCheck:
    """One mailbox's master list compared with the categories: which have no colour, and
    which have another colour there."""

    address: str
    missing: list[str] = field(default_factory=list)
    problem: str | None = None
    differ: list[OtherColour] = field(default_factory=list)


@dataclass
class RemoteFacts:
    recent: list[dict[str, Any]] | None = None
    recent_problem: str | None = None
    colours: list[ColourCheck] | None = None


def _graph_words(exc: GraphError) -> str:
    if exc.status == 403:
        return "no permission to read it"
    if isinstance(exc, NotFound):
        return "not found"
    return f"Microsoft answered {exc.code or exc.status or 'with an error'}"


async def _recent_messages(client: GraphClient, mailbox: str) -> list[dict[str, Any]]:
    _, body, _ = await client.request(
        "GET",
        f"{client.mailbox_path(mailbox)}/mailFolders/inbox/messages",
        mailbox=mailbox,
        params={"$select": RECENT_SELECT, "$top": "10", "$orderby": "receivedDateTime desc"},
    )
    items = body.get("value", []) if isinstance(body, dict) else []
    return [m for m in items if isinstance(m, dict) and isinstance(m.get("id"), str)]


def _uncoloured(master: list[Any], categories: list[Category]) -> list[str]:
    coloured = {
        str(c.get("displayName") or "").strip().casefold()
        for c in master
        if isinstance(c, dict) and str(c.get("color") or "none").lower() != "none"
    }
    return [c.name for c in categories if c.name.strip().casefold() not in coloured]


def _other_colours(master: list[Any], categories: list[Category]) -> list[OtherColour]:
    """Categories whose name is in the master list with another colour (not "none")."""
    in_outlook = {
        str(c.get("displayName") or "").strip().casefold(): str(c.get("color") or "none").lower()
        for c in master
        if isinstance(c, dict)
    }
    differ = []
    for category in categories:
        colour = in_outlook.get(category.name.strip().casefold(), "none")
        if colour != "none" and colour != category.color.lower():
            differ.append(OtherColour(category.name, colour, category.color))
    return differ


async def _colour_checks(
    client: GraphClient, mailboxes: list[Mailbox], categories: list[Category]
) -> list[ColourCheck]:
    checks = []
    for box in mailboxes[:COLOUR_MAILBOXES]:
        check = ColourCheck(box.address)
        try:
            master = await client.master_categories(box.graph_user_id)
            check.missing = _uncoloured(master, categories)
            check.differ = _other_colours(master, categories)
        except GraphError as exc:
            check.problem = _graph_words(exc)
        checks.append(check)
    return checks


async def _align_colours(
    client: GraphClient, mailboxes: list[Mailbox], categories: list[Category]
) -> tuple[int, list[str]]:
    """Give the categories that exist in Outlook with another colour Postroom's colour (the
    person asked for it on the categories page). Only the colour changes: the name, and every
    email that has the category, stay as they are."""
    changed, problems = 0, []
    wanted = {c.name.strip().casefold(): c.color for c in categories}
    for box in mailboxes[:COLOUR_MAILBOXES]:
        try:
            master = await client.master_categories(box.graph_user_id)
        except GraphError as exc:
            problems.append(f"{box.address}: {_graph_words(exc)}.")
            continue
        for item in master:
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                continue
            name = str(item.get("displayName") or "")
            colour = wanted.get(name.strip().casefold())
            if colour is None or str(item.get("color") or "none").lower() in ("none", colour):
                continue
            path = f"{client.mailbox_path(box.graph_user_id)}/outlook/masterCategories"
            try:
                await client.request(
                    "PATCH",
                    f"{path}/{quote(item['id'], safe='')}",
                    mailbox=box.graph_user_id,
                    json={"color": colour},
                )
                changed += 1
            except GraphError as exc:
                problems.append(f"{box.address}: {name}: {_graph_words(exc)}.")
    return changed, problems


async def _create_colours(
    client: GraphClient,
    mailboxes: list[Mailbox],
    categories: list[Category],
    made: list[tuple[str, str, str]] | None = None,
) -> tuple[int, list[str]]:
    """Create the master categories missing in each mailbox; an existing name is fine. Each
    one created is added to ``made`` as (mailbox row id, name, Graph id), for the caller to
    record (a disconnect offers to remove exactly those)."""
    created, problems = 0, []
    for box in mailboxes[:COLOUR_MAILBOXES]:
        try:
            master = await client.master_categories(box.graph_user_id)
        except GraphError as exc:
            problems.append(f"{box.address}: {_graph_words(exc)}.")
            continue
        present = {str(c.get("displayName") or "").strip().casefold() for c in master}
        for category in categories:
            if category.name.strip().casefold() in present:
                continue
            try:
                answer = await client.create_master_category(
                    box.graph_user_id, category.name, category.color
                )
                created += 1
                if made is not None:
                    made.append((box.id, category.name, str(answer.get("id") or "")))
            except Conflict:
                pass  # created meanwhile (by the sync, or in Outlook): that is what we want
            except GraphError as exc:
                problems.append(f"{box.address}: {category.name}: {_graph_words(exc)}.")
    return created, problems
