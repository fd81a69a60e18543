"""``/me``, ``/users`` and ``/users/{id | userPrincipalName}`` (directory reads).

Delegated callers read themselves with ``User.Read``; reading others needs
``User.ReadBasic.All`` or ``User.Read.All``. App-only callers need ``User.Read.All`` (or
``Directory.Read.All``). Missing permissions answer 403 ``Authorization_RequestDenied``
"Insufficient privileges to complete the operation.", as the directory does.
"""

from __future__ import annotations

from typing import Any

from m365sim.errors import GraphError
from m365sim.graph.dispatch import Ctx, GraphResponse, route
from m365sim.graph.odata import select_fields
from m365sim.store import User

USER_DEFAULT = (
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
)
USER_ALL = USER_DEFAULT + ("accountEnabled", "userType")


def user_json(user: User) -> dict[str, Any]:
    return {
        "businessPhones": [],
        "displayName": user.display_name,
        "givenName": user.given_name or None,
        "jobTitle": user.job_title,
        "mail": user.mail,
        "mobilePhone": None,
        "officeLocation": None,
        "preferredLanguage": "en-US",
        "surname": user.surname or None,
        "userPrincipalName": user.user_principal_name,
        "id": user.id,
        "accountEnabled": user.account_enabled,
        "userType": "Member",
    }


def _denied() -> GraphError:
    return GraphError(
        403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation."
    )


def _shape(ctx: Ctx, user: User) -> dict[str, Any]:
    fields = select_fields(ctx.req.query, allowed=USER_ALL, default=USER_DEFAULT)
    data = user_json(user)
    return {k: data[k] for k in fields}


@route("GET", "/me")
def get_me(ctx: Ctx) -> GraphResponse:
    if ctx.caller.user is None:
        raise GraphError(
            400, "BadRequest", "/me request is only valid with delegated authentication flow."
        )
    if not ctx.caller.has_scope(
        "User.Read", "User.ReadWrite", "User.ReadBasic.All", "User.Read.All", "Directory.Read.All"
    ):
        raise _denied()
    body = {"@odata.context": ctx.link("/$metadata#users/$entity")}
    body.update(_shape(ctx, ctx.caller.user))
    return GraphResponse(200, body)


@route("GET", "/users/{user}")
def get_user(ctx: Ctx) -> GraphResponse:
    key = ctx.params["user"]
    user = ctx.tenant.user(key)
    is_self = ctx.caller.user is not None and user is not None and user.id == ctx.caller.user.id
    allowed = ctx.caller.has_scope("User.Read.All", "Directory.Read.All", "User.ReadBasic.All")
    if is_self and ctx.caller.has_scope("User.Read", "User.ReadWrite"):
        allowed = True
    if not allowed:
        raise _denied()
    if user is None:
        raise GraphError(
            404,
            "Request_ResourceNotFound",
            f"Resource '{key}' does not exist or one of its queried "
            "reference-property objects are not present.",
        )
    body = {"@odata.context": ctx.link("/$metadata#users/$entity")}
    body.update(_shape(ctx, user))
    return GraphResponse(200, body)


@route("GET", "/users")
def list_users(ctx: Ctx) -> GraphResponse:
    if not ctx.caller.has_scope("User.Read.All", "Directory.Read.All", "User.ReadBasic.All"):
        raise _denied()
    users = sorted(ctx.tenant.users.values(), key=lambda u: u.user_principal_name.lower())
    top = ctx.req.query.get("$top")
    page_size = 100
    if top is not None:
        if not top.isdigit() or not 1 <= int(top) <= 999:
            raise GraphError(
                400,
                "Request_BadRequest",
                f"Invalid page size specified: '{top}'. Must be between 1 and 999 inclusive.",
            )
        page_size = int(top)
    skip_token = ctx.req.query.get("$skiptoken")
    start = 0
    if skip_token is not None:
        if not skip_token.isdigit():
            raise GraphError(
                400,
                "Directory_ExpiredPageToken",
                "The specified page token value has expired and can no longer be "
                "included in your request.",
            )
        start = int(skip_token)
    page = users[start : start + page_size]
    body: dict[str, Any] = {
        "@odata.context": ctx.link("/$metadata#users"),
        "value": [_shape(ctx, u) for u in page],
    }
    if start + page_size < len(users):
        query = f"$skiptoken={start + page_size}"
        if top is not None:
            query = f"$top={page_size}&{query}"
        if "$select" in ctx.req.query:
            query += f"&$select={ctx.req.query['$select']}"
        body["@odata.nextLink"] = ctx.link(f"/users?{query}")
    return GraphResponse(200, body)
