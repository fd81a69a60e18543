"""A stored message -> RFC 822 bytes: what ``GET /messages/{id}/$value`` returns.

Exchange keeps a message as properties and writes MIME from them on request; so does this
module. The header section carries the message's transport headers as they were delivered
(``Received``, ``X-...``, ``Authentication-Results`` ...), then the addressing headers written
from the current properties (``From``, ``Sender``, ``To``, ``Cc``, ``Bcc`` for drafts only,
``Reply-To``, ``Subject``, ``Date``, ``Message-ID``), then the MIME structure: the body
(``text/html`` as the whole document Graph's JSON shows, or ``text/plain``; UTF-8,
quoted-printable) and every attachment (file attachments base64 with their names, inline
images with their ``Content-ID``, attached messages as ``message/rfc822``). Non-ASCII names
and subjects are RFC 2047 encoded; a value containing line breaks is unfolded, so nothing
stored can inject a header.

:func:`message_to_mime` never raises for stored content: an attachment whose content type is
not a valid MIME type is written as ``application/octet-stream``, an attached message that
cannot be parsed as one is attached as a file.
"""

from __future__ import annotations

import email.utils
import re
from email import policy
from email.header import Header
from email.message import EmailMessage
from email.parser import BytesParser

from m365sim.graph.serialize import html_document
from m365sim.store import Attachment, Message, Recipient

_GENERATED = {
    "from",
    "sender",
    "to",
    "cc",
    "bcc",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "content-disposition",
    "content-id",
}
_HEADER_NAME = re.compile(r"^[!-9;-~]{1,76}$")
_TOKEN = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}"
_MIME_TYPE = re.compile(f"^{_TOKEN}/{_TOKEN}$")


def safe_content_type(value: str | None) -> str:
    """``value`` when it is a plain ``type/subtype``, else ``application/octet-stream`` (a
    stored content type is never trusted as a header value)."""
    text = (value or "").strip()
    return text if _MIME_TYPE.match(text) else "application/octet-stream"


def _one_line(value: str) -> str:
    return re.sub(r"[\r\n\x00]+\s*", " ", value).strip()


def _encoded(value: str) -> str:
    text = _one_line(value)
    if text.isascii():
        return text
    return Header(text, "utf-8", maxlinelen=998).encode()


def _address(recipient: Recipient) -> str:
    address = _one_line(recipient.address).replace("<", "").replace(">", "")
    name = _one_line(recipient.name)
    if not name or name == address:
        return f"<{address}>" if address else ""
    if name.isascii():
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{quoted}" <{address}>'
    return f"{Header(name, 'utf-8').encode()} <{address}>"


def _addresses(recipients: list[Recipient]) -> str:
    return ", ".join(a for a in (_address(r) for r in recipients) if a)


def _headers(msg: Message) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for name, value in msg.headers:
        if name.lower() in _GENERATED or not _HEADER_NAME.match(name):
            continue
        out.append((name, _encoded(value)))
    who = msg.from_ or msg.sender
    if who is not None:
        out.append(("From", _address(who)))
    if msg.sender is not None and who is not None and msg.sender.address != who.address:
        out.append(("Sender", _address(msg.sender)))
    for name, recipients in (("To", msg.to), ("Cc", msg.cc), ("Reply-To", msg.reply_to)):
        if recipients:
            out.append((name, _addresses(recipients)))
    if msg.is_draft and msg.bcc:
        out.append(("Bcc", _addresses(msg.bcc)))
    out.append(("Subject", _encoded(msg.subject)))
    out.append(("Date", email.utils.format_datetime(msg.sent)))
    out.append(("Message-ID", _one_line(msg.internet_message_id)))
    if msg.importance != "normal":
        out.append(("Importance", msg.importance))
    return out


def _attach(root: EmailMessage, attachment: Attachment) -> None:
    name = _one_line(attachment.name) or "attachment"
    ctype = attachment.content_type.strip().lower()
    if ctype == "message/rfc822":
        try:
            inner = BytesParser(policy=policy.SMTP).parsebytes(attachment.content)
            if inner.keys():
                root.add_attachment(inner, filename=name)
                return
        except Exception:  # an attached "message" that is not one: attach the bytes
            pass
        ctype = "application/octet-stream"
    if not _MIME_TYPE.match(ctype) or ctype.startswith(("multipart/", "message/")):
        ctype = "application/octet-stream"
    maintype, subtype = ctype.split("/", 1)
    root.add_attachment(
        attachment.content,
        maintype=maintype,
        subtype=subtype,
        filename=name,
        disposition="inline" if attachment.is_inline else "attachment",
        cid=f"<{_one_line(attachment.content_id)}>" if attachment.content_id else None,
    )


def message_to_mime(msg: Message) -> bytes:
    """The RFC 822 form of a stored message (CRLF line ends)."""
    root = EmailMessage(policy=policy.SMTP)
    subtype = "html" if msg.body_type == "html" else "plain"
    content = html_document(msg.body_content) if subtype == "html" else msg.body_content
    root.set_content(content, subtype=subtype, charset="utf-8", cte="quoted-printable")
    for attachment in msg.attachments:
        _attach(root, attachment)
    structure = root.as_bytes(policy=policy.SMTP)
    head = "".join(f"{name}: {value}\r\n" for name, value in _headers(msg))
    return head.encode("utf-8") + structure
