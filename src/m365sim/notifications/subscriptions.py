"""``/subscriptions``: creating, reading, renewing, reauthorizing and deleting subscriptions.

Graph v1.0, message resources only (graph.md 4.1, 4.2, 2.1):

* ``POST /subscriptions`` validates the body, resolves ``resource``
  (``me/mailFolders('inbox')/messages``, ``users/{id | upn}/mailFolders/{id}/messages``,
  ``/users/{id}/messages``, ``me/messages``), checks that the caller may read that mailbox, runs
  the validation handshake against ``notificationUrl`` and ``lifecycleNotificationUrl`` and only
  then stores the subscription and answers 201 with every ``subscription`` property. Whether the
  request carried ``Prefer: IdType="ImmutableId"`` is remembered: notifications then carry
  immutable ids.
* ``GET /subscriptions`` lists the calling application's subscriptions (app-only: all of them
  in the tenant; delegated: those created for the signed-in user). Another application's
  subscription answers 404 ``ResourceNotFound`` "The object was not found.", as Graph does.
* ``PATCH /subscriptions/{id}`` renews (``expirationDateTime``) or moves (``notificationUrl``,
  handshake again) a subscription and reauthorizes it; ``lifecycleNotificationUrl`` can only be
  set at creation.
* ``POST /subscriptions/{id}/reauthorize`` answers a ``reauthorizationRequired`` challenge (204).
* ``DELETE /subscriptions/{id}`` (204).

Errors, as far as Microsoft's are known (see docs/m365sim/notifications.md for sources):

* http notification URL: 400 ``InvalidRequest`` "NotificationUrl scheme='http' is not
  supported." (loopback http is accepted when ``allow_http_notification_url`` is on);
* malformed URL: 400 ``InvalidRequest`` "Invalid notification url='...'.";
* handshake: 400 ``InvalidRequest`` "Subscription validation request failed. ..." or
  "Subscription validation request timed out.";
* too long: 400 ``ExtensionError`` "Subscription expiration can only be 10080 minutes in the
  future." (limit ``subscription_max_minutes``); shorter than ``subscription_min_minutes`` is
  raised to that minimum; a time in the past is refused (400 ``InvalidRequest``);
* mailbox permission problems are reported the way the subscription service forwards
  Exchange's answers: 403 ``ExtensionError`` "Operation: Create; Exception: [Status Code:
  Forbidden; Reason: ...]". A delegated subscription on another user's mailbox is refused even
  with ``Mail.Read.Shared`` and FullAccess (``.Shared`` permissions do not support
  subscriptions), with the reason "Forbidden";
* more than ``subscriptions_per_mailbox`` active subscriptions on one mailbox (all apps
  together): ``subscription_limit_status`` (403) ``ExtensionError``.

Resources with query options (``$filter``, rich notifications with ``$select``) and
``includeResourceData`` are refused with 400 rather than served with different semantics.
"""

from __future__ import annotations

import ipaddress
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from m365sim.clock import parse_iso
from m365sim.errors import GraphError
from m365sim.graph.access import Caller, authorize_mailbox, resolve_user
from m365sim.graph.dispatch import Ctx, GraphResponse, normalize_path, route, split_mailbox
from m365sim.notifications.delivery import notifier_for
from m365sim.notifications.registry import (
    CHANGE_TYPES,
    Subscription,
    registry,
    subscription_json,
)
from m365sim.state import EmulatorState
from m365sim.store import User

TLS_VERSIONS = ("v1_0", "v1_1", "v1_2", "v1_3")
CLIENT_STATE_MAX = 128
# Every property of the CSDL ``subscription`` entity (plus notificationContentType, which
# Graph returns); read-only ones are accepted in a request body and ignored.
KNOWN_PROPERTIES = frozenset(
    {
        "id",
        "resource",
        "applicationId",
        "changeType",
        "clientState",
        "notificationUrl",
        "notificationQueryOptions",
        "lifecycleNotificationUrl",
        "expirationDateTime",
        "creatorId",
        "includeResourceData",
        "latestSupportedTlsVersion",
        "encryptionCertificate",
        "encryptionCertificateId",
        "notificationUrlAppId",
        "notificationContentType",
    }
)
LOOPBACK_HOSTS = ("localhost",)


def invalid(message: str) -> GraphError:
    return GraphError(400, "InvalidRequest", message)


def extension_error(status: int, reason: str, operation: str = "Create") -> GraphError:
    """How the subscription service reports a failure of the resource's own service."""
    phrase = HTTPStatus(status).phrase.replace(" ", "")
    return GraphError(
        status,
        "ExtensionError",
        f"Operation: {operation}; Exception: [Status Code: {phrase}; Reason: {reason}]",
    )


def not_found() -> GraphError:
    return GraphError(404, "ResourceNotFound", "The object was not found.")


# --------------------------------------------------------------------------- validation
def _check_properties(body: dict[str, Any]) -> None:
    for name in body:
        if name.startswith("@odata.") or name in KNOWN_PROPERTIES:
            continue
        raise GraphError(
            400,
            "BadRequest",
            f"The property '{name}' does not exist on type 'microsoft.graph.subscription'. "
            "Make sure to only use property names that are defined by the type.",
        )


def _string(body: dict[str, Any], name: str, *, required: bool) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise invalid(f"{name} is a required property for subscription creation.")
        return None
    if not isinstance(value, str):
        raise GraphError(
            400,
            "BadRequest",
            f"Cannot convert the literal '{value}' to the expected type 'Edm.String'.",
        )
    return value


def _is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_notification_url(state: EmulatorState, url: str, *, name: str) -> None:
    """https required; loopback http allowed by ``allow_http_notification_url``."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError as exc:
        raise invalid(f"Invalid notification url='{url}'.") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not host:
        raise invalid(f"Invalid notification url='{url}'.")
    if scheme == "http" and not (state.config.allow_http_notification_url and _is_loopback(host)):
        label = "NotificationUrl" if name == "notificationUrl" else "LifecycleNotificationUrl"
        raise invalid(f"{label} scheme='http' is not supported.")


def parse_change_type(value: str) -> frozenset[str]:
    parts = [p.strip() for p in value.split(",")]
    if not value.strip() or any(p not in CHANGE_TYPES for p in parts):
        raise invalid(
            f"Invalid changeType '{value}'. Valid values are a comma-separated combination of "
            "created, updated and deleted."
        )
    return frozenset(parts)


def parse_expiration(state: EmulatorState, value: str) -> datetime:
    """The requested expiry, capped and raised as Graph does (graph.md 4.1)."""
    try:
        requested = parse_iso(value)
    except ValueError as exc:
        raise GraphError(
            400,
            "BadRequest",
            f"Cannot convert the literal '{value}' to the expected type 'Edm.DateTimeOffset'.",
        ) from exc
    config = state.config
    now = state.clock.now()
    if requested <= now:
        raise invalid("Subscription expiration must be in the future.")
    if requested > now + timedelta(minutes=config.subscription_max_minutes):
        raise GraphError(
            400,
            "ExtensionError",
            f"Subscription expiration can only be {config.subscription_max_minutes} minutes "
            "in the future.",
        )
    minimum = now + timedelta(minutes=config.subscription_min_minutes)
    return max(requested, minimum)


@dataclass
class Target:
    user: User
    folder_id: str | None


def resolve_resource(ctx: Ctx, resource: str) -> Target:
    """The mailbox (and folder) a message ``resource`` names, with Graph's access rules."""
    raw = resource.strip()
    if "?" in raw:
        raise invalid(
            f"The resource '{resource}' uses query options; m365sim supports message "
            "subscriptions without $filter or $select."
        )
    try:
        path = normalize_path("/" + raw.lstrip("/"))
    except ValueError as exc:
        raise invalid(f"Invalid resource '{resource}'.") from exc
    split = split_mailbox(path)
    if split is None:
        raise _unsupported(resource)
    key, rest = split
    caller = ctx.caller
    user = resolve_user(caller, key)
    segments = rest.strip("/").split("/")
    lowered = [s.lower() for s in segments]
    folder_id: str | None
    if lowered == ["messages"]:
        folder_id = None
    elif len(lowered) == 3 and lowered[0] == "mailfolders" and lowered[2] == "messages":
        folder = user.mailbox.folder(segments[1])
        if folder is None:
            raise extension_error(404, "The specified object was not found in the store.")
        folder_id = folder.id
    else:
        raise _unsupported(resource)
    _authorize(ctx.state, caller, user, "Create")
    return Target(user, folder_id)


def _authorize(state: EmulatorState, caller: Caller, user: User, operation: str) -> None:
    if caller.user is not None and caller.user.id != user.id:
        # .Shared permissions do not support subscriptions (graph.md 2.1).
        raise extension_error(403, "Forbidden", operation)
    try:
        authorize_mailbox(state, caller, user, "read")
    except GraphError as err:
        raise extension_error(err.status, err.message, operation) from err


def _unsupported(resource: str) -> GraphError:
    return invalid(
        f"The resource '{resource}' is not supported. m365sim supports message subscriptions: "
        "me/messages, me/mailFolders('{id}')/messages, users/{id}/messages, "
        "users/{id}/mailFolders('{id}')/messages."
    )


def _check_limit(state: EmulatorState, mailbox_id: str) -> None:
    limit = state.config.subscriptions_per_mailbox
    active = registry(state).active_for_mailbox(mailbox_id, state.clock.time())
    if active >= limit:
        raise extension_error(
            state.config.subscription_limit_status,
            f"The mailbox has reached the maximum of {limit} subscriptions.",
        )


def _visible(caller: Caller, sub: Subscription) -> bool:
    if sub.tenant_id != caller.tenant.id or sub.client_id != caller.client_id:
        return False
    return caller.user is None or sub.creator_id == caller.user.id


def _find(ctx: Ctx) -> Subscription:
    sub = registry(ctx.state).get(ctx.params["sid"])
    if sub is None or sub.expired(ctx.state.clock.time()) or not _visible(ctx.caller, sub):
        raise not_found()
    return sub


def _entity(ctx: Ctx, sub: Subscription) -> dict[str, Any]:
    body: dict[str, Any] = {"@odata.context": ctx.link("/$metadata#subscriptions/$entity")}
    body.update(subscription_json(sub))
    return body


def _json(ctx: Ctx) -> dict[str, Any]:
    body = ctx.json()
    _check_properties(body)
    return body


# --------------------------------------------------------------------------- routes
@route("POST", "/subscriptions")
async def create_subscription(ctx: Ctx) -> GraphResponse:
    state = ctx.state
    body = _json(ctx)
    change_type = _string(body, "changeType", required=True)
    notification_url = _string(body, "notificationUrl", required=True)
    resource = _string(body, "resource", required=True)
    expiration_raw = _string(body, "expirationDateTime", required=True)
    assert change_type is not None and notification_url is not None
    assert resource is not None and expiration_raw is not None
    lifecycle_url = _string(body, "lifecycleNotificationUrl", required=False) or None
    client_state = _string(body, "clientState", required=False)
    tls = _string(body, "latestSupportedTlsVersion", required=False) or "v1_2"
    change_types = parse_change_type(change_type)
    check_notification_url(state, notification_url, name="notificationUrl")
    if lifecycle_url is not None:
        check_notification_url(state, lifecycle_url, name="lifecycleNotificationUrl")
    if client_state is not None and len(client_state) > CLIENT_STATE_MAX:
        raise invalid(f"clientState can be at most {CLIENT_STATE_MAX} characters long.")
    if tls not in TLS_VERSIONS:
        raise invalid(
            f"Invalid latestSupportedTlsVersion '{tls}'. Valid values are "
            f"{', '.join(TLS_VERSIONS)}."
        )
    if body.get("includeResourceData") is True:
        raise invalid(
            "includeResourceData is not supported by m365sim: subscribe without resource data "
            "and fetch changed messages by id."
        )
    expiration = parse_expiration(state, expiration_raw)
    with state.store.lock:
        target = resolve_resource(ctx, resource)
        _check_limit(state, target.user.id)
    notifier = notifier_for(state)
    sub_id = str(uuid.uuid4())
    await notifier.validate_endpoint(notification_url, subscription_hint=sub_id)
    if lifecycle_url is not None:
        await notifier.validate_endpoint(lifecycle_url, subscription_hint=sub_id)
    caller = ctx.caller
    with state.store.lock:
        _check_limit(state, target.user.id)
        sub = Subscription(
            id=sub_id,
            tenant_id=caller.tenant.id,
            client_id=caller.client_id,
            creator_id=caller.user.id if caller.user is not None else caller.client_id,
            app_only=caller.app_only,
            mailbox_id=target.user.id,
            folder_id=target.folder_id,
            resource=resource,
            change_type=change_type,
            change_types=change_types,
            notification_url=notification_url,
            lifecycle_url=lifecycle_url,
            client_state=client_state,
            expiration=expiration,
            latest_tls=tls,
            immutable_ids=ctx.req.immutable_ids,
            token_expires=caller.claims.expires,
            created=state.clock.time(),
        )
        registry(state).add(sub)
        return GraphResponse(201, _entity(ctx, sub))


@route("GET", "/subscriptions")
def list_subscriptions(ctx: Ctx) -> GraphResponse:
    now = ctx.state.clock.time()
    subs = [
        sub
        for sub in registry(ctx.state).all()
        if _visible(ctx.caller, sub) and not sub.expired(now)
    ]
    subs.sort(key=lambda s: s.created)
    return GraphResponse(
        200,
        {
            "@odata.context": ctx.link("/$metadata#subscriptions"),
            "value": [subscription_json(s) for s in subs],
        },
    )


@route("GET", "/subscriptions/{sid}")
def get_subscription(ctx: Ctx) -> GraphResponse:
    return GraphResponse(200, _entity(ctx, _find(ctx)))


@route("PATCH", "/subscriptions/{sid}")
async def update_subscription(ctx: Ctx) -> GraphResponse:
    state = ctx.state
    body = _json(ctx)
    if "lifecycleNotificationUrl" in body:
        raise invalid(
            "lifecycleNotificationUrl can only be set when the subscription is created; delete "
            "the subscription and create a new one."
        )
    others = sorted(
        k
        for k in body
        if not k.startswith("@odata.") and k not in ("expirationDateTime", "notificationUrl")
    )
    if others:
        raise invalid(
            f"Only expirationDateTime and notificationUrl can be updated, not {', '.join(others)}."
        )
    expiration_raw = body.get("expirationDateTime")
    notification_url = body.get("notificationUrl")
    if expiration_raw is None and notification_url is None:
        raise invalid(
            "Subscription must contain either the 'expirationDateTime' or 'notificationUrl' "
            "property and its value."
        )
    if expiration_raw is not None and not isinstance(expiration_raw, str):
        raise GraphError(
            400,
            "BadRequest",
            f"Cannot convert the literal '{expiration_raw}' to the expected type "
            "'Edm.DateTimeOffset'.",
        )
    if notification_url is not None and not isinstance(notification_url, str):
        raise invalid(f"Invalid notification url='{notification_url}'.")
    with state.store.lock:
        sub = _find(ctx)
        user = ctx.caller.tenant.users.get(sub.mailbox_id)
        if user is None:
            raise not_found()
        _authorize(state, ctx.caller, user, "Update")
    expiration = parse_expiration(state, expiration_raw) if expiration_raw else None
    if notification_url is not None:
        check_notification_url(state, notification_url, name="notificationUrl")
        await notifier_for(state).validate_endpoint(notification_url, subscription_hint=sub.id)
    with state.store.lock:
        sub = _find(ctx)
        if expiration is not None:
            sub.expiration = expiration
            sub.expiry_challenge_for = None
        if notification_url is not None:
            sub.notification_url = notification_url
        sub.reauthorized(ctx.caller.claims.expires)
        return GraphResponse(200, _entity(ctx, sub))


@route("POST", "/subscriptions/{sid}/reauthorize")
def reauthorize_subscription(ctx: Ctx) -> GraphResponse:
    sub = _find(ctx)
    user = ctx.caller.tenant.users.get(sub.mailbox_id)
    if user is None:
        raise not_found()
    _authorize(ctx.state, ctx.caller, user, "Reauthorize")
    sub.reauthorized(ctx.caller.claims.expires)
    return GraphResponse(204, None)


@route("DELETE", "/subscriptions/{sid}")
def delete_subscription(ctx: Ctx) -> GraphResponse:
    sub = _find(ctx)
    registry(ctx.state).remove(sub.id)
    return GraphResponse(204, None)
