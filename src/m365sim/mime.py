"""RFC 822 / MIME bytes -> the fields of a stored message, as Exchange Online delivers them.

Mail arrives in Exchange as MIME; Graph then shows it as a ``message`` (graph.md 3.2): decoded
``subject``, ``from``/``sender``, recipient lists of ``{name, address}``, ``internetMessageId``,
one ``body`` (HTML when the mail has an HTML part, else text), ``attachments`` (inline images
carry a ``contentId``), ``importance`` and ``internetMessageHeaders``. :func:`parse_rfc822` does
that conversion for the control API's deliver endpoint and for scenario files.

Parsing uses the standard library's ``email`` package with ``policy.default`` and is tolerant
the way a mail server has to be: 8-bit bytes without a declared charset, a wrong or unknown
charset, RFC 2047 encoded words in names and subjects, RFC 2231 file names, bad dates,
addresses that are not addresses, nested multiparts and attached messages are all stored as
well as they can be read. Text is decoded by trying the declared charset (ISO-8859-1 read as
Windows-1252, as browsers and Outlook do), then UTF-8, then Windows-1252, then ISO-8859-1 (which
never fails); a declared single-byte charset loses to valid multi-byte UTF-8, which genuine
Latin-1 text practically never is.

What is refused (:class:`MimeError`, the control API answers with its status and message):
an empty body or one without any header field (not a mail at all), a header section over
``deliver_max_header_bytes`` (Exchange Online's 256 KB header limit), a message over
``deliver_max_bytes`` (413), and a base64 part whose length cannot be decoded. Parsing happens
completely before anything is stored, so a refused message leaves nothing behind.

Deviation (documented in docs/m365sim/control-api.md): ``receivedDateTime`` defaults to the
``Date`` header so imported mail keeps its dates; Exchange stamps the delivery time instead,
which callers get with ``received="now"``.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import mimetypes
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import errors as email_errors
from email import policy
from email.header import decode_header, make_header
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import getaddresses, parsedate_to_datetime
from typing import Literal

from m365sim import ids
from m365sim.jsonbody import has_lone_surrogate
from m365sim.store import Attachment, Recipient

# Charsets that are really Windows-1252 when mail says them (WHATWG encoding standard).
_WINDOWS_1252_ALIASES = {
    "iso-8859-1",
    "iso8859-1",
    "latin1",
    "latin-1",
    "l1",
    "us-ascii",
    "ascii",
    "windows-1252",
    "cp1252",
    "x-user-defined",
}
_MESSAGE_ID = re.compile(r"<[^<>\s]+>")


class _CachingHeaderRegistry(HeaderRegistry):
    """``policy.default``'s header registry, made affordable for a mail server.

    The stock registry builds a new header class on every header access and re-parses the
    value each time (the parser itself asks for ``Content-Type`` about ten times per part);
    that was two thirds of the cost of a delivery. Header objects are immutable strings, so
    classes are built once and parsed headers are memoised by (name, value), bounded.
    """

    MAX_CACHED = 4096

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type[BaseHeader]] = {}
        self._parsed: dict[tuple[str, str], BaseHeader] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        cls = self._classes.get(key)
        if cls is None:
            cls = super().__getitem__(name)
            self._classes[key] = cls
        return cls

    def __call__(self, name: str, value: str) -> BaseHeader:
        key = (name, value)
        header = self._parsed.get(key)
        if header is None:
            header = self[name](name, value)
            if len(self._parsed) >= self.MAX_CACHED:
                self._parsed.clear()
            self._parsed[key] = header
        return header


MIME_POLICY = policy.default.clone(header_factory=_CachingHeaderRegistry())


class MimeError(ValueError):
    """Input that cannot be delivered; ``status`` is 400 or 413."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class ParsedMail:
    subject: str
    from_: Recipient | None
    sender: Recipient | None
    to: list[Recipient]
    cc: list[Recipient]
    bcc: list[Recipient]
    reply_to: list[Recipient]
    internet_message_id: str
    conversation_id: str
    sent: datetime | None
    body: str
    body_type: Literal["text", "html"]
    importance: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)


# ---------------------------------------------------------------------------------- decoding
def decode_text(raw: bytes, declared: str | None = None) -> str:
    """Bytes of a text part or header as a mail client would show them."""
    label = (declared or "").strip().strip("\"'").lower()
    candidates: list[str] = []
    if label:
        if label in _WINDOWS_1252_ALIASES:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                pass
            else:
                if not text.isascii():
                    return text  # valid multi-byte UTF-8 mislabelled as Latin-1
            candidates.append("cp1252")
        else:
            candidates.append(label)
    candidates += ["utf-8", "cp1252"]
    for charset in candidates:
        try:
            text = raw.decode(charset)
        except (LookupError, ValueError):  # unknown label, bad bytes, NUL in the label
            continue
        if not has_lone_surrogate(text):  # utf-7, unicode_escape... can produce them
            return text
    return raw.decode("latin-1")


_RAW_BYTE = re.compile("[\udc80-\udcff]")


def _has_raw_bytes(value: str) -> bool:
    return value.isascii() is False and _RAW_BYTE.search(value) is not None


def _fix_text(value: str) -> str:
    """Undo ``surrogateescape`` (raw 8-bit bytes in headers) by decoding those bytes."""
    if not _has_raw_bytes(value):
        return value
    try:
        return decode_text(value.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:  # other surrogates too (an encoded word's odd charset)
        return scrub(value)


def scrub(text: str) -> str:
    """``text`` with every lone UTF-16 surrogate replaced by U+FFFD: what is stored must be
    encodable as UTF-8, or every later response that shows it fails."""
    if not has_lone_surrogate(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _scrub_recipient(recipient: Recipient | None) -> Recipient | None:
    if recipient is None:
        return None
    return Recipient(scrub(recipient.name), scrub(recipient.address))


def _scrubbed(mail: ParsedMail) -> ParsedMail:
    """Every string of a parsed mail, safe to store (see :func:`scrub`)."""

    def people(items: list[Recipient]) -> list[Recipient]:
        return [r for r in map(_scrub_recipient, items) if r is not None]

    for attachment in mail.attachments:
        attachment.name = scrub(attachment.name)
        attachment.content_type = scrub(attachment.content_type)
        attachment.content_id = scrub(attachment.content_id) if attachment.content_id else None
    return dataclasses.replace(
        mail,
        subject=scrub(mail.subject),
        from_=_scrub_recipient(mail.from_),
        sender=_scrub_recipient(mail.sender),
        to=people(mail.to),
        cc=people(mail.cc),
        bcc=people(mail.bcc),
        reply_to=people(mail.reply_to),
        internet_message_id=scrub(mail.internet_message_id),
        body=scrub(mail.body),
        headers=[(scrub(k), scrub(v)) for k, v in mail.headers],
    )


def _unfold(value: str) -> str:
    return re.sub(r"\r?\n[ \t]*", " ", value).strip()


def _raw_headers(msg: Message) -> list[tuple[str, str]]:
    items: list[tuple[str, str]] = []
    for name, value in msg.raw_items():
        items.append((_fix_text(str(name)), _fix_text(_unfold(str(value)))))
    return items


def _decode_words(raw: str) -> str:
    """RFC 2047 decoding of a raw header value, tolerating broken encoded words."""
    if _has_raw_bytes(raw):
        return _fix_text(raw)
    try:
        return _fix_text(str(make_header(decode_header(raw))))
    except (email_errors.HeaderParseError, LookupError, UnicodeError, ValueError):
        return _fix_text(raw)


def _header(msg: Message, raw: dict[str, str], name: str) -> str | None:
    """A header's decoded value (without lone surrogates, see :func:`scrub`)."""
    value = _header_text(msg, raw, name)
    return scrub(value) if value is not None else None


def _header_text(msg: Message, raw: dict[str, str], name: str) -> str | None:
    """A header's decoded value, falling back to our own decoding if the parser trips."""
    key = name.lower()
    if key not in raw:
        return None
    if _has_raw_bytes(raw[key]):
        # The header registry turns undeclared 8-bit bytes into U+FFFD; decode them instead.
        return _decode_words(_unfold(raw[key]))
    try:
        value = msg.get(name)
        text = str(value) if value is not None else None
    except Exception:  # the header registry can raise on pathological input
        text = None
    if text is None:
        return _decode_words(raw[key])
    return _fix_text(_unfold(text))


def _recipients(msg: Message, raw: dict[str, str], name: str) -> list[Recipient]:
    key = name.lower()
    if key not in raw:
        return []
    pairs: list[tuple[str, str]] = []
    try:
        if _has_raw_bytes(raw[key]):
            raise ValueError("undeclared 8-bit bytes")
        header = msg.get(name)
        addresses = getattr(header, "addresses", None)
        if addresses is None:
            raise ValueError("not an address header")
        for addr in addresses:
            pairs.append((str(addr.display_name or ""), str(addr.addr_spec or "")))
    except Exception:
        pairs = getaddresses([_decode_words(raw[key])])
    out: list[Recipient] = []
    for display, address in pairs:
        display = _fix_text(display).strip().strip('"').strip()
        address = _fix_text(address).strip().strip("<>").strip()
        if address in ("", "<>") and not display:
            continue
        out.append(Recipient(name=display or address, address=address))
    return out


def _date(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        parsed = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        result = parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        return None
    if result.year < 1601:  # before Windows FILETIME, which Exchange cannot store
        return None
    return result


def _importance(msg: Message, raw: dict[str, str]) -> str:
    value = (_header(msg, raw, "Importance") or "").strip().lower()
    if value in ("high", "low", "normal"):
        return value
    priority = (_header(msg, raw, "X-Priority") or "").strip()
    if priority[:1] in ("1", "2"):
        return "high"
    if priority[:1] in ("4", "5"):
        return "low"
    ms = (_header(msg, raw, "X-MSMail-Priority") or "").strip().lower()
    if ms in ("high", "low"):
        return ms
    return "normal"


def _message_ids(text: str | None) -> list[str]:
    return _MESSAGE_ID.findall(text or "")


def conversation_id_for(root_message_id: str) -> str:
    """A stable conversationId for a thread, derived from the thread's first Message-ID."""
    digest = hashlib.sha256(root_message_id.strip().lower().encode()).digest()
    return base64.urlsafe_b64encode(b"\x00\x10\x00" + digest[:30]).decode().rstrip("=") + "="


# ---------------------------------------------------------------------------------- parts
@dataclass
class _Walk:
    html: str | None = None
    text: str | None = None
    attachments: list[Attachment] = field(default_factory=list)


def _payload(part: Message, label: str) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except Exception as exc:
        raise MimeError(400, f"{label} could not be decoded: {exc}") from exc
    if any(isinstance(d, email_errors.InvalidBase64LengthDefect) for d in part.defects):
        raise MimeError(
            400,
            f"{label} is declared base64 but its content is not valid base64 "
            "(the number of data characters cannot be decoded)",
        )
    if isinstance(data, bytes):
        return data
    if data is None:
        return b""
    return str(data).encode("utf-8", "surrogateescape")


def _filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except Exception:
        name = None
    if name is None:
        raw = part.get_param("name", header="content-type")
        if isinstance(raw, str):
            name = raw
        elif isinstance(raw, tuple):
            name = str(raw[2])
    if not name:
        return None
    name = _fix_text(str(name))
    if "=?" in name:
        name = _decode_words(name)
    return name.strip() or None


def _content_id(part: Message) -> str | None:
    raw = part.get("Content-ID")
    if raw is None:
        return None
    value = _fix_text(str(raw)).strip().strip("<>").strip()
    return value or None


def _add_attachment(walk: _Walk, part: Message, content: bytes, *, inline: bool) -> None:
    ctype = part.get_content_type()
    name = _filename(part)
    if not name:
        if ctype == "message/rfc822":
            inner = part.get_payload(0) if part.is_multipart() else None
            subject = ""
            if isinstance(inner, Message):
                try:
                    subject = _fix_text(str(inner.get("Subject") or ""))
                except Exception:
                    subject = ""
            name = (subject or "Attached message") + ".eml"
        else:
            ext = mimetypes.guess_extension(ctype) or ".dat"
            if ext == ".htm":
                ext = ".html"
            name = f"ATT{len(walk.attachments) + 1:05d}{ext}"
    walk.attachments.append(
        Attachment(
            id=ids.rest_message_id(),
            name=name,
            content_type=ctype,
            content=content,
            is_inline=inline,
            content_id=_content_id(part) if inline else None,
        )
    )


def _visit(part: Message, walk: _Walk, *, top: bool, in_related: bool) -> None:
    ctype = part.get_content_type()
    if ctype == "message/rfc822" and not top:
        inner = part.get_payload(0) if part.is_multipart() else None
        if isinstance(inner, Message):
            try:
                content = inner.as_bytes(policy=policy.SMTP)
            except Exception:
                content = str(inner).encode("utf-8", "surrogateescape")
        else:
            content = _payload(part, "an attached message")
        _add_attachment(walk, part, content, inline=False)
        return
    if part.is_multipart():
        children = part.get_payload()
        if isinstance(children, list):
            related = ctype == "multipart/related"
            for child in children:
                if isinstance(child, Message):
                    _visit(child, walk, top=False, in_related=related or in_related)
        return
    try:
        disposition = part.get_content_disposition()
    except Exception:
        disposition = None
    name = _filename(part)
    label = f"attachment '{name}'" if name else f"the {ctype} part"
    content = _payload(part, label)
    is_body_type = ctype in ("text/html", "text/plain")
    if is_body_type and disposition != "attachment" and name is None:
        charset = part.get_content_charset()
        if ctype == "text/html" and walk.html is None:
            walk.html = decode_text(content, charset)
            return
        if ctype == "text/plain" and walk.text is None:
            walk.text = decode_text(content, charset)
            return
    inline = disposition == "inline" or (
        disposition is None and in_related and _content_id(part) is not None
    )
    if is_body_type and name is None:
        inline = False  # extra text parts show as ATT00001.txt, as Outlook does
    _add_attachment(walk, part, content, inline=inline and not is_body_type)


# ---------------------------------------------------------------------------------- entry
def _header_section_size(data: bytes) -> int:
    ends = [i for i in (data.find(b"\r\n\r\n"), data.find(b"\n\n")) if i >= 0]
    return min(ends) if ends else len(data)


def parse_rfc822(data: bytes, *, max_bytes: int, max_header_bytes: int) -> ParsedMail:
    """Parse one message; raise :class:`MimeError` for input Exchange would not accept.

    Whatever the bytes, nothing else escapes: a failure the tolerant readers above did not
    foresee is a 400 naming the exception, never a 500."""
    try:
        return _parse_rfc822(data, max_bytes=max_bytes, max_header_bytes=max_header_bytes)
    except MimeError:
        raise
    except Exception as exc:
        raise MimeError(
            400, f"the message could not be read ({type(exc).__name__}); it is not valid MIME"
        ) from exc


def _parse_rfc822(data: bytes, *, max_bytes: int, max_header_bytes: int) -> ParsedMail:
    if len(data) > max_bytes:
        raise MimeError(
            413,
            f"message is {len(data)} bytes; the maximum message size is {max_bytes} bytes "
            "(deliver_max_bytes)",
        )
    if not data.strip():
        raise MimeError(
            400, "empty message: expected an RFC 822 message (headers, blank line, body)"
        )
    if data.startswith(b"From "):  # an mbox separator line, not a header
        newline = data.find(b"\n")
        data = data[newline + 1 :] if newline >= 0 else b""
    header_size = _header_section_size(data)
    if header_size > max_header_bytes:
        raise MimeError(
            400,
            f"the header section is {header_size} bytes; the limit is {max_header_bytes} bytes "
            "(deliver_max_header_bytes)",
        )
    try:
        msg = BytesParser(policy=MIME_POLICY).parsebytes(data)
    except Exception as exc:  # the parser is lenient; this is a last resort
        raise MimeError(400, f"the message could not be parsed: {exc}") from exc
    assert isinstance(msg, EmailMessage)
    headers = _raw_headers(msg)
    if not headers:
        raise MimeError(
            400,
            "no header fields found: the body does not look like an RFC 822 message "
            "(it must start with header lines such as 'From:' and 'Subject:')",
        )
    raw: dict[str, str] = {}
    for name, value in msg.raw_items():
        raw.setdefault(str(name).lower(), str(value))

    walk = _Walk()
    _visit(msg, walk, top=True, in_related=False)

    from_list = _recipients(msg, raw, "From")
    sender_list = _recipients(msg, raw, "Sender")
    from_ = from_list[0] if from_list else None
    sender = sender_list[0] if sender_list else from_

    own_ids = _message_ids(_header(msg, raw, "Message-ID"))
    if own_ids:
        message_id = own_ids[0]
    else:
        bare = (_header(msg, raw, "Message-ID") or "").strip()
        message_id = (
            f"<{bare}>" if bare and " " not in bare else f"<{ids.opaque(12)}@m365sim.local>"
        )
    thread = _message_ids(_header(msg, raw, "References")) or _message_ids(
        _header(msg, raw, "In-Reply-To")
    )
    root = thread[0] if thread else message_id

    if walk.html is not None:
        body, body_type = walk.html, "html"
    else:
        body, body_type = walk.text or "", "text"
    body_kind: Literal["text", "html"] = "html" if body_type == "html" else "text"

    return _scrubbed(
        ParsedMail(
            subject=_header(msg, raw, "Subject") or "",
            from_=from_,
            sender=sender,
            to=_recipients(msg, raw, "To"),
            cc=_recipients(msg, raw, "Cc"),
            bcc=_recipients(msg, raw, "Bcc"),
            reply_to=_recipients(msg, raw, "Reply-To"),
            internet_message_id=message_id,
            conversation_id=conversation_id_for(root),
            sent=_date(raw.get("date") and _unfold(_fix_text(raw["date"]))),
            body=body,
            body_type=body_kind,
            importance=_importance(msg, raw),
            headers=headers,
            attachments=walk.attachments,
        )
    )
