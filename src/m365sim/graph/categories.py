"""``/outlook/masterCategories``: the mailbox's master category list (graph.md 3.7).

An outlookCategory is ``{id (GUID), displayName, color}``. Reading needs MailboxSettings.Read,
changing MailboxSettings.ReadWrite (operations ``settings_read`` / ``settings_write``). A
delegated token may only reach its own user's list: another user's (a shared mailbox's) answers
403 ``ErrorAccessDenied`` even with FullAccess, there being no ``MailboxSettings.*.Shared``
permission (:mod:`.access`); app-only tokens reach any mailbox the access policies allow.

* ``GET`` lists every category in creation order (the list is not paged).
* ``POST {"displayName", "color"}`` -> 201. ``color`` is ``none`` or ``preset0`` ..
  ``preset24``, accepted in any case and written lowercase as the CSDL ``categoryColor`` enum
  does; omitted means ``none``; anything else answers 400 ``RequestBodyRead`` "Requested value
  'x' was not found.". ``displayName`` is required and unique per mailbox (case-insensitive);
  a duplicate answers ``config.category_exists_status`` with ``config.category_exists_code``
  (default 409 ``ErrorDuplicateCategory``) — Microsoft's answer is not documented or verified,
  hence the settings.
* ``PATCH`` may change only ``color``: a category cannot be renamed, so a different
  ``displayName`` answers 400 ``ErrorInvalidPropertySet``.
* ``DELETE`` -> 204. Messages keep the category name in their ``categories``; it is just no
  longer in the master list (Outlook then shows it uncoloured).

Ids must be GUIDs: anything else answers 400 ``ErrorInvalidIdMalformed``, an unknown GUID 404
``ErrorItemNotFound``.
"""

from __future__ import annotations

import uuid
from typing import Any

from m365sim import ids
from m365sim.errors import GraphError, invalid_id, item_not_found
from m365sim.graph.dispatch import Ctx, GraphResponse, route
from m365sim.graph.odata import select_fields
from m365sim.graph.serialize import (
    CATEGORY_PROPERTIES,
    CATEGORY_TYPE,
    body_read_error,
    category_json,
    context_url,
    read_enum,
    read_string,
    select_suffix,
    unknown_body_property,
)
from m365sim.store import CATEGORY_COLORS, Category

_CONTEXT = "outlook/masterCategories"


def _find(ctx: Ctx) -> Category:
    key = ctx.params["category"]
    try:
        uuid.UUID(key)
    except ValueError as exc:
        raise invalid_id() from exc
    categories = ctx.mailbox_user.mailbox.categories
    category = categories.get(key) or categories.get(key.lower())
    if category is None:
        raise item_not_found()
    return category


def _fields(ctx: Ctx) -> list[str] | None:
    if "$select" not in ctx.req.query:
        return None
    return select_fields(
        ctx.req.query,
        allowed=CATEGORY_PROPERTIES,
        default=CATEGORY_PROPERTIES,
        type_name=CATEGORY_TYPE,
        code="RequestBroker--ParseUri",
    )


def _render(category: Category, fields: list[str] | None) -> dict[str, Any]:
    data = category_json(category)
    return {k: v for k, v in data.items() if fields is None or k in fields}


def _read(body: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, value in body.items():
        if key.startswith("@odata."):
            if key == "@odata.type" and str(value).lstrip("#").lower() != CATEGORY_TYPE.lower():
                raise body_read_error(
                    f"A type named '{value}' could not be resolved by the model. When a model "
                    "is available, each type name must resolve to a valid type."
                )
            continue
        low = key.lower()
        if low == "displayname":
            values["displayName"] = read_string(value)
        elif low == "color":
            values["color"] = read_enum(value, CATEGORY_COLORS)
        elif low == "id":
            values["id"] = read_string(value)
        else:
            raise unknown_body_property(key, CATEGORY_TYPE)
    return values


def _entity(ctx: Ctx, category: Category, status: int = 200) -> GraphResponse:
    fields = _fields(ctx)
    body: dict[str, Any] = {
        "@odata.context": context_url(
            ctx, _CONTEXT + select_suffix(ctx.req.query, fields) + "/$entity"
        )
    }
    body.update(_render(category, fields))
    return GraphResponse(status, body)


@route("GET", "/outlook/masterCategories", mailbox=True, op="settings_read")
def list_categories(ctx: Ctx) -> GraphResponse:
    fields = _fields(ctx)
    categories = ctx.mailbox_user.mailbox.categories.values()
    return GraphResponse(
        200,
        {
            "@odata.context": context_url(ctx, _CONTEXT + select_suffix(ctx.req.query, fields)),
            "value": [_render(c, fields) for c in categories],
        },
    )


@route("POST", "/outlook/masterCategories", mailbox=True, op="settings_write")
def create_category(ctx: Ctx) -> GraphResponse:
    values = _read(ctx.json())
    if "id" in values:
        raise GraphError(400, "ErrorInvalidPropertySet", "Set action is invalid for property.")
    name = values.get("displayName")
    if name is None or not name.strip():
        raise GraphError(400, "ErrorInvalidRequest", "The category name can't be empty.")
    mailbox = ctx.mailbox_user.mailbox
    if any(c.display_name.lower() == name.lower() for c in mailbox.categories.values()):
        config = ctx.state.config
        raise GraphError(
            config.category_exists_status,
            config.category_exists_code,
            f"A category with the name '{name}' already exists.",
        )
    category = Category(id=ids.guid(), display_name=name, color=values.get("color", "none"))
    mailbox.categories[category.id] = category
    return _entity(ctx, category, status=201)


@route("GET", "/outlook/masterCategories/{category}", mailbox=True, op="settings_read")
def get_category(ctx: Ctx) -> GraphResponse:
    return _entity(ctx, _find(ctx))


@route("PATCH", "/outlook/masterCategories/{category}", mailbox=True, op="settings_write")
def update_category(ctx: Ctx) -> GraphResponse:
    category = _find(ctx)
    values = _read(ctx.json())
    if values.get("id") not in (None, category.id):
        raise GraphError(400, "ErrorInvalidPropertySet", "Set action is invalid for property.")
    if "displayName" in values and values["displayName"] != category.display_name:
        raise GraphError(400, "ErrorInvalidPropertySet", "Set action is invalid for property.")
    if "color" in values:
        category.color = values["color"]
    return _entity(ctx, category)


@route("DELETE", "/outlook/masterCategories/{category}", mailbox=True, op="settings_write")
def delete_category(ctx: Ctx) -> GraphResponse:
    category = _find(ctx)
    del ctx.mailbox_user.mailbox.categories[category.id]
    return GraphResponse(204)
