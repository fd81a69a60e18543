"""Attachments of a message: list, get, raw content, add (small) and delete.

Routes below ``/messages/{id}`` (and the folder-scoped form):

* ``GET .../attachments`` -> 200 collection; ``GET .../attachments/{aid}`` -> 200 attachment;
* ``GET .../attachments/{aid}/$value`` -> the raw bytes of a file attachment (with its
  content type), or the MIME of an attached message;
* ``POST .../attachments`` (Mail.ReadWrite) -> 201: a ``#microsoft.graph.fileAttachment``
  ``{name, contentBytes, contentType?, isInline?, contentId?}`` up to
  ``config.attachment_max_bytes`` (3 MB, documented; bigger files need an upload session,
  not emulated: 413 ``ErrorAttachmentSizeLimitExceeded``), or a
  ``#microsoft.graph.itemAttachment`` ``{name, item: {message properties}}``;
* ``DELETE .../attachments/{aid}`` -> 204.

Delivered mail keeps the attachments of its MIME (``mime.py``): parts with a file name or an
``attachment`` disposition become ``fileAttachment``; an attached ``message/rfc822`` becomes an
``itemAttachment`` named after its subject, whose ``$value`` is that message's MIME. Adding or
removing an attachment is an update of the message (new change key, delta, notifications).

JSON follows the CSDL: ``@odata.type``, ``@odata.mediaContentType`` (file attachments), ``id``,
``lastModifiedDateTime``, ``name``, ``contentType``, ``size``, ``isInline`` and, for file
attachments, ``contentId``, ``contentLocation`` and ``contentBytes`` (base64). Item
attachments have ``contentType`` null (their ``item`` needs ``$expand``, not emulated).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from m365sim import ids
from m365sim.clock import iso
from m365sim.errors import GraphError, invalid_id, item_not_found
from m365sim.graph.dispatch import Ctx, GraphResponse
from m365sim.graph.messages import _routes, apply_changes, find_message, read_message_changes
from m365sim.graph.serialize import (
    body_read_error,
    context_url,
    looks_like_id,
    read_bool,
    read_string,
    unknown_body_property,
)
from m365sim.mime_out import message_to_mime, safe_content_type
from m365sim.store import Attachment, Message, Recipient

FILE_TYPE = "microsoft.graph.fileAttachment"
ITEM_TYPE = "microsoft.graph.itemAttachment"
REFERENCE_TYPE = "microsoft.graph.referenceAttachment"
ITEM_CONTENT_TYPE = "message/rfc822"
MAX_NAME = 255


def is_item(attachment: Attachment) -> bool:
    return attachment.content_type.lower() == ITEM_CONTENT_TYPE


def _item_name(attachment: Attachment) -> str:
    name = attachment.name
    return name[: -len(".eml")] if name.lower().endswith(".eml") else name


def attachment_json(msg: Message, attachment: Attachment) -> dict[str, Any]:
    common = {
        "id": attachment.id,
        "lastModifiedDateTime": iso(msg.last_modified),
    }
    size = len(attachment.content)
    if is_item(attachment):
        return {
            "@odata.type": f"#{ITEM_TYPE}",
            **common,
            "name": _item_name(attachment),
            "contentType": None,
            "size": size,
            "isInline": False,
        }
    return {
        "@odata.type": f"#{FILE_TYPE}",
        "@odata.mediaContentType": attachment.content_type,
        **common,
        "name": attachment.name,
        "contentType": attachment.content_type,
        "size": size,
        "isInline": attachment.is_inline,
        "contentId": attachment.content_id,
        "contentLocation": None,
        "contentBytes": base64.b64encode(attachment.content).decode(),
    }


def _find(ctx: Ctx, msg: Message) -> Attachment:
    key = ctx.params["attachment"]
    if not looks_like_id(key):
        raise invalid_id()
    for attachment in msg.attachments:
        if attachment.id == key:
            return attachment
    raise item_not_found()


def _context(ctx: Ctx, msg: Message, tail: str) -> str:
    return context_url(ctx, f"messages('{msg.rest_id}')/attachments{tail}")


@_routes("GET", "/attachments", "read")
def list_attachments(ctx: Ctx) -> GraphResponse:
    msg = find_message(ctx)
    return GraphResponse(
        200,
        {
            "@odata.context": _context(ctx, msg, ""),
            "value": [attachment_json(msg, a) for a in msg.attachments],
        },
    )


@_routes("GET", "/attachments/{attachment}", "read")
def get_attachment(ctx: Ctx) -> GraphResponse:
    msg = find_message(ctx)
    attachment = _find(ctx, msg)
    body: dict[str, Any] = {"@odata.context": _context(ctx, msg, "/$entity")}
    body.update(attachment_json(msg, attachment))
    return GraphResponse(200, body)


@_routes("GET", "/attachments/{attachment}/$value", "read")
def get_attachment_value(ctx: Ctx) -> GraphResponse:
    msg = find_message(ctx)
    attachment = _find(ctx, msg)
    content_type = "text/plain" if is_item(attachment) else attachment.content_type
    return GraphResponse(200, attachment.content, content_type=safe_content_type(content_type))


def read_new_attachment(ctx: Ctx, data: Any, owner: Message | None = None) -> Attachment:
    """A ``fileAttachment`` or ``itemAttachment`` from a request body (POST, or an element of
    ``message.attachments`` in sendMail / draft creation), checked completely."""
    if not isinstance(data, dict):
        raise body_read_error(
            "An unexpected 'PrimitiveValue' node was found when reading from the JSON reader. "
            "A 'StartObject' node was expected."
        )
    odata_type = data.get("@odata.type")
    kind = odata_type.lstrip("#").lower() if isinstance(odata_type, str) else None
    if kind is None:
        raise GraphError(
            400,
            "ErrorInvalidRequest",
            "The attachment type is required: set '@odata.type' to "
            "'#microsoft.graph.fileAttachment' or '#microsoft.graph.itemAttachment'.",
        )
    if kind == REFERENCE_TYPE.lower():
        raise GraphError(
            400, "ErrorInvalidRequest", "Reference attachments are not supported by m365sim."
        )
    if kind not in (FILE_TYPE.lower(), ITEM_TYPE.lower()):
        raise body_read_error(
            f"A type named '{odata_type}' could not be resolved by the model. When a model is "
            "available, each type name must resolve to a valid type."
        )
    values = _fields(data, item=kind == ITEM_TYPE.lower())
    name = values.get("name")
    if not isinstance(name, str) or not name.strip():
        raise GraphError(400, "ErrorInvalidRequest", "The attachment name can't be empty.")
    if len(name) > MAX_NAME or any(ord(c) < 32 for c in name):
        raise GraphError(
            400,
            "ErrorInvalidRequest",
            f"The attachment name must be at most {MAX_NAME} characters without control "
            "characters.",
        )
    limit = ctx.state.config.attachment_max_bytes
    if kind == ITEM_TYPE.lower():
        content = _item_content(ctx, values.get("item"), owner)
        content_type, inline, content_id = ITEM_CONTENT_TYPE, False, None
        name = name + ".eml"
    else:
        content = values.get("contentbytes", b"")
        content_type = values.get("contenttype") or "application/octet-stream"
        inline = bool(values.get("isinline", False))
        content_id = values.get("contentid")
    if len(content) > limit:
        raise GraphError(
            413,
            "ErrorAttachmentSizeLimitExceeded",
            f"The attachment is larger than {limit} bytes; use an upload session "
            "(not emulated by m365sim).",
        )
    return Attachment(
        id=ids.rest_message_id(),
        name=name,
        content_type=content_type,
        content=content,
        is_inline=inline,
        content_id=content_id,
    )


def _fields(data: Mapping[str, Any], *, item: bool) -> dict[str, Any]:
    type_name = ITEM_TYPE if item else FILE_TYPE
    allowed = {"name", "contenttype", "isinline", "id", "size", "lastmodifieddatetime"}
    allowed |= {"item"} if item else {"contentbytes", "contentid", "contentlocation"}
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key.startswith("@odata."):
            continue
        low = key.lower()
        if low not in allowed:
            raise unknown_body_property(key, type_name)
        if low in ("id", "size", "lastmodifieddatetime"):
            continue  # server-set; Graph ignores them on create
        if low == "isinline":
            out[low] = read_bool(value)
        elif low == "contentbytes":
            text = read_string(value) or ""
            try:
                out[low] = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise body_read_error(
                    "Cannot convert the literal to the expected type 'Edm.Binary'."
                ) from None
        elif low == "item":
            out[low] = value
        else:
            out[low] = read_string(value)
    if not item and "contentbytes" not in out:
        raise GraphError(
            400, "ErrorInvalidRequest", "The contentBytes of a file attachment are required."
        )
    return out


def _item_content(ctx: Ctx, item: Any, owner: Message | None) -> bytes:
    if not isinstance(item, dict):
        raise GraphError(
            400, "ErrorInvalidRequest", "An item attachment needs its 'item' (a message)."
        )
    data = dict(item)
    odata_type = data.pop("@odata.type", "#microsoft.graph.message")
    if not isinstance(odata_type, str) or odata_type.lstrip("#").lower() != (
        "microsoft.graph.message"
    ):
        raise GraphError(
            400, "ErrorInvalidRequest", "m365sim supports messages as item attachments only."
        )
    changes = read_message_changes(data, is_draft=True)
    user = ctx.mailbox_user
    store = ctx.state.store
    drafts = user.mailbox.folder("drafts")
    assert drafts is not None
    me = Recipient(user.display_name, user.user_principal_name)
    inner = store.new_message(user.mailbox, drafts, subject="", body="", sender=me)
    apply_changes(inner, changes)
    inner.is_draft = False
    if owner is not None:
        inner.sent = owner.sent
    return message_to_mime(inner)


@_routes("POST", "/attachments", "write")
def add_attachment(ctx: Ctx) -> GraphResponse:
    msg = find_message(ctx)
    attachment = read_new_attachment(ctx, ctx.json(), msg)
    msg.attachments.append(attachment)
    ctx.state.store.update_message(ctx.tenant, ctx.mailbox_user.mailbox, msg)
    body: dict[str, Any] = {"@odata.context": _context(ctx, msg, "/$entity")}
    body.update(attachment_json(msg, attachment))
    return GraphResponse(201, body)


@_routes("DELETE", "/attachments/{attachment}", "write")
def delete_attachment(ctx: Ctx) -> GraphResponse:
    msg = find_message(ctx)
    attachment = _find(ctx, msg)
    msg.attachments = [a for a in msg.attachments if a.id != attachment.id]
    ctx.state.store.update_message(ctx.tenant, ctx.mailbox_user.mailbox, msg)
    return GraphResponse(204)
