"""Mail side of the control API: deliver mail (RFC 822 or JSON), bulk delivery, folders and
master categories set up outside Graph, and a quick look into a mailbox.

Delivery is what an inbound message from the internet does to an Exchange mailbox: the message
appears in a folder (the Inbox unless told otherwise) through ``Store.new_message`` +
``Store.insert_message``, so change notifications fire and folder delta queries see it, exactly
as for mail arriving in Microsoft 365. The answer carries both ids Graph knows a message by:
``id`` (the immutable id, graph.md 3.5) and ``restId`` (the default REST id), plus the
``internetMessageId``.

Refusals are whole: a message is parsed and built completely before it is inserted, so a 400 or
413 leaves the mailbox untouched. Bulk delivery inserts in chunks between which the event loop
runs (the store lock is not held across chunks), so Graph calls keep being answered while
100,000 messages are loaded.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from m365sim import ids
from m365sim.clock import iso
from m365sim.control.common import (
    ControlError,
    JsonDict,
    bad,
    check_keys,
    conflict,
    endpoint,
    find_mailbox,
    iso_or_none,
    not_found,
    obj_list,
    ok,
    opt_bool,
    opt_int,
    opt_str,
    parse_json,
    parse_when,
    read_body,
    read_json,
    recipient,
    recipient_json,
    recipients,
    req_str,
    str_list,
)
from m365sim.mime import MimeError, ParsedMail, conversation_id_for, parse_rfc822
from m365sim.state import EmulatorState
from m365sim.store import (
    CATEGORY_COLORS,
    Attachment,
    Category,
    Folder,
    Mailbox,
    Message,
    Recipient,
    Store,
    Tenant,
    User,
)

MESSAGE_FIELDS = {
    "subject",
    "body",
    "bodyType",
    "from",
    "sender",
    "to",
    "cc",
    "bcc",
    "replyTo",
    "receivedDateTime",
    "sentDateTime",
    "categories",
    "isRead",
    "importance",
    "folder",
    "attachments",
    "internetMessageId",
    "headers",
    "inferenceClassification",
    "flagStatus",
}
IMPORTANCE = ("low", "normal", "high")
BULK_MAX = 200_000
BULK_CHUNK = 2_000
# parse small messages on the event loop; big ones in a worker thread
INLINE_PARSE_BYTES = 256 * 1024


# ----------------------------------------------------------------------------- folders
def resolve_folder(
    store: Store, mailbox: Mailbox, key: str, where: str, *, create: bool = False
) -> Folder:
    """A folder by id, well-known name (``inbox``) or display-name path (``Inbox/Orders``).

    With ``create``, missing folders along a path are created (scenario files).
    """
    folder = mailbox.folder(key)
    if folder is not None:
        return folder
    parts = [p.strip() for p in key.strip("/").split("/") if p.strip()]
    if not parts:
        raise bad(f"{where}: an empty folder name")
    current = mailbox.folders[mailbox.root_id()]
    for depth, name in enumerate(parts):
        low = name.lower()
        match = next(
            (
                f
                for f in mailbox.children(current.id, include_hidden=True)
                if f.display_name.lower() == low or (f.well_known or "") == low
            ),
            None,
        )
        if match is None and depth == 0:
            match = mailbox.folder(name)  # a well-known name as the first segment
        if match is None:
            if not create:
                raise bad(
                    f"{where}: no folder {key!r} in this mailbox (use a folder id, a well-known "
                    "name such as 'inbox', or a path such as 'Inbox/Orders')"
                )
            made = store.create_folder(mailbox, name, current.id)
            assert made is not None
            match = made
        current = match
    return current


def folder_path(store: Store, mailbox: Mailbox, folder: Folder) -> str:
    if folder.well_known == "msgfolderroot":
        return ""
    return "/".join(f.display_name for f in store.folder_path(mailbox, folder))


def create_folder_path(
    store: Store, mailbox: Mailbox, path: str, where: str, *, hidden: bool = False
) -> tuple[Folder, bool]:
    """Create ``Inbox/Orders/2024`` (and missing parents). Returns (folder, created)."""
    with store.lock:
        try:
            return resolve_folder(store, mailbox, path, where), False
        except ControlError:
            pass
        parts = [p.strip() for p in path.strip("/").split("/") if p.strip()]
        if not parts:
            raise bad(f"{where}: a folder path is required, e.g. 'Inbox/Orders'")
        parent_path = "/".join(parts[:-1])
        parent = (
            resolve_folder(store, mailbox, parent_path, where, create=True)
            if parent_path
            else mailbox.folders[mailbox.root_id()]
        )
        folder = store.create_folder(mailbox, parts[-1], parent.id, hidden=hidden)
        if folder is None:  # a sibling with that name exists after all
            raise conflict(f"{where}: a folder named {parts[-1]!r} already exists there")
        return folder, True


# ----------------------------------------------------------------------------- categories
def add_category(store: Store, mailbox: Mailbox, spec: JsonDict, ctx: str) -> Category:
    check_keys(spec, {"displayName", "color"}, ctx)
    name = req_str(spec, "displayName", ctx)
    color = opt_str(spec, "color", ctx, "preset0") or "preset0"
    if color.lower() not in CATEGORY_COLORS:
        raise bad(f"{ctx}.color must be 'none' or 'preset0' .. 'preset24', not {color!r}")
    with store.lock:
        if any(c.display_name.lower() == name.lower() for c in mailbox.categories.values()):
            raise conflict(f"{ctx}: a category named {name!r} already exists in this mailbox")
        category = Category(id=ids.guid(), display_name=name, color=color.lower())
        mailbox.categories[category.id] = category
        return category


def category_json(category: Category) -> JsonDict:
    return {"id": category.id, "displayName": category.display_name, "color": category.color}


# ----------------------------------------------------------------------------- JSON messages
@dataclass
class MessageDraft:
    """A message described in JSON, checked and ready to become a store message."""

    folder_key: str
    subject: str
    body: str
    body_type: Literal["text", "html"]
    from_: Recipient | None
    sender: Recipient | None
    to: list[Recipient]
    cc: list[Recipient]
    bcc: list[Recipient]
    reply_to: list[Recipient]
    received: datetime | None
    sent: datetime | None
    categories: list[str]
    is_read: bool
    importance: str
    attachments: list[Attachment]
    internet_message_id: str | None
    headers: list[tuple[str, str]]
    inference: str
    flag_status: str


def _attachments(spec: JsonDict, ctx: str) -> list[Attachment]:
    out: list[Attachment] = []
    for i, item in enumerate(obj_list(spec, "attachments", ctx)):
        where = f"{ctx}.attachments[{i}]"
        check_keys(
            item,
            {"name", "contentType", "contentBase64", "contentText", "isInline", "contentId"},
            where,
        )
        name = req_str(item, "name", where)
        if "contentBase64" in item and "contentText" in item:
            raise bad(f"{where}: give contentBase64 or contentText, not both")
        if "contentText" in item:
            content = (opt_str(item, "contentText", where, "") or "").encode("utf-8")
        else:
            raw = req_str(item, "contentBase64", where)
            try:
                content = base64.b64decode(raw.encode("ascii"), validate=True)
            except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
                raise bad(f"{where}.contentBase64 is not valid base64") from exc
        inline = opt_bool(item, "isInline", where)
        out.append(
            Attachment(
                id=ids.rest_message_id(),
                name=name,
                content_type=opt_str(item, "contentType", where, "application/octet-stream")
                or "application/octet-stream",
                content=content,
                is_inline=inline,
                content_id=opt_str(item, "contentId", where) if inline else None,
            )
        )
    return out


def _headers(spec: JsonDict, ctx: str) -> list[tuple[str, str]]:
    value = spec.get("headers")
    if value is None:
        return []
    if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
        return [(str(k), v) for k, v in value.items()]
    if isinstance(value, list):
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise bad(f"{ctx}.headers[{i}] must be an object with name and value")
            out.append((req_str(item, "name", f"{ctx}.headers[{i}]"), str(item.get("value", ""))))
        return out
    raise bad(f"{ctx}.headers must be an object of strings or a list of {{name, value}}")


def message_draft(store: Store, spec: JsonDict, ctx: str = "message") -> MessageDraft:
    check_keys(spec, MESSAGE_FIELDS, ctx)
    body_value = spec.get("body", "")
    body_type = opt_str(spec, "bodyType", ctx)
    if isinstance(body_value, dict):  # Graph's itemBody
        body_type = body_type or str(body_value.get("contentType", "text"))
        body_value = body_value.get("content", "")
    if not isinstance(body_value, str):
        raise bad(f"{ctx}.body must be a string or an object with contentType and content")
    body_type = (body_type or "text").lower()
    if body_type not in ("text", "html"):
        raise bad(f"{ctx}.bodyType must be 'text' or 'html'")
    importance = (opt_str(spec, "importance", ctx, "normal") or "normal").lower()
    if importance not in IMPORTANCE:
        raise bad(f"{ctx}.importance must be low, normal or high")
    inference = opt_str(spec, "inferenceClassification", ctx, "focused") or "focused"
    if inference not in ("focused", "other"):
        raise bad(f"{ctx}.inferenceClassification must be focused or other")
    flag_status = opt_str(spec, "flagStatus", ctx, "notFlagged") or "notFlagged"
    if flag_status not in ("notFlagged", "flagged", "complete"):
        raise bad(f"{ctx}.flagStatus must be notFlagged, flagged or complete")
    from_ = recipient(spec["from"], f"{ctx}.from") if spec.get("from") is not None else None
    sender = recipient(spec["sender"], f"{ctx}.sender") if spec.get("sender") is not None else None
    received = (
        parse_when(spec["receivedDateTime"], store.clock, f"{ctx}.receivedDateTime")
        if spec.get("receivedDateTime") is not None
        else None
    )
    sent = (
        parse_when(spec["sentDateTime"], store.clock, f"{ctx}.sentDateTime")
        if spec.get("sentDateTime") is not None
        else None
    )
    message_id = opt_str(spec, "internetMessageId", ctx)
    if message_id is not None and not (message_id.startswith("<") and message_id.endswith(">")):
        message_id = f"<{message_id.strip('<>')}>"
    return MessageDraft(
        folder_key=opt_str(spec, "folder", ctx, "inbox") or "inbox",
        subject=opt_str(spec, "subject", ctx, "") or "",
        body=body_value,
        body_type="html" if body_type == "html" else "text",
        from_=from_,
        sender=sender or from_,
        to=recipients(spec, "to", ctx),
        cc=recipients(spec, "cc", ctx),
        bcc=recipients(spec, "bcc", ctx),
        reply_to=recipients(spec, "replyTo", ctx),
        received=received,
        sent=sent,
        categories=str_list(spec, "categories", ctx),
        is_read=opt_bool(spec, "isRead", ctx),
        importance=importance,
        attachments=_attachments(spec, ctx),
        internet_message_id=message_id,
        headers=_headers(spec, ctx),
        inference=inference,
        flag_status=flag_status,
    )


def build_message(
    store: Store,
    mailbox: Mailbox,
    folder: Folder,
    draft: MessageDraft,
    owner: User,
    *,
    subject: str | None = None,
    body: str | None = None,
    received: datetime | None = None,
    internet_message_id: str | None = None,
) -> Message:
    to = draft.to or [Recipient(owner.display_name, owner.user_principal_name)]
    message_id = (
        internet_message_id or draft.internet_message_id or f"<{ids.opaque(12)}@m365sim.local>"
    )
    msg = store.new_message(
        mailbox,
        folder,
        subject=draft.subject if subject is None else subject,
        body=draft.body if body is None else body,
        body_type=draft.body_type,
        sender=draft.sender,
        to=list(to),
        cc=list(draft.cc),
        bcc=list(draft.bcc),
        reply_to=list(draft.reply_to),
        received=received or draft.received,
        sent=draft.sent,
        internet_message_id=message_id,
        conversation_id=conversation_id_for(message_id),
        importance=draft.importance,
        is_read=draft.is_read,
        categories=list(draft.categories),
        inference_classification=draft.inference,
        flag_status=draft.flag_status,
        headers=list(draft.headers),
        attachments=[
            Attachment(
                id=ids.rest_message_id(),
                name=a.name,
                content_type=a.content_type,
                content=a.content,
                is_inline=a.is_inline,
                content_id=a.content_id,
            )
            for a in draft.attachments
        ],
    )
    msg.from_ = draft.from_
    return msg


def build_from_mime(
    store: Store,
    mailbox: Mailbox,
    folder: Folder,
    parsed: ParsedMail,
    *,
    received_now: bool,
    is_read: bool = False,
    categories: list[str] | None = None,
) -> Message:
    now = store.clock.now()
    received = now if received_now else (parsed.sent or now)
    msg = store.new_message(
        mailbox,
        folder,
        subject=parsed.subject,
        body=parsed.body,
        body_type=parsed.body_type,
        sender=parsed.sender,
        to=parsed.to,
        cc=parsed.cc,
        bcc=parsed.bcc,
        reply_to=parsed.reply_to,
        received=received,
        sent=parsed.sent or received,
        internet_message_id=parsed.internet_message_id,
        conversation_id=parsed.conversation_id,
        importance=parsed.importance,
        headers=parsed.headers,
        attachments=parsed.attachments,
        is_read=is_read,
        categories=list(categories or []),
    )
    msg.from_ = parsed.from_
    return msg


def delivered_json(user: User, msg: Message) -> JsonDict:
    return {
        "id": msg.immutable_id,
        "restId": msg.rest_id,
        "internetMessageId": msg.internet_message_id,
        "mailboxId": user.id,
        "folderId": msg.folder_id,
    }


def message_summary(msg: Message) -> JsonDict:
    return {
        "id": msg.immutable_id,
        "restId": msg.rest_id,
        "folderId": msg.folder_id,
        "subject": msg.subject,
        "from": recipient_json(msg.from_),
        "receivedDateTime": iso(msg.received),
        "isRead": msg.is_read,
        "categories": list(msg.categories),
        "hasAttachments": msg.has_attachments,
        "internetMessageId": msg.internet_message_id,
    }


def insert(store: Store, tenant: Tenant, user: User, msg: Message) -> Message:
    with store.lock:
        if msg.folder_id not in user.mailbox.folders:
            raise bad("the target folder was deleted while the message was being delivered")
        return store.insert_message(tenant, user.mailbox, msg)


# ----------------------------------------------------------------------------- routes
def _query_bool(request: Request, name: str) -> bool:
    value = request.query_params.get(name)
    if value is None:
        return False
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise bad(f"query parameter {name} must be true or false")


def build_routes(state: EmulatorState) -> list[BaseRoute]:
    store = state.store

    @endpoint
    async def deliver(request: Request) -> Response:
        tenant, user = find_mailbox(store, request.path_params["key"])
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        config = state.config
        if content_type in ("message/rfc822", "application/octet-stream"):
            limit = config.deliver_max_bytes
            raw = await read_body(
                request,
                limit,
                f"the message exceeds the maximum message size of {limit} bytes "
                "(deliver_max_bytes)",
            )

            def parse() -> ParsedMail:
                return parse_rfc822(
                    raw, max_bytes=limit, max_header_bytes=config.deliver_max_header_bytes
                )

            try:
                parsed = (
                    parse() if len(raw) <= INLINE_PARSE_BYTES else await run_in_threadpool(parse)
                )
            except MimeError as exc:
                raise ControlError(exc.status, exc.message) from exc
            received = request.query_params.get("received", "header").lower()
            if received not in ("header", "now"):
                raise bad("query parameter received must be 'header' or 'now'")
            categories = [
                c.strip()
                for c in request.query_params.get("categories", "").split(",")
                if c.strip()
            ]
            with store.lock:
                folder = resolve_folder(
                    store, user.mailbox, request.query_params.get("folder", "inbox"), "folder"
                )
                msg = build_from_mime(
                    store,
                    user.mailbox,
                    folder,
                    parsed,
                    received_now=received == "now",
                    is_read=_query_bool(request, "isRead"),
                    categories=categories,
                )
                insert(store, tenant, user, msg)
                return ok(delivered_json(user, msg), 201)
        if content_type == "application/json" or content_type.endswith("+json"):
            spec = parse_json(await read_body(request, config.deliver_max_bytes * 2))
            draft = message_draft(store, spec)
            with store.lock:
                folder = resolve_folder(store, user.mailbox, draft.folder_key, "message.folder")
                msg = build_message(store, user.mailbox, folder, draft, user)
                insert(store, tenant, user, msg)
                return ok(delivered_json(user, msg), 201)
        raise bad(
            "Content-Type must be message/rfc822 (raw MIME) or application/json "
            f"(a message description), not {content_type or 'missing'!r}"
        )

    @endpoint
    async def deliver_bulk(request: Request) -> Response:
        tenant, user = find_mailbox(store, request.path_params["key"])
        spec = await read_json(request)
        check_keys(spec, {"count", "template", "folder"}, "bulk")
        count = opt_int(spec, "count", "bulk", 0, minimum=1)
        if count > BULK_MAX:
            raise bad(f"count must be at most {BULK_MAX} per request")
        if count == 0:
            raise bad("count is required: how many messages to deliver")
        template = spec.get("template", {})
        if not isinstance(template, dict):
            raise bad("template must be an object describing the message (see deliver)")
        draft = message_draft(store, template, "template")
        folder_key = opt_str(spec, "folder", "bulk") or draft.folder_key
        result = await bulk_deliver(store, tenant, user, draft, count, folder_key)
        return ok(result, 201)

    @endpoint
    async def mailboxes(request: Request) -> Response:
        with store.lock:
            return ok(
                {
                    "value": [
                        {
                            "id": user.id,
                            "tenantId": tenant.id,
                            "userPrincipalName": user.user_principal_name,
                            "displayName": user.display_name,
                            "isSharedMailbox": user.is_shared_mailbox,
                            "messageCount": len(user.mailbox.messages),
                        }
                        for tenant, user in store.iter_mailboxes()
                    ]
                }
            )

    @endpoint
    async def mailbox_detail(request: Request) -> Response:
        tenant, user = find_mailbox(store, request.path_params["key"])
        with store.lock:
            return ok(mailbox_json(store, tenant, user))

    @endpoint
    async def folders(request: Request) -> Response:
        _, user = find_mailbox(store, request.path_params["key"])
        spec = await read_json(request)
        check_keys(spec, {"path", "hidden"}, "folder")
        path = req_str(spec, "path", "folder")
        folder, created = create_folder_path(
            store, user.mailbox, path, "path", hidden=opt_bool(spec, "hidden", "folder")
        )
        with store.lock:
            body = {
                "id": folder.id,
                "path": folder_path(store, user.mailbox, folder),
                "created": created,
            }
        return ok(body, 201 if created else 200)

    @endpoint
    async def categories(request: Request) -> Response:
        _, user = find_mailbox(store, request.path_params["key"])
        if request.method == "POST":
            category = add_category(store, user.mailbox, await read_json(request), "category")
            return ok(category_json(category), 201)
        with store.lock:
            return ok({"value": [category_json(c) for c in user.mailbox.categories.values()]})

    @endpoint
    async def messages(request: Request) -> Response:
        _, user = find_mailbox(store, request.path_params["key"])
        limit_raw = request.query_params.get("limit", "100")
        if not limit_raw.isdigit() or not 1 <= int(limit_raw) <= 10_000:
            raise bad("limit must be a number between 1 and 10000")
        with store.lock:
            mailbox = user.mailbox
            key = request.query_params.get("folder")
            if key is not None:
                folder = mailbox.folder(key)
                if folder is None:
                    try:
                        folder = resolve_folder(store, mailbox, key, "folder")
                    except ControlError as exc:
                        raise not_found(f"folder {key!r} not found") from exc
                chosen = [mailbox.messages[m] for m in folder.messages if m in mailbox.messages]
            else:
                chosen = list(mailbox.messages.values())
            chosen.sort(key=lambda m: m.received, reverse=True)
            return ok({"value": [message_summary(m) for m in chosen[: int(limit_raw)]]})

    prefix = "/_emulator/mailboxes"
    return [
        Route(prefix, mailboxes, methods=["GET"]),
        Route(f"{prefix}/{{key}}", mailbox_detail, methods=["GET"]),
        Route(f"{prefix}/{{key}}/deliver", deliver, methods=["POST"]),
        Route(f"{prefix}/{{key}}/deliver-bulk", deliver_bulk, methods=["POST"]),
        Route(f"{prefix}/{{key}}/folders", folders, methods=["POST"]),
        Route(f"{prefix}/{{key}}/categories", categories, methods=["GET", "POST"]),
        Route(f"{prefix}/{{key}}/messages", messages, methods=["GET"]),
    ]


async def bulk_deliver(
    store: Store, tenant: Tenant, user: User, draft: MessageDraft, count: int, folder_key: str
) -> JsonDict:
    """Deliver ``count`` copies of ``draft``; ``{n}`` in subject and body becomes 1..count.

    Received times end at the template's ``receivedDateTime`` (or now), one second apart, so
    the newest message is the last one delivered.
    """
    with store.lock:
        folder = resolve_folder(store, user.mailbox, folder_key, "folder")
        folder_id = folder.id
    end = draft.received or store.clock.now()
    first_id: str | None = None
    last_id: str | None = None
    batch = ids.opaque(9)  # unique Message-IDs without a random draw per message
    templated_subject = "{n}" in draft.subject
    templated_body = "{n}" in draft.body
    done = 0
    while done < count:
        upto = min(count, done + BULK_CHUNK)
        with store.lock:
            target = user.mailbox.folders.get(folder_id)
            if target is None:
                raise bad("the target folder was deleted during bulk delivery")
            for i in range(done, upto):
                n = str(i + 1)
                msg = build_message(
                    store,
                    user.mailbox,
                    target,
                    draft,
                    user,
                    subject=draft.subject.replace("{n}", n) if templated_subject else None,
                    body=draft.body.replace("{n}", n) if templated_body else None,
                    received=end - timedelta(seconds=count - 1 - i),
                    internet_message_id=None
                    if draft.internet_message_id
                    else f"<{n}.{batch}@m365sim.local>",
                )
                store.insert_message(tenant, user.mailbox, msg)
                if first_id is None:
                    first_id = msg.immutable_id
                last_id = msg.immutable_id
        done = upto
        await asyncio.sleep(0)  # let Graph requests in between chunks
    return {
        "mailboxId": user.id,
        "folderId": folder_id,
        "delivered": count,
        "firstId": first_id,
        "lastId": last_id,
    }


def mailbox_json(store: Store, tenant: Tenant, user: User) -> dict[str, Any]:
    mailbox = user.mailbox
    folders = []
    for folder in mailbox.folders.values():
        if folder.well_known == "msgfolderroot":
            continue
        unread = sum(
            1 for m in folder.messages if (msg := mailbox.messages.get(m)) and not msg.is_read
        )
        folders.append(
            {
                "id": folder.id,
                "path": folder_path(store, mailbox, folder),
                "wellKnownName": folder.well_known,
                "isHidden": folder.is_hidden,
                "totalItemCount": len(folder.messages),
                "unreadItemCount": unread,
            }
        )
    return {
        "id": user.id,
        "tenantId": tenant.id,
        "userPrincipalName": user.user_principal_name,
        "displayName": user.display_name,
        "isSharedMailbox": user.is_shared_mailbox,
        "fullAccess": sorted(user.full_access),
        "messageCount": len(mailbox.messages),
        "folders": folders,
        "categories": [category_json(c) for c in mailbox.categories.values()],
        "lastReceived": iso_or_none(
            max((m.received for m in mailbox.messages.values()), default=None)
        ),
    }
