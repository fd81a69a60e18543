"""Message, mailFolder and outlookCategory JSON, both directions, as Graph v1.0 writes it.

Out (store -> JSON)
  :func:`message_json` writes the default property set of graph.md 3.2 in Graph's own order
  (``@odata.etag`` and ``id`` first), or the ``$select``-ed subset; ``uniqueBody`` and
  ``internetMessageHeaders`` only when selected. Ids are the REST id, or the immutable id when
  the request sent ``Prefer: IdType="ImmutableId"`` (graph.md 3.5). ``bodyPreview`` is the
  first 255 characters of the body as text. ``Prefer: outlook.body-content-type="text"``
  (or ``"html"``) converts bodies, as Exchange does, and is echoed in ``Preference-Applied``.
  Date-times are whole-second UTC (``2024-08-12T08:43:22Z``); ``@odata.etag`` is
  ``W/"<changeKey>"``. ``conversationIndex`` (``Edm.Binary``) is derived from the conversation
  id and creation time (22 bytes, like Outlook's header block), base64 on the wire.
  :func:`folder_json` writes mailFolder (plus ``sizeInBytes``, which the live service returns
  although the v1.0 CSDL lacks it); :func:`category_json` an outlookCategory.

In (JSON -> values)
  The ``read_*`` helpers check request-body values the way Graph's OData reader does and raise
  400 ``RequestBodyRead`` with ODataLib's wording ("Cannot convert the literal '0' to the
  expected type 'Edm.String'.", "An unexpected 'PrimitiveValue' node was found ... A
  'StartArray' node was expected."). Enum values are matched case-insensitively (Graph accepts
  ``"HTML"`` for ``contentType``) and a wrong one answers .NET's "Requested value 'x' was not
  found.". :func:`action_parameters` lower-cases action parameter names: the CSDL declares
  them PascalCase (``DestinationId``, ``ToRecipients``) and the Python SDK sends exactly that,
  while the docs show camelCase; Graph accepts both (graph.md 3.6).
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from html.parser import HTMLParser
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

from m365sim.clock import iso
from m365sim.errors import GraphError
from m365sim.graph.dispatch import Ctx, GraphRequest, GraphResponse
from m365sim.graph.odata import (
    EntityInfo,
    Filter,
    Prop,
    decode_token,
    encode_token,
    parse_filter,
    parse_skip,
    parse_top,
)
from m365sim.store import Category, Folder, Mailbox, Message, Recipient

MESSAGE_TYPE = "microsoft.graph.message"
FOLDER_TYPE = "microsoft.graph.mailFolder"
CATEGORY_TYPE = "microsoft.graph.outlookCategory"

# The default property set, in the order Graph writes it (graph.md 3.2).
MESSAGE_DEFAULT: tuple[str, ...] = (
    "id",
    "createdDateTime",
    "lastModifiedDateTime",
    "changeKey",
    "categories",
    "receivedDateTime",
    "sentDateTime",
    "hasAttachments",
    "internetMessageId",
    "subject",
    "bodyPreview",
    "importance",
    "parentFolderId",
    "conversationId",
    "conversationIndex",
    "isDeliveryReceiptRequested",
    "isReadReceiptRequested",
    "isRead",
    "isDraft",
    "webLink",
    "inferenceClassification",
    "body",
    "sender",
    "from",
    "toRecipients",
    "ccRecipients",
    "bccRecipients",
    "replyTo",
    "flag",
)
# Returned only when named in $select.
MESSAGE_SELECT_ONLY: tuple[str, ...] = ("uniqueBody", "internetMessageHeaders")
MESSAGE_SELECTABLE: tuple[str, ...] = MESSAGE_DEFAULT + MESSAGE_SELECT_ONLY

IMPORTANCE = ("low", "normal", "high")
INFERENCE = ("focused", "other")
FLAG_STATUS = ("notFlagged", "complete", "flagged")
BODY_TYPES = ("text", "html")

MESSAGE_ENTITY = EntityInfo(
    MESSAGE_TYPE,
    {
        p.name.lower(): p
        for p in (
            Prop("receivedDateTime", "datetime"),
            Prop("sentDateTime", "datetime"),
            Prop("createdDateTime", "datetime"),
            Prop("lastModifiedDateTime", "datetime"),
            Prop("isRead", "bool"),
            Prop("isDraft", "bool"),
            Prop("hasAttachments", "bool"),
            Prop("importance", "enum", "microsoft.graph.importance"),
            Prop("inferenceClassification", "enum", "microsoft.graph.inferenceClassificationType"),
            Prop("subject", "string"),
            Prop("bodyPreview", "string"),
            Prop("internetMessageId", "string"),
            Prop("conversationId", "string"),
            Prop("parentFolderId", "string"),
            Prop("changeKey", "string"),
            Prop("categories", "strings"),
            Prop("from/emailAddress/address", "string"),
            Prop("from/emailAddress/name", "string"),
            Prop("sender/emailAddress/address", "string"),
            Prop("sender/emailAddress/name", "string"),
            Prop("flag/flagStatus", "enum", "microsoft.graph.followupFlagStatus"),
        )
    },
)

FOLDER_PROPERTIES: tuple[str, ...] = (
    "id",
    "displayName",
    "parentFolderId",
    "childFolderCount",
    "unreadItemCount",
    "totalItemCount",
    "sizeInBytes",
    "isHidden",
)
FOLDER_ENTITY = EntityInfo(
    FOLDER_TYPE,
    {
        p.name.lower(): p
        for p in (
            Prop("displayName", "string"),
            Prop("isHidden", "bool"),
            Prop("childFolderCount", "int"),
            Prop("unreadItemCount", "int"),
            Prop("totalItemCount", "int"),
            Prop("parentFolderId", "string"),
        )
    },
)
CATEGORY_PROPERTIES: tuple[str, ...] = ("id", "displayName", "color")

T = TypeVar("T")


# ------------------------------------------------------------------------------ rendering


class Rendering:
    """How one request wants messages written: id type and body content type."""

    def __init__(self, req: GraphRequest) -> None:
        self.immutable = req.immutable_ids
        self.body_type: str | None = None
        for pref in req.prefers:
            name, _, value = pref.partition("=")
            if name.strip().lower() == "outlook.body-content-type":
                wanted = value.strip().strip('"').lower()
                if wanted in BODY_TYPES:
                    self.body_type = wanted

    def message_id(self, msg: Message) -> str:
        return msg.immutable_id if self.immutable else msg.rest_id

    def applied(self) -> dict[str, str]:
        """``Preference-Applied`` for what this rendering honoured."""
        applied = []
        if self.body_type is not None:
            applied.append(f'outlook.body-content-type="{self.body_type}"')
        if self.immutable:
            applied.append('IdType="ImmutableId"')
        return {"Preference-Applied": ", ".join(applied)} if applied else {}


def etag(change_key: str) -> str:
    return f'W/"{change_key}"'


def recipient_json(recipient: Recipient | None) -> dict[str, Any] | None:
    return recipient.to_graph() if recipient is not None else None


def _second(dt: datetime) -> datetime:
    return dt.astimezone(UTC).replace(microsecond=0)


def conversation_index(msg: Message) -> str:
    """Outlook's 22-byte conversation header: reserved byte, 5 time bytes, a 16-byte GUID."""
    return _conversation_index(msg.conversation_id, msg.created)


@lru_cache(maxsize=65536)
def _conversation_index(conversation_id: str, created: datetime) -> str:
    filetime = int((created.timestamp() + 11_644_473_600) * 10_000_000)
    time_bytes = (filetime >> 16).to_bytes(6, "big")[1:]
    guid = hashlib.md5(conversation_id.encode()).digest()
    return base64.b64encode(b"\x01" + time_bytes + guid).decode()


_iso = lru_cache(maxsize=65536)(iso)  # date-times repeat across pages; strftime is slow


@lru_cache(maxsize=65536)
def web_link(message_id: str) -> str:
    return (
        "https://outlook.office365.com/owa/?ItemID="
        f"{quote(message_id, safe='')}&exvsurl=1&viewmodel=ReadMessageItem"
    )


def body_json(msg: Message, body_type: str | None) -> dict[str, str]:
    if body_type is None or body_type == msg.body_type:
        if msg.body_type == "html":
            return {"contentType": "html", "content": html_document(msg.body_content)}
        return {"contentType": msg.body_type, "content": msg.body_content}
    if body_type == "text":
        return {"contentType": "text", "content": html_to_text(msg.body_content)}
    return {"contentType": "html", "content": text_to_html(msg.body_content)}


_HTML_START = re.compile(r"^\s*(?:<!--.*?-->\s*)*(?:<!doctype[^>]*>\s*)?<html[\s>]", re.I | re.S)
_BODY_START = re.compile(r"<body[^>]*>", re.I)


@lru_cache(maxsize=4096)
def html_document(content: str) -> str:
    """An HTML body as Outlook stores it: a whole ``<html>`` document. A fragment such as
    ``<p>Hi</p>`` (a draft's body, mail from a client that sent no ``<html>``) is wrapped in
    Exchange's head and body; a document is returned as it is."""
    if _HTML_START.match(content):
        return content
    inner = content
    found = _BODY_START.search(content)
    if found is not None:
        inner = re.sub(r"</body>\s*$", "", content[found.end() :], flags=re.I)
    return (
        '<html><head>\r\n<meta http-equiv="Content-Type" content="text/html; charset=utf-8">'
        f"\r\n</head>\r\n<body>\r\n{inner}\r\n</body>\r\n</html>\r\n"
    )


def message_json(
    msg: Message, rendering: Rendering, fields: Collection[str] | None = None
) -> dict[str, Any]:
    """One message; ``fields`` limits it to a ``$select`` (``id`` is always written)."""
    mid = rendering.message_id(msg)
    out: dict[str, Any] = {"@odata.etag": etag(msg.change_key), "id": mid}
    if fields is None:
        for name, write in _DEFAULT_WRITERS:
            out[name] = write(msg, mid, rendering)
        return out
    for name, write in _WRITERS:
        if name in fields:
            out[name] = write(msg, mid, rendering)
    return out


def message_value(msg: Message, name: str) -> Any:
    """A message's value for ``$filter``/``$orderby`` (date-times at Graph's 1 s precision)."""
    if name == "receivedDateTime":
        return _second(msg.received)
    if name == "sentDateTime":
        return _second(msg.sent)
    if name == "createdDateTime":
        return _second(msg.created)
    if name == "lastModifiedDateTime":
        return _second(msg.last_modified)
    if name == "isRead":
        return msg.is_read
    if name == "isDraft":
        return msg.is_draft
    if name == "hasAttachments":
        return msg.has_attachments
    if name == "importance":
        return msg.importance
    if name == "inferenceClassification":
        return msg.inference_classification
    if name == "subject":
        return msg.subject
    if name == "bodyPreview":
        return body_preview(msg.body_content, msg.body_type)
    if name == "internetMessageId":
        return msg.internet_message_id
    if name == "conversationId":
        return msg.conversation_id
    if name == "parentFolderId":
        return msg.folder_id
    if name == "changeKey":
        return msg.change_key
    if name == "categories":
        return msg.categories
    if name.startswith(("from/", "sender/")):
        who = msg.from_ if name.startswith("from/") else msg.sender
        if who is None:
            return None
        return who.address if name.endswith("/address") else who.name
    if name == "flag/flagStatus":
        return msg.flag_status
    raise KeyError(name)


def message_size(msg: Message) -> int:
    """An approximation of the item's size as Exchange counts it (content plus headers)."""
    size = 512 + len(msg.subject.encode()) + len(msg.body_content.encode())
    size += sum(len(k) + len(v) + 4 for k, v in msg.headers)
    return size + sum(len(a.content) for a in msg.attachments)


def folder_json(
    mailbox: Mailbox, folder: Folder, fields: Collection[str] | None = None
) -> dict[str, Any]:
    wanted = FOLDER_PROPERTIES if fields is None else fields
    out: dict[str, Any] = {"id": folder.id}
    values = folder_values(mailbox, folder)
    for name in FOLDER_PROPERTIES:
        if name != "id" and name in wanted:
            out[name] = values[name]
    return out


def folder_values(mailbox: Mailbox, folder: Folder) -> dict[str, Any]:
    messages = [mailbox.messages[i] for i in folder.messages if i in mailbox.messages]
    return {
        "id": folder.id,
        "displayName": folder.display_name,
        "parentFolderId": folder.parent_id or hidden_parent_id(mailbox, folder),
        "childFolderCount": len(mailbox.children(folder.id, include_hidden=True)),
        "unreadItemCount": sum(1 for m in messages if not m.is_read),
        "totalItemCount": len(messages),
        "sizeInBytes": sum(message_size(m) for m in messages),
        "isHidden": folder.is_hidden,
    }


def hidden_parent_id(mailbox: Mailbox, folder: Folder) -> str:
    """The id of the (unexposed) folder above the IPM root or the Recoverable Items tree.

    Exchange reports a parentFolderId for ``msgfolderroot`` and ``recoverableitemsdeletions``
    too: the mailbox's root folder and the Recoverable Items root. Neither is addressable
    through Graph, so the emulator derives a stable id of the same shape.
    """
    seed = f"{mailbox.user_id}:{'root' if folder.well_known == 'msgfolderroot' else 'recov'}"
    digest = hashlib.sha256(seed.encode()).digest()
    return base64.urlsafe_b64encode(b"\x00\x03\x24\x00\x01" + digest + digest[:8]).decode()


def category_json(category: Category) -> dict[str, Any]:
    return {"id": category.id, "displayName": category.display_name, "color": category.color}


# ------------------------------------------------------------------------- text and html


class _TextExtractor(HTMLParser):
    _BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "table"}
    _SKIP = {"script", "style", "head", "title"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self.skipping += 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)


@lru_cache(maxsize=4096)
def html_to_text(content: str) -> str:
    """Text of an HTML body, one line per block, as Exchange's conversion gives it."""
    parser = _TextExtractor()
    parser.feed(content)
    parser.close()
    lines = [
        re.sub(r"[ \t\r\f\v\xa0]+", " ", line).strip() for line in "".join(parser.parts).split("\n")
    ]
    text: list[str] = []
    for line in lines:
        if line or (text and text[-1]):
            text.append(line)
    while text and not text[-1]:
        text.pop()
    return "\r\n".join(text)


def text_to_html(content: str) -> str:
    escaped = "<br>\r\n".join(html.escape(line) for line in content.splitlines())
    return (
        '<html><head>\r\n<meta http-equiv="Content-Type" content="text/html; charset=utf-8">\r\n'
        '</head>\r\n<body>\r\n<div class="PlainText">'
        f"{escaped}</div>\r\n</body>\r\n</html>\r\n"
    )


@lru_cache(maxsize=8192)
def body_preview(content: str, body_type: str) -> str:
    text = html_to_text(content) if body_type == "html" else content
    return re.sub(r"\s+", " ", text).strip()[:255]


# ----------------------------------------------------------- message_json's property table

_Writer = Callable[[Message, str, "Rendering"], Any]


def _recipients(recipients: list[Recipient]) -> list[dict[str, Any]]:
    return [r.to_graph() for r in recipients]


def _flag(msg: Message) -> dict[str, Any]:
    flag: dict[str, Any] = {"flagStatus": msg.flag_status}
    flag.update({k: dict(v) for k, v in sorted(msg.flag_dates.items())})
    return flag


# How each property is written, in Graph's order (id is written first by message_json).
_PROPERTY_WRITERS: dict[str, _Writer] = {
    "createdDateTime": lambda m, i, r: _iso(m.created),
    "lastModifiedDateTime": lambda m, i, r: _iso(m.last_modified),
    "changeKey": lambda m, i, r: m.change_key,
    "categories": lambda m, i, r: list(m.categories),
    "receivedDateTime": lambda m, i, r: _iso(m.received),
    "sentDateTime": lambda m, i, r: _iso(m.sent),
    "hasAttachments": lambda m, i, r: m.has_attachments,
    "internetMessageId": lambda m, i, r: m.internet_message_id,
    "subject": lambda m, i, r: m.subject,
    "bodyPreview": lambda m, i, r: body_preview(m.body_content, m.body_type),
    "importance": lambda m, i, r: m.importance,
    "parentFolderId": lambda m, i, r: m.folder_id,
    "conversationId": lambda m, i, r: m.conversation_id,
    "conversationIndex": lambda m, i, r: _conversation_index(m.conversation_id, m.created),
    "isDeliveryReceiptRequested": lambda m, i, r: m.is_delivery_receipt_requested,
    "isReadReceiptRequested": lambda m, i, r: m.is_read_receipt_requested,
    "isRead": lambda m, i, r: m.is_read,
    "isDraft": lambda m, i, r: m.is_draft,
    "webLink": lambda m, i, r: web_link(i),
    "inferenceClassification": lambda m, i, r: m.inference_classification,
    "body": lambda m, i, r: body_json(m, r.body_type),
    "sender": lambda m, i, r: recipient_json(m.sender),
    "from": lambda m, i, r: recipient_json(m.from_),
    "toRecipients": lambda m, i, r: _recipients(m.to),
    "ccRecipients": lambda m, i, r: _recipients(m.cc),
    "bccRecipients": lambda m, i, r: _recipients(m.bcc),
    "replyTo": lambda m, i, r: _recipients(m.reply_to),
    "flag": lambda m, i, r: _flag(m),
    "uniqueBody": lambda m, i, r: body_json(m, r.body_type),
    "internetMessageHeaders": lambda m, i, r: [{"name": k, "value": v} for k, v in m.headers],
}
_WRITERS = [(n, _PROPERTY_WRITERS[n]) for n in MESSAGE_SELECTABLE if n != "id"]
_DEFAULT_WRITERS = [(n, _PROPERTY_WRITERS[n]) for n in MESSAGE_DEFAULT if n != "id"]


# ------------------------------------------------------------------------ reading bodies


def body_read_error(message: str) -> GraphError:
    return GraphError(400, "RequestBodyRead", message)


def unknown_body_property(name: str, type_name: str = MESSAGE_TYPE) -> GraphError:
    return body_read_error(
        f"The property '{name}' does not exist on type '{type_name}'. Make sure to only use "
        "property names that are defined by the type or mark the type as open type."
    )


def _literal(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def _node(value: Any) -> str:
    if isinstance(value, list):
        return "StartArray"
    if isinstance(value, dict):
        return "StartObject"
    return "PrimitiveValue"


def _expect(value: Any, wanted: str) -> GraphError:
    return body_read_error(
        f"An unexpected '{_node(value)}' node was found when reading from the JSON reader. "
        f"A '{wanted}' node was expected."
    )


def read_string(value: Any, *, nullable: bool = True) -> str | None:
    if value is None:
        if nullable:
            return None
        raise body_read_error(
            "Cannot convert the literal 'null' to the expected type 'Edm.String'."
        )
    if isinstance(value, list | dict):
        raise _expect(value, "PrimitiveValue")
    if not isinstance(value, str):
        raise body_read_error(
            f"Cannot convert the literal '{_literal(value)}' to the expected type 'Edm.String'."
        )
    return value


def read_bool(value: Any) -> bool:
    if isinstance(value, list | dict):
        raise _expect(value, "PrimitiveValue")
    if not isinstance(value, bool):
        raise body_read_error(
            f"Cannot convert the literal '{_literal(value)}' to the expected type 'Edm.Boolean'."
        )
    return value


def read_enum(value: Any, members: Iterable[str]) -> str:
    if isinstance(value, list | dict):
        raise _expect(value, "PrimitiveValue")
    if not isinstance(value, str):
        raise body_read_error(f"Requested value '{_literal(value)}' was not found.")
    for member in members:
        if member.lower() == value.strip().lower():
            return member
    raise body_read_error(f"Requested value '{value}' was not found.")


def read_string_list(value: Any, name: str) -> list[str]:
    if value is None:
        raise body_read_error(
            f"A null value was found for the property named '{name}', which has the expected "
            "type 'Collection(Edm.String)[Nullable=False]'. The expected type "
            "'Collection(Edm.String)[Nullable=False]' does not allow null values."
        )
    if not isinstance(value, list):
        raise _expect(value, "StartArray")
    return [s for s in (read_string(v, nullable=False) for v in value) if s is not None]


def _object(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _expect(value, "StartObject")
    return value


def _annotations_ok(data: Mapping[str, Any], type_name: str) -> None:
    odata_type = data.get("@odata.type")
    if odata_type is not None:
        wanted = f"#{type_name}".lower()
        if not isinstance(odata_type, str) or odata_type.lower() not in (wanted, wanted[1:]):
            raise body_read_error(
                f"A type named '{odata_type}' could not be resolved by the model. When a model "
                "is available, each type name must resolve to a valid type."
            )


def read_recipient(value: Any) -> Recipient:
    data = _object(value)
    _annotations_ok(data, "microsoft.graph.recipient")
    address: str | None = None
    name: str | None = None
    for key, item in data.items():
        if key.startswith("@odata."):
            continue
        if key.lower() != "emailaddress":
            raise unknown_body_property(key, "microsoft.graph.recipient")
        inner = _object(item)
        for inner_key, inner_value in inner.items():
            if inner_key.startswith("@odata."):
                continue
            low = inner_key.lower()
            if low == "address":
                address = read_string(inner_value)
            elif low == "name":
                name = read_string(inner_value)
            else:
                raise unknown_body_property(inner_key, "microsoft.graph.emailAddress")
    if not address or "@" not in address:
        raise GraphError(
            400,
            "ErrorInvalidRecipients",
            f"At least one recipient is not valid., Recipient '{address or ''}' is not resolved. "
            "All recipients must be resolved before a message can be submitted.",
        )
    return Recipient(name if name is not None else address, address)


def read_recipients(value: Any, name: str) -> list[Recipient]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _expect(value, "StartArray")
    return [read_recipient(v) for v in value]


def read_item_body(value: Any) -> tuple[str, str]:
    """``itemBody`` -> (contentType, content)."""
    data = _object(value)
    _annotations_ok(data, "microsoft.graph.itemBody")
    content_type = "text"
    content = ""
    for key, item in data.items():
        if key.startswith("@odata."):
            continue
        low = key.lower()
        if low == "contenttype":
            content_type = read_enum(item, BODY_TYPES)
        elif low == "content":
            content = read_string(item) or ""
        else:
            raise unknown_body_property(key, "microsoft.graph.itemBody")
    return content_type, content


_DATE_TIME_TZ = ("startDateTime", "dueDateTime", "completedDateTime")


def read_flag(value: Any) -> tuple[str | None, dict[str, dict[str, str] | None]]:
    """``followupFlag`` -> (flagStatus or None, {date property: dateTimeTimeZone or None})."""
    data = _object(value)
    _annotations_ok(data, "microsoft.graph.followupFlag")
    status: str | None = None
    dates: dict[str, dict[str, str] | None] = {}
    for key, item in data.items():
        if key.startswith("@odata."):
            continue
        if key.lower() == "flagstatus":
            status = read_enum(item, FLAG_STATUS)
            continue
        real = next((d for d in _DATE_TIME_TZ if d.lower() == key.lower()), None)
        if real is None:
            raise unknown_body_property(key, "microsoft.graph.followupFlag")
        if item is None:
            dates[real] = None
            continue
        inner = _object(item)
        stamp: dict[str, str] = {}
        for inner_key, inner_value in inner.items():
            if inner_key.startswith("@odata."):
                continue
            if inner_key.lower() == "datetime":
                stamp["dateTime"] = read_string(inner_value, nullable=False) or ""
            elif inner_key.lower() == "timezone":
                stamp["timeZone"] = read_string(inner_value) or "UTC"
            else:
                raise unknown_body_property(inner_key, "microsoft.graph.dateTimeTimeZone")
        if "dateTime" not in stamp:
            raise body_read_error(
                "Cannot read the value '' for the property 'dateTime': the property is required."
            )
        stamp.setdefault("timeZone", "UTC")
        check_date_time_time_zone(stamp)
        dates[real] = stamp
    if dates.get("dueDateTime") is not None and dates.get("startDateTime") is None:
        # followupFlag docs: "To set the due date, you must also specify the startDateTime;
        # otherwise, you get a 400 Bad Request response." (the code and wording are ours)
        raise GraphError(
            400,
            "ErrorInvalidRequest",
            "To set the due date of a follow-up flag, specify its startDateTime too.",
        )
    return status, dates


_WINDOWS_ZONE = re.compile(r"^(?:[A-Za-z0-9 .()&'+-]{1,60} Standard Time|UTC[+-]\d{2})$")


@lru_cache(maxsize=1)
def _iana_zones() -> frozenset[str]:
    import zoneinfo

    return frozenset(z.lower() for z in zoneinfo.available_timezones())


def check_date_time_time_zone(stamp: Mapping[str, str]) -> None:
    """A ``dateTimeTimeZone`` Exchange can store: an ISO 8601 local date-time and a Windows
    or IANA time zone name. Bad values answer what Outlook answers for events' times
    (``UnableToDeserializePostBody``, ``TimeZoneNotSupportedException``; reported, not
    verified for follow-up flags)."""
    text = stamp["dateTime"].strip()
    try:
        datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", text))
    except ValueError:
        raise GraphError(
            400, "UnableToDeserializePostBody", "were unable to deserialize "
        ) from None
    zone = stamp["timeZone"].strip()
    if not (
        zone.lower() in ("utc", "gmt", "etc/gmt")
        or _WINDOWS_ZONE.match(zone)
        or zone.lower() in _iana_zones()
    ):
        raise GraphError(
            400,
            "TimeZoneNotSupportedException",
            "A valid TimeZone value must be specified. The following TimeZone value is not "
            f"supported: '{zone}'.",
        )


def action_parameters(
    body: Mapping[str, Any], allowed: Iterable[str], action: str
) -> dict[str, Any]:
    """Action parameters by lower-cased name; unknown ones answer Graph's 400."""
    names = {a.lower() for a in allowed}
    out: dict[str, Any] = {}
    for key, value in body.items():
        if key.startswith("@odata."):
            continue
        low = key.lower()
        if low not in names:
            raise body_read_error(
                f"The parameter '{key}' in the request payload is not a valid parameter for "
                f"the operation '{action}'."
            )
        out[low] = value
    return out


# ------------------------------------------------------------------------------- helpers

_ID_SHAPE = re.compile(r"[A-Za-z0-9+/_=-]{20,}")


def looks_like_id(key: str) -> bool:
    """Whether ``key`` could be an Exchange item/folder id (base64, at least 20 characters).

    Exchange decodes ids before looking them up: something that cannot be one (spaces,
    punctuation, a few characters) answers 400 ``ErrorInvalidIdMalformed``; a well-formed id
    that names nothing answers 404 ``ErrorItemNotFound``.
    """
    return _ID_SHAPE.fullmatch(key) is not None


def query_filter(ctx: Ctx, entity: EntityInfo) -> Filter | None:
    """The request's ``$filter`` parsed for ``entity`` within the configured limits, or None."""
    raw = ctx.req.query.get("$filter")
    if raw is None or not raw.strip():
        return None
    config = ctx.state.config
    return parse_filter(
        raw, entity, max_depth=config.filter_max_depth, max_terms=config.filter_max_terms
    )


def context_url(ctx: Ctx, tail: str) -> str:
    """``@odata.context`` for a resource below the mailbox, e.g. ``messages/$entity``."""
    return ctx.link(f"/$metadata#users('{quote(ctx.mailbox_user.id)}')/{tail}")


def select_suffix(query: Mapping[str, str], fields: Iterable[str] | None) -> str:
    """``(subject,from)`` appended to a context URL when ``$select`` was given."""
    if fields is None or "$select" not in query:
        return ""
    named = {p.strip().lower() for p in query["$select"].split(",")}
    return "(" + ",".join(f for f in fields if f != "id" or "id" in named) + ")"


def page_offset(query: Mapping[str, str]) -> int:
    token = query.get("$skiptoken")
    if token is None:
        return parse_skip(query)
    data = decode_token(token)
    offset = data.get("o") if data else None
    if not isinstance(offset, int) or offset < 0:
        raise GraphError(
            400, "ErrorInvalidUrlQuery", "The value of the '$skiptoken' query parameter is invalid."
        )
    return offset


def page_size(ctx: Ctx, default: int) -> tuple[int, dict[str, str]]:
    """(page size, Preference-Applied headers) from ``$top`` or ``Prefer: odata.maxpagesize``."""
    maximum = ctx.state.config.max_page_size
    top = parse_top(ctx.req.query, maximum=maximum)
    if top is not None:
        return top, {}
    preferred = ctx.req.max_page_size()
    if preferred is not None:
        size = min(preferred, maximum)
        return size, {"Preference-Applied": f"odata.maxpagesize={size}"}
    return default, {}


def collection_response(
    ctx: Ctx,
    items: Sequence[T],
    render: Callable[[T], dict[str, Any]],
    *,
    context: str,
    default_size: int,
    headers: Mapping[str, str] | None = None,
) -> GraphResponse:
    """One page of a collection with ``@odata.nextLink`` (opaque ``$skiptoken``) when more."""
    size, applied = page_size(ctx, default_size)
    offset = page_offset(ctx.req.query)
    page = items[offset : offset + size]
    body: dict[str, Any] = {"@odata.context": context}
    if ctx.req.query.get("$count", "").lower() == "true":
        body["@odata.count"] = len(items)
    if offset + size < len(items):
        kept = [(k, v) for k, v in ctx.req.query.items() if k not in ("$skip", "$skiptoken")]
        kept.append(("$skiptoken", encode_token({"o": offset + size})))
        path = "/" + "/".join(s for s in ctx.req.path.split("?", 1)[0].split("/") if s)
        body["@odata.nextLink"] = ctx.link(f"{path}?{urlencode(kept, quote_via=quote, safe=_SAFE)}")
    body["value"] = [render(item) for item in page]
    out_headers = dict(headers or {})
    if applied:
        merged = ", ".join(
            v for v in (out_headers.get("Preference-Applied"), applied["Preference-Applied"]) if v
        )
        out_headers["Preference-Applied"] = merged
    return GraphResponse(200, body, out_headers)


_SAFE = "$'(),:/"
