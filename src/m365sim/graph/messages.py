"""Messages: list, get, update, create drafts, move, copy, delete, forward and send.

Routes are relative to ``/me`` or ``/users/{id | userPrincipalName}`` and exist both as
``/messages/{id}...`` and ``/mailFolders/{folder}/messages/{id}...`` (the folder-scoped form
only finds messages in that folder). Permissions (graph/access.py): reads need ``read``;
updates, moves, copies, deletes, drafts and ``createForward`` need ``write`` (Mail.ReadWrite);
``forward`` and ``send`` need ``send`` (Mail.Send).

Lists (graph.md 3.3)
  ``/messages`` spans every folder under ``msgfolderroot``; ``/mailFolders/{id}/messages`` one
  folder. Default order ``receivedDateTime desc``, ten per page, ``$top`` 1..1000, paging by an
  opaque ``$skiptoken`` in ``@odata.nextLink`` (``nextLink`` precedes ``value`` as in Graph's
  payloads), ``Prefer: odata.maxpagesize`` echoed in ``Preference-Applied``, ``$select``,
  ``$filter``, ``$orderby`` with Exchange's ``InefficientFilter`` rule, ``$count``,
  ``$search`` (KQL subset, :mod:`m365sim.graph.search`; not with ``$filter``/``$orderby``).
  ``$expand`` is refused with 400 (not emulated). ``.../messages/$count`` answers the number
  as ``text/plain``; ``/messages/{id}/$value`` the message as MIME (:mod:`m365sim.mime_out`).

Ids
  Responses carry the REST id, or the immutable id with ``Prefer: IdType="ImmutableId"``;
  lookups accept either. A REST id changes on every move; the immutable id never does within
  the mailbox. Something that cannot be an id answers 400 ``ErrorInvalidIdMalformed``, a
  well-formed unknown id 404 ``ErrorItemNotFound`` (:func:`serialize.looks_like_id`). Messages
  in Recoverable Items (after ``permanentDelete``, or a move there) are purged from the
  mailbox's view: ``/messages/{id}`` answers 404 for them; only
  ``/mailFolders/recoverableitemsdeletions/messages`` still lists them.

Update (PATCH)
  Any message: ``categories`` (replaces the whole array), ``isRead``, ``importance``,
  ``flag``, ``inferenceClassification``, ``subject``. Drafts also: recipients, ``body``,
  ``from``/``sender`` and the receipt flags; on other messages those answer 400
  ``ErrorInvalidPropertySet`` "Message is not draft.". Read-only properties answer
  ``ErrorInvalidPropertySet`` "Set action is invalid for property."; unknown ones
  ``RequestBodyRead`` "The property 'x' does not exist on type 'microsoft.graph.message'. ...";
  wrong value types ``RequestBodyRead`` with ODataLib's wording. ``If-Match`` (and
  ``changeKey`` in the body, ``config.patch_change_key_in_body``) must name the current change
  key (``*`` matches), else ``ErrorIrresolvableConflict`` with
  ``config.stale_change_key_status`` (:func:`check_change_key`). ``id`` may be echoed
  unchanged and ``@odata.*`` annotations are ignored (the SDK sends ``@odata.type``). Every
  update goes through ``store.update_message`` so delta and notifications see it.

Move / copy (graph.md 3.5)
  ``{"DestinationId": id | well-known name}`` (parameter names are case-insensitive) -> 201 and
  the message in its new folder. A move into ``deleteditems`` or ``recoverableitemsdeletions``
  is recorded in the deletion audit as ``move:<name>``. A missing or empty ``DestinationId``
  answers 400 ``ErrorInvalidIdMalformed``.

Delete
  ``DELETE`` moves the message to Deleted Items (from Deleted Items: to Recoverable Items), as
  Outlook does; ``permanentDelete`` moves it to Recoverable Items. Both answer 204 and are
  audited (``delete`` / ``permanentDelete``).

Forward, createForward, send (graph.md 3.6)
  Parameters ``Comment``, ``ToRecipients``, ``Message`` (any case). Either a comment or
  ``Message.body``, not both; recipients either as ``ToRecipients`` or in ``Message``, exactly
  one of them — otherwise 400 (``ErrorInvalidRequest`` for "both", ``ErrorInvalidRecipients``
  for "none"; Exchange's exact wording for these cases is not documented). ``forward`` answers
  202: a "FW: " copy lands in the sender's Sent Items and the mail is delivered to every
  recipient mailbox inside the emulator's tenants (their Inbox); recipients elsewhere are
  recorded in ``store.outbound`` (``internal=False``), internal ones too (``internal=True``).
  ``createForward`` answers 201 with a draft in Drafts; its body is optional and, unless
  ``config.create_forward_requires_recipients``, so are the recipients (Microsoft's first
  documented example posts nothing). ``send`` (202) moves a draft to Sent
  Items and delivers it. Sending a message that is not a draft answers 400
  ``ErrorInvalidRequest``; after a send the draft's REST id is gone (404), while its immutable
  id now names the sent item (so a second send answers 400).
"""

from __future__ import annotations

import dataclasses
import email.utils
import html
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from m365sim import ids
from m365sim.errors import GraphError, invalid_id, item_not_found
from m365sim.graph.access import Operation
from m365sim.graph.dispatch import Ctx, GraphResponse, route
from m365sim.graph.folders import find_folder, in_ipm_tree
from m365sim.graph.odata import (
    OrderBy,
    check_inefficient_filter,
    parse_orderby,
    select_fields,
    sort_key,
)
from m365sim.graph.search import check_combination, parse_search
from m365sim.graph.serialize import (
    FLAG_STATUS,
    IMPORTANCE,
    INFERENCE,
    MESSAGE_DEFAULT,
    MESSAGE_ENTITY,
    MESSAGE_SELECTABLE,
    MESSAGE_TYPE,
    Rendering,
    action_parameters,
    body_read_error,
    collection_response,
    context_url,
    etag,
    looks_like_id,
    message_json,
    message_value,
    query_filter,
    read_bool,
    read_enum,
    read_flag,
    read_item_body,
    read_recipient,
    read_recipients,
    read_string,
    read_string_list,
    select_suffix,
    unknown_body_property,
)
from m365sim.mime_out import message_to_mime
from m365sim.store import (
    Attachment,
    Folder,
    Mailbox,
    Message,
    OutboundMail,
    Recipient,
    User,
)

_KNOWN_OPTIONS = {
    "$select",
    "$filter",
    "$orderby",
    "$top",
    "$skip",
    "$skiptoken",
    "$count",
    "$search",
    "$expand",
    "$format",
}
_DEFAULT_ORDER = [OrderBy(MESSAGE_ENTITY.prop("receivedDateTime"), True)]
_SEARCH_ORDER = [OrderBy(MESSAGE_ENTITY.prop("sentDateTime"), True)]

# Properties a PATCH may set on any message, on drafts only, and never.
_ANY_MESSAGE = {
    "categories",
    "isRead",
    "importance",
    "flag",
    "inferenceClassification",
    "subject",
}
_DRAFT_ONLY = {
    "toRecipients",
    "ccRecipients",
    "bccRecipients",
    "replyTo",
    "body",
    "from",
    "sender",
    "isReadReceiptRequested",
    "isDeliveryReceiptRequested",
}
_READ_ONLY = (set(MESSAGE_SELECTABLE) - _ANY_MESSAGE - _DRAFT_ONLY) | {
    "attachments",
    "extensions",
    "singleValueExtendedProperties",
    "multiValueExtendedProperties",
}
_PROPERTY_NAMES = {p.lower(): p for p in _ANY_MESSAGE | _DRAFT_ONLY | _READ_ONLY}


# ------------------------------------------------------------------------------ lookups


def _routes(method: str, tail: str, op: Operation) -> Callable[[Any], Any]:
    """Register a handler for ``/messages/{message}<tail>`` and the folder-scoped form."""

    def register(fn: Any) -> Any:
        route(method, f"/messages/{{message}}{tail}", mailbox=True, op=op)(fn)
        route(
            method,
            f"/mailFolders/{{folder}}/messages/{{message}}{tail}",
            mailbox=True,
            op=op,
        )(fn)
        return fn

    return register


def find_message(ctx: Ctx) -> Message:
    """The message named by the route (``message`` and optional ``folder`` parameters)."""
    mailbox = ctx.mailbox_user.mailbox
    key = ctx.params["message"]
    folder = find_folder(mailbox, ctx.params["folder"]) if "folder" in ctx.params else None
    if not looks_like_id(key):
        raise invalid_id()
    msg = mailbox.message(key)
    if msg is None:
        raise item_not_found()
    if folder is not None:
        if msg.folder_id != folder.id:
            raise item_not_found()
    elif not in_ipm_tree(mailbox, mailbox.folders[msg.folder_id]):
        raise item_not_found()
    return msg


def _check_options(query: Mapping[str, str]) -> None:
    for name in query:
        if not name.startswith("$"):
            continue
        if name not in _KNOWN_OPTIONS:
            raise GraphError(400, "BadRequest", f"The query parameter '{name}' is not supported.")
        if name in ("$expand", "$format"):
            raise GraphError(
                400,
                "ErrorInvalidUrlQuery",
                f"The query parameter '{name}' is not supported by m365sim.",
            )


def _fields(ctx: Ctx) -> list[str] | None:
    if "$select" not in ctx.req.query:
        return None
    return select_fields(
        ctx.req.query,
        allowed=MESSAGE_SELECTABLE,
        default=MESSAGE_DEFAULT,
        type_name=MESSAGE_TYPE,
        code="RequestBroker--ParseUri",
    )


# -------------------------------------------------------------------------------- reads


def _candidates(ctx: Ctx, folder: Folder | None) -> list[Message]:
    """The messages a list (or ``$count``) answers with, filtered or searched and in order."""
    mailbox = ctx.mailbox_user.mailbox
    query = ctx.req.query
    _check_options(query)
    search = None
    if "$search" in query:
        check_combination(query)
        search = parse_search(query["$search"])
    parsed = query_filter(ctx, MESSAGE_ENTITY)
    raw_order = query.get("$orderby")
    order = parse_orderby(raw_order, MESSAGE_ENTITY) if raw_order and raw_order.strip() else []
    check_inefficient_filter(parsed, order)
    if folder is not None:
        candidates = [mailbox.messages[i] for i in folder.messages if i in mailbox.messages]
    else:
        visible = {f.id for f in mailbox.folders.values() if in_ipm_tree(mailbox, f)}
        candidates = [m for m in mailbox.messages.values() if m.folder_id in visible]
    if parsed is not None:
        candidates = [m for m in candidates if parsed.matches(_resolver(m))]
    if search is not None:
        candidates = [m for m in candidates if search(m)]
        order = _SEARCH_ORDER
    order = order or _DEFAULT_ORDER
    if order[0].descending:
        candidates.reverse()  # ties (same second) keep the newest arrival first
    candidates.sort(key=sort_key(order, message_value))
    return candidates


def _list(ctx: Ctx, folder: Folder | None) -> GraphResponse:
    query = ctx.req.query
    fields = _fields(ctx)
    candidates = _candidates(ctx, folder)
    tail = f"mailFolders('{folder.id}')/messages" if folder is not None else "messages"
    rendering = Rendering(ctx.req)
    return collection_response(
        ctx,
        candidates,
        lambda m: message_json(m, rendering, fields),
        context=context_url(ctx, tail + select_suffix(query, fields)),
        default_size=ctx.state.config.default_page_size,
        headers=rendering.applied(),
    )


def _resolver(msg: Message) -> Callable[[str], Any]:
    def resolve(name: str) -> Any:
        return message_value(msg, name)

    return resolve


@route("GET", "/messages", mailbox=True, op="read")
def list_messages(ctx: Ctx) -> GraphResponse:
    return _list(ctx, None)


@route("GET", "/mailFolders/{folder}/messages", mailbox=True, op="read")
def list_folder_messages(ctx: Ctx) -> GraphResponse:
    return _list(ctx, find_folder(ctx.mailbox_user.mailbox, ctx.params["folder"]))


def _count(ctx: Ctx, folder: Folder | None) -> GraphResponse:
    """``.../messages/$count``: the number alone, as ``text/plain`` (``$filter``/``$search``
    apply; ``$top`` and paging do not)."""
    total = len(_candidates(ctx, folder))
    return GraphResponse(200, str(total).encode(), content_type="text/plain")


@route("GET", "/messages/$count", mailbox=True, op="read")
def count_messages(ctx: Ctx) -> GraphResponse:
    return _count(ctx, None)


@route("GET", "/mailFolders/{folder}/messages/$count", mailbox=True, op="read")
def count_folder_messages(ctx: Ctx) -> GraphResponse:
    return _count(ctx, find_folder(ctx.mailbox_user.mailbox, ctx.params["folder"]))


def message_response(
    ctx: Ctx, msg: Message, status: int = 200, fields: list[str] | None = None
) -> GraphResponse:
    rendering = Rendering(ctx.req)
    body: dict[str, Any] = {
        "@odata.context": context_url(
            ctx, "messages" + select_suffix(ctx.req.query, fields) + "/$entity"
        )
    }
    body.update(message_json(msg, rendering, fields))
    headers = rendering.applied()
    headers["ETag"] = etag(msg.change_key)
    return GraphResponse(status, body, headers)


@_routes("GET", "", "read")
def get_message(ctx: Ctx) -> GraphResponse:
    _check_options(ctx.req.query)
    msg = find_message(ctx)
    return message_response(ctx, msg, fields=_fields(ctx))


@_routes("GET", "/$value", "read")
def get_message_mime(ctx: Ctx) -> GraphResponse:
    """The message as RFC 822 (``mime_out.message_to_mime``)."""
    msg = find_message(ctx)
    return GraphResponse(
        200, message_to_mime(msg), content_type=ctx.state.config.mime_value_content_type
    )


# ------------------------------------------------------------------------------ updates


def read_message_changes(
    body: Mapping[str, Any], *, is_draft: bool, current_ids: Iterable[str] = ()
) -> dict[str, Any]:
    """Parse a (partial) message body into canonical property -> value, Graph's way."""
    changes: dict[str, Any] = {}
    for key, value in body.items():
        if key.startswith("@odata."):
            if key == "@odata.type" and (
                not isinstance(value, str) or value.lstrip("#").lower() != MESSAGE_TYPE.lower()
            ):
                raise body_read_error(
                    f"A type named '{value}' could not be resolved by the model. When a model "
                    "is available, each type name must resolve to a valid type."
                )
            continue
        name = _PROPERTY_NAMES.get(key.lower())
        if name is None:
            raise unknown_body_property(key)
        if name == "id" and isinstance(value, str) and value in set(current_ids):
            continue
        if name in _READ_ONLY:
            raise GraphError(400, "ErrorInvalidPropertySet", "Set action is invalid for property.")
        if name in _DRAFT_ONLY and not is_draft:
            raise GraphError(400, "ErrorInvalidPropertySet", "Message is not draft.")
        changes[name] = _read_property(name, value)
    return changes


def _read_property(name: str, value: Any) -> Any:
    if name == "categories":
        return read_string_list(value, name)
    if name in ("isRead", "isReadReceiptRequested", "isDeliveryReceiptRequested"):
        return read_bool(value)
    if name == "importance":
        return read_enum(value, IMPORTANCE)
    if name == "inferenceClassification":
        return read_enum(value, INFERENCE)
    if name == "subject":
        return read_string(value) or ""
    if name == "flag":
        return read_flag(value)
    if name in ("toRecipients", "ccRecipients", "bccRecipients", "replyTo"):
        return read_recipients(value, name)
    if name == "body":
        return read_item_body(value)
    if name in ("from", "sender"):
        return None if value is None else read_recipient(value)
    raise unknown_body_property(name)


def apply_changes(msg: Message, changes: Mapping[str, Any]) -> None:
    for name, value in changes.items():
        if name == "categories":
            msg.categories = list(value)
        elif name == "isRead":
            msg.is_read = value
        elif name == "isReadReceiptRequested":
            msg.is_read_receipt_requested = value
        elif name == "isDeliveryReceiptRequested":
            msg.is_delivery_receipt_requested = value
        elif name == "importance":
            msg.importance = value
        elif name == "inferenceClassification":
            msg.inference_classification = value
        elif name == "subject":
            msg.subject = value
        elif name == "flag":
            status, dates = value
            if status is not None:
                msg.flag_status = status
            for prop, stamp in dates.items():
                if stamp is None:
                    msg.flag_dates.pop(prop, None)
                else:
                    msg.flag_dates[prop] = stamp
            if msg.flag_status == FLAG_STATUS[0]:  # notFlagged clears the dates
                msg.flag_dates.clear()
        elif name == "toRecipients":
            msg.to = list(value)
        elif name == "ccRecipients":
            msg.cc = list(value)
        elif name == "bccRecipients":
            msg.bcc = list(value)
        elif name == "replyTo":
            msg.reply_to = list(value)
        elif name == "body":
            msg.body_type, msg.body_content = value
        elif name == "from":
            msg.from_ = value
        elif name == "sender":
            msg.sender = value


def check_change_key(ctx: Ctx, msg: Message, body_change_key: str | None = None) -> None:
    """Optimistic concurrency: ``If-Match`` (``W/"<changeKey>"``, ``"<changeKey>"``, a bare
    change key, several separated by commas, or ``*``) and a ``changeKey`` in the body must
    name the item's current change key, else Exchange's ``ErrorIrresolvableConflict`` with
    ``config.stale_change_key_status`` (412 by default)."""
    wanted: list[str] = []
    header = ctx.req.header("if-match")
    if header is not None and header.strip():
        for part in header.split(","):
            tag = part.strip()
            if tag == "*":
                return
            if tag[:2].upper() == "W/":
                tag = tag[2:]
            wanted.append(tag.strip().strip('"'))
        if msg.change_key not in wanted:
            raise _conflict(ctx)
    if body_change_key is not None and body_change_key != msg.change_key:
        raise _conflict(ctx)


def _conflict(ctx: Ctx) -> GraphError:
    return GraphError(
        ctx.state.config.stale_change_key_status,
        "ErrorIrresolvableConflict",
        "The send or update operation could not be performed because the change key passed "
        "in the request does not match the current change key for the item.",
    )


@_routes("PATCH", "", "write")
def update_message(ctx: Ctx) -> GraphResponse:
    msg = find_message(ctx)
    body = ctx.json()
    change_key: str | None = None
    keys = [k for k in body if k.lower() == "changekey"]
    for key in keys if ctx.state.config.patch_change_key_in_body else []:
        # Accepted as a concurrency check (as EWS's ItemId ChangeKey), never as a new value.
        change_key = read_string(body.pop(key), nullable=False)
    changes = read_message_changes(
        body, is_draft=msg.is_draft, current_ids=(msg.rest_id, msg.immutable_id)
    )
    check_change_key(ctx, msg, change_key)
    apply_changes(msg, changes)
    ctx.state.store.update_message(ctx.tenant, ctx.mailbox_user.mailbox, msg)
    return message_response(ctx, msg)


def _me(user: User) -> Recipient:
    return Recipient(user.display_name, user.user_principal_name)


def build_message(ctx: Ctx, body: Mapping[str, Any], folder: Folder) -> Message:
    """A new (not yet inserted) draft from a message body, ``attachments`` included (file
    and item attachments, each checked as ``POST .../attachments`` checks it)."""
    from m365sim.graph.attachments import read_new_attachment  # imports this module

    user = ctx.mailbox_user
    data = dict(body)
    raw_attachments: Any = []
    for key in [k for k in data if k.lower() == "attachments"]:
        raw_attachments = data.pop(key)
    if raw_attachments is None:
        raw_attachments = []
    if not isinstance(raw_attachments, list):
        raise body_read_error(
            "An unexpected 'StartObject' node was found when reading from the JSON reader. "
            "A 'StartArray' node was expected."
        )
    changes = read_message_changes(data, is_draft=True)
    attachments = [read_new_attachment(ctx, a) for a in raw_attachments]
    draft = ctx.state.store.new_message(user.mailbox, folder, subject="", body="", sender=_me(user))
    draft.is_draft = True
    draft.is_read = True
    apply_changes(draft, changes)
    draft.attachments = attachments
    return draft


def _create_draft(ctx: Ctx, folder: Folder) -> GraphResponse:
    draft = build_message(ctx, ctx.json(), folder)
    ctx.state.store.insert_message(ctx.tenant, ctx.mailbox_user.mailbox, draft)
    return message_response(ctx, draft, status=201)


@route("POST", "/messages", mailbox=True, op="write")
def create_message(ctx: Ctx) -> GraphResponse:
    mailbox = ctx.mailbox_user.mailbox
    return _create_draft(ctx, find_folder(mailbox, "drafts"))


@route("POST", "/mailFolders/{folder}/messages", mailbox=True, op="write")
def create_folder_message(ctx: Ctx) -> GraphResponse:
    return _create_draft(ctx, find_folder(ctx.mailbox_user.mailbox, ctx.params["folder"]))


# -------------------------------------------------------------------- move, copy, delete


def _destination(ctx: Ctx, action: str) -> Folder:
    params = action_parameters(ctx.json(), ["DestinationId"], action)
    key = read_string(params.get("destinationid"))
    if not key:
        raise invalid_id()
    return find_folder(ctx.mailbox_user.mailbox, key)


def _audit(ctx: Ctx, msg: Message, action: str) -> None:
    ctx.state.store.record_deletion(
        ctx.tenant, ctx.mailbox_user.mailbox, msg.immutable_id, action, ctx.caller.client_id
    )


def move_to(ctx: Ctx, msg: Message, destination: Folder) -> Message:
    ctx.state.store.move_message(ctx.tenant, ctx.mailbox_user.mailbox, msg, destination)
    return msg


@_routes("POST", "/move", "write")
def move_message(ctx: Ctx) -> GraphResponse:
    msg = find_message(ctx)
    destination = _destination(ctx, "move")
    # A deletion is decided by identity: any folder beneath Deleted Items or Recoverable
    # Items, whatever its name, is where Outlook empties and retention purges mail.
    deleted_in = ctx.mailbox_user.mailbox.deletion_folder(destination.id)
    move_to(ctx, msg, destination)
    if deleted_in is not None:
        _audit(ctx, msg, f"move:{deleted_in}")
    return message_response(ctx, msg, status=201)


@_routes("POST", "/copy", "write")
def copy_message(ctx: Ctx) -> GraphResponse:
    msg = find_message(ctx)
    destination = _destination(ctx, "copy")
    now = ctx.state.clock.now()
    copy = dataclasses.replace(
        msg,
        immutable_id=ids.immutable_message_id(),
        rest_id=ids.rest_message_id(),
        folder_id=destination.id,
        created=now,
        last_modified=now,
        change_key=ids.change_key(),
        categories=list(msg.categories),
        to=list(msg.to),
        cc=list(msg.cc),
        bcc=list(msg.bcc),
        reply_to=list(msg.reply_to),
        headers=list(msg.headers),
        attachments=_copy_attachments(msg.attachments),
        flag_dates=dict(msg.flag_dates),
    )
    ctx.state.store.insert_message(ctx.tenant, ctx.mailbox_user.mailbox, copy)
    return message_response(ctx, copy, status=201)


def _copy_attachments(attachments: Iterable[Attachment]) -> list[Attachment]:
    return [dataclasses.replace(a, id=ids.rest_message_id()) for a in attachments]


@_routes("DELETE", "", "write")
def delete_message(ctx: Ctx) -> GraphResponse:
    msg = find_message(ctx)
    mailbox = ctx.mailbox_user.mailbox
    current = mailbox.folders[msg.folder_id]
    target = "recoverableitemsdeletions" if current.well_known == "deleteditems" else "deleteditems"
    move_to(ctx, msg, find_folder(mailbox, target))
    _audit(ctx, msg, "delete")
    return GraphResponse(204)


@_routes("POST", "/permanentDelete", "write")
def permanent_delete(ctx: Ctx) -> GraphResponse:
    msg = find_message(ctx)
    if ctx.req.body.strip():
        action_parameters(ctx.json(), [], "permanentDelete")
    mailbox = ctx.mailbox_user.mailbox
    move_to(ctx, msg, find_folder(mailbox, "recoverableitemsdeletions"))
    _audit(ctx, msg, "permanentDelete")
    return GraphResponse(204)


# ----------------------------------------------------------------- forward, drafts, send


def _forward_request(
    ctx: Ctx, action: str, *, draft: bool = False
) -> tuple[str | None, dict[str, Any], list[Recipient]]:
    """(comment, message changes, recipients) with Graph's either/or rules (graph.md 3.6).

    ``draft``: the create* actions, whose body is optional (Microsoft's first createForward
    example posts none) and which may leave the recipients to a later PATCH, unless
    ``config.create_forward_requires_recipients``.
    """
    body = ctx.json() if ctx.req.body.strip() or not draft else {}
    params = action_parameters(body, ["Comment", "ToRecipients", "Message"], action)
    comment = read_string(params.get("comment"))
    message = params.get("message")
    changes: dict[str, Any] = {}
    if message is not None:
        if not isinstance(message, dict):
            raise body_read_error(
                "An unexpected 'PrimitiveValue' node was found when reading from the JSON "
                "reader. A 'StartObject' node was expected."
            )
        changes = read_message_changes(message, is_draft=True)
    to_param = read_recipients(params.get("torecipients"), "ToRecipients")
    if comment and "body" in changes:
        raise GraphError(
            400,
            "ErrorInvalidRequest",
            "Either the Comment parameter or the Message.Body property can be specified, not both.",
        )
    in_message = changes.get("toRecipients") or []
    if to_param and in_message:
        raise GraphError(
            400,
            "ErrorInvalidRequest",
            "Either the ToRecipients parameter or the Message.ToRecipients property can be "
            "specified, not both.",
        )
    recipients = to_param or in_message
    if not recipients and (not draft or ctx.state.config.create_forward_requires_recipients):
        raise _no_recipients()
    return comment, changes, recipients


def _no_recipients() -> GraphError:
    return GraphError(
        400,
        "ErrorInvalidRecipients",
        "At least one recipient is not valid., A message can't be sent because it contains no "
        "recipients.",
    )


def _when(dt: datetime) -> str:
    hour = dt.hour % 12 or 12
    return f"{dt:%A, %B} {dt.day}, {dt.year} {hour}:{dt:%M} {'AM' if dt.hour < 12 else 'PM'}"


def _addresses(recipients: Iterable[Recipient]) -> str:
    return "; ".join(f"{r.name} <{r.address}>" if r.name else r.address for r in recipients)


_BODY_INNER = re.compile(r"<body[^>]*>(.*)</body>", re.IGNORECASE | re.DOTALL)


def _forward_body(
    source: Message, top: tuple[str, str] | None, comment: str | None
) -> tuple[str, str]:
    """(body type, content): the new text above Outlook's header block and the original."""
    who = source.from_ or source.sender
    header = [
        ("From", _addresses([who]) if who else ""),
        ("Sent", _when(source.sent)),
        ("To", _addresses(source.to)),
    ]
    if source.cc:
        header.append(("Cc", _addresses(source.cc)))
    header.append(("Subject", source.subject))
    top_type, top_content = top if top is not None else ("text", comment or "")
    if source.body_type == "text" and top_type == "text":
        block = "\r\n".join(f"{k}: {v}" for k, v in header)
        content = f"{top_content}\r\n\r\n________________________________\r\n{block}\r\n\r\n"
        return "text", content + source.body_content
    if top_type == "text":
        top_html = "<br>".join(html.escape(line) for line in top_content.splitlines())
    else:
        found = _BODY_INNER.search(top_content)
        top_html = found.group(1) if found else top_content
    if source.body_type == "html":
        found = _BODY_INNER.search(source.body_content)
        original = found.group(1) if found else source.body_content
    else:
        original = "<br>".join(html.escape(line) for line in source.body_content.splitlines())
    block = "<br>".join(f"<b>{k}:</b> {html.escape(v)}" for k, v in header)
    return "html", (
        f'<html><head><meta http-equiv="Content-Type" content="text/html; charset=utf-8">'
        f'</head><body><div>{top_html}</div><hr style="display:inline-block;width:98%">'
        f'<div id="divRplyFwdMsg" dir="ltr">{block}</div><br><div>{original}</div>'
        "</body></html>"
    )


def _build_forward(
    ctx: Ctx,
    source: Message,
    folder: Folder,
    comment: str | None,
    changes: dict[str, Any],
    recipients: list[Recipient],
) -> Message:
    user = ctx.mailbox_user
    store = ctx.state.store
    body_type, content = _forward_body(source, changes.pop("body", None), comment)
    changes.pop("toRecipients", None)
    subject = changes.pop("subject", None) or f"FW: {source.subject}"
    msg = store.new_message(
        user.mailbox,
        folder,
        subject=subject,
        body=content,
        body_type="html" if body_type == "html" else "text",
        sender=_me(user),
        to=recipients,
        conversation_id=source.conversation_id,
    )
    msg.attachments = _copy_attachments(source.attachments)
    msg.forward_of = source.immutable_id
    msg.is_read = True
    apply_changes(msg, changes)
    return msg


def _deliver(ctx: Ctx, sent: Message, *, kind: str, comment: str | None) -> None:
    """Deliver a sent message inside the emulator and record it in ``store.outbound``."""
    store = ctx.state.store
    user = ctx.mailbox_user
    now = ctx.state.clock.now()
    internal: list[str] = []
    external: list[str] = []
    delivered: set[str] = set()
    for recipient in [*sent.to, *sent.cc, *sent.bcc]:
        found = store.find_user(recipient.address)
        if found is None:
            external.append(recipient.address)
            continue
        internal.append(recipient.address)
        tenant, target = found
        if target.id in delivered:
            continue
        delivered.add(target.id)
        inbox = target.mailbox.folder("inbox")
        assert inbox is not None
        copy = store.new_message(
            target.mailbox,
            inbox,
            subject=sent.subject,
            body=sent.body_content,
            body_type=sent.body_type,
            sender=sent.from_,
            to=list(sent.to),
            cc=list(sent.cc),
            reply_to=list(sent.reply_to),
            received=now,
            sent=now,
            internet_message_id=sent.internet_message_id,
            conversation_id=sent.conversation_id,
        )
        copy.importance = sent.importance
        copy.attachments = _copy_attachments(sent.attachments)
        copy.headers = _headers(sent, now)
        store.insert_message(tenant, target.mailbox, copy)
    for addresses, is_internal in ((internal, True), (external, False)):
        if addresses:
            store.outbound.append(
                OutboundMail(
                    time=now,
                    tenant_id=ctx.tenant.id,
                    from_mailbox=user.id,
                    kind=kind,
                    to=addresses,
                    subject=sent.subject,
                    comment=comment,
                    source_message_id=sent.forward_of or sent.reply_of,
                    internal=is_internal,
                )
            )


def _headers(sent: Message, now: datetime) -> list[tuple[str, str]]:
    who = sent.from_
    headers = [
        ("From", _addresses([who]) if who else ""),
        ("To", _addresses(sent.to)),
    ]
    if sent.cc:
        headers.append(("Cc", _addresses(sent.cc)))
    headers += [
        ("Subject", sent.subject),
        ("Date", email.utils.format_datetime(now)),
        ("Message-ID", sent.internet_message_id),
        ("MIME-Version", "1.0"),
        ("Content-Type", f"text/{'html' if sent.body_type == 'html' else 'plain'}; charset=utf-8"),
    ]
    return headers


def _sent_folder(mailbox: Mailbox) -> Folder:
    folder = mailbox.folder("sentitems")
    assert folder is not None
    return folder


@_routes("POST", "/forward", "send")
def forward_message(ctx: Ctx) -> GraphResponse:
    source = find_message(ctx)
    comment, changes, recipients = _forward_request(ctx, "forward")
    mailbox = ctx.mailbox_user.mailbox
    sent = _build_forward(ctx, source, _sent_folder(mailbox), comment, changes, recipients)
    now = ctx.state.clock.now()
    sent.sent = sent.received = now
    ctx.state.store.insert_message(ctx.tenant, mailbox, sent)
    _deliver(ctx, sent, kind="forward", comment=comment)
    return GraphResponse(202)


@_routes("POST", "/createForward", "write")
def create_forward(ctx: Ctx) -> GraphResponse:
    source = find_message(ctx)
    comment, changes, recipients = _forward_request(ctx, "createForward", draft=True)
    mailbox = ctx.mailbox_user.mailbox
    drafts = find_folder(mailbox, "drafts")
    draft = _build_forward(ctx, source, drafts, comment, changes, recipients)
    draft.is_draft = True
    draft.forward_comment = comment  # shown as the forward's comment once it is sent
    ctx.state.store.insert_message(ctx.tenant, mailbox, draft)
    return message_response(ctx, draft, status=201)


@_routes("POST", "/send", "send")
def send_draft(ctx: Ctx) -> GraphResponse:
    draft = find_message(ctx)
    if ctx.req.body.strip():
        action_parameters(ctx.json(), [], "send")
    if not draft.is_draft:
        raise GraphError(400, "ErrorInvalidRequest", "Only draft messages can be sent.")
    if not (draft.to or draft.cc or draft.bcc):
        raise _no_recipients()
    user = ctx.mailbox_user
    now = ctx.state.clock.now()
    draft.is_draft = False
    draft.is_read = True
    draft.sent = draft.received = now
    draft.from_ = draft.from_ or _me(user)
    draft.sender = draft.sender or _me(user)
    move_to(ctx, draft, _sent_folder(user.mailbox))
    kind = "forward" if draft.forward_of else "reply" if draft.reply_of else "send"
    _deliver(ctx, draft, kind=kind, comment=draft.forward_comment)
    return GraphResponse(202)
