"""Replies and new mail: ``reply``, ``replyAll``, ``createReply``, ``createReplyAll``,
``sendMail``.

``POST /messages/{id}/reply`` and ``/replyAll`` (Mail.Send) take ``Comment`` and/or ``Message``
(both optional, the body too; parameter names in any case, as for forward; either a comment or
``Message.body``, not both: 400 ``ErrorInvalidRequest``) and answer 202: an ``RE: `` message
with the comment above Outlook's header block and the original is saved in Sent Items and
delivered. ``reply`` goes to the original's ``replyTo`` (else its sender); ``replyAll`` also to
its other ``toRecipients`` (To) and ``ccRecipients`` (Cc), leaving out the mailbox itself.
``Message.toRecipients`` / ``ccRecipients`` / ``bccRecipients`` replace the computed lists.
``createReply`` and ``createReplyAll`` (Mail.ReadWrite) make the same message as a draft in
Drafts (201, body optional); ``send`` then sends it. A reply keeps the conversation
(``conversationId``) and is recorded in ``store.outbound`` as ``kind="reply"``.

``POST /me/sendMail`` / ``/users/{id}/sendMail`` (Mail.Send) ``{"message": {...},
"saveToSentItems"?: true}`` -> 202: the message (recipients required: 400
``ErrorInvalidRecipients``; ``attachments`` may hold file and item attachments, each within
``config.attachment_max_bytes``) is delivered and, unless ``saveToSentItems`` is false, saved
in Sent Items. The MIME form (``Content-Type: text/plain``, base64 MIME) is not emulated.
"""

from __future__ import annotations

from typing import Any

from m365sim.errors import GraphError
from m365sim.graph.dispatch import Ctx, GraphResponse, route
from m365sim.graph.folders import find_folder
from m365sim.graph.messages import (
    _deliver,
    _forward_body,
    _me,
    _no_recipients,
    _routes,
    _sent_folder,
    apply_changes,
    build_message,
    find_message,
    message_response,
    read_message_changes,
)
from m365sim.graph.serialize import action_parameters, body_read_error, read_bool, read_string
from m365sim.store import Folder, Message, Recipient


def _request(ctx: Ctx, action: str) -> tuple[str | None, dict[str, Any]]:
    # Both parameters are optional, so is the body (a reply needs no recipients from it).
    body = ctx.json() if ctx.req.body.strip() else {}
    params = action_parameters(body, ["Comment", "Message"], action)
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
    if comment and "body" in changes:
        raise GraphError(
            400,
            "ErrorInvalidRequest",
            "Either the Comment parameter or the Message.Body property can be specified, not both.",
        )
    return comment, changes


def _unique(recipients: list[Recipient], leave_out: set[str]) -> list[Recipient]:
    seen = set(leave_out)
    out: list[Recipient] = []
    for recipient in recipients:
        key = recipient.address.lower()
        if key not in seen:
            seen.add(key)
            out.append(recipient)
    return out


def _recipients(
    ctx: Ctx, source: Message, *, reply_all: bool
) -> tuple[list[Recipient], list[Recipient]]:
    me = ctx.mailbox_user.user_principal_name.lower()
    author = source.reply_to or [r for r in (source.from_ or source.sender,) if r is not None]
    if all(r.address.lower() == me for r in author) and source.to:
        author = list(source.to)  # answering one's own sent mail goes to its recipients
    to = list(author)
    cc: list[Recipient] = []
    if reply_all:
        to += source.to
        cc = list(source.cc)
    to = _unique(to, {me} if any(r.address.lower() != me for r in to) else set())
    cc = _unique(cc, {me} | {r.address.lower() for r in to})
    return to, cc


def _build_reply(
    ctx: Ctx, source: Message, folder: Folder, *, reply_all: bool, action: str, draft: bool
) -> Message:
    comment, changes = _request(ctx, action)
    to, cc = _recipients(ctx, source, reply_all=reply_all)
    to = changes.pop("toRecipients", None) or to
    cc = changes.pop("ccRecipients", None) or cc
    if not to and not cc and not draft:
        raise _no_recipients()
    user = ctx.mailbox_user
    body_type, content = _forward_body(source, changes.pop("body", None), comment)
    subject = changes.pop("subject", None) or f"RE: {source.subject}"
    msg = ctx.state.store.new_message(
        user.mailbox,
        folder,
        subject=subject,
        body=content,
        body_type="html" if body_type == "html" else "text",
        sender=_me(user),
        to=to,
        cc=cc,
        conversation_id=source.conversation_id,
    )
    msg.reply_of = source.immutable_id
    msg.is_read = True
    apply_changes(msg, changes)
    return msg


def _send_reply(ctx: Ctx, *, reply_all: bool, action: str) -> GraphResponse:
    source = find_message(ctx)
    mailbox = ctx.mailbox_user.mailbox
    sent = _build_reply(
        ctx, source, _sent_folder(mailbox), reply_all=reply_all, action=action, draft=False
    )
    sent.sent = sent.received = ctx.state.clock.now()
    ctx.state.store.insert_message(ctx.tenant, mailbox, sent)
    _deliver(ctx, sent, kind="reply", comment=None)
    return GraphResponse(202)


def _create_reply(ctx: Ctx, *, reply_all: bool, action: str) -> GraphResponse:
    source = find_message(ctx)
    mailbox = ctx.mailbox_user.mailbox
    draft = _build_reply(
        ctx, source, find_folder(mailbox, "drafts"), reply_all=reply_all, action=action, draft=True
    )
    draft.is_draft = True
    ctx.state.store.insert_message(ctx.tenant, mailbox, draft)
    return message_response(ctx, draft, status=201)


@_routes("POST", "/reply", "send")
def reply(ctx: Ctx) -> GraphResponse:
    return _send_reply(ctx, reply_all=False, action="reply")


@_routes("POST", "/replyAll", "send")
def reply_all(ctx: Ctx) -> GraphResponse:
    return _send_reply(ctx, reply_all=True, action="replyAll")


@_routes("POST", "/createReply", "write")
def create_reply(ctx: Ctx) -> GraphResponse:
    return _create_reply(ctx, reply_all=False, action="createReply")


@_routes("POST", "/createReplyAll", "write")
def create_reply_all(ctx: Ctx) -> GraphResponse:
    return _create_reply(ctx, reply_all=True, action="createReplyAll")


@route("POST", "/sendMail", mailbox=True, op="send")
def send_mail(ctx: Ctx) -> GraphResponse:
    params = action_parameters(ctx.json(), ["Message", "SaveToSentItems"], "sendMail")
    message = params.get("message")
    if message is None:
        raise GraphError(
            400, "ErrorInvalidRequest", "The 'Message' parameter of sendMail is required."
        )
    if not isinstance(message, dict):
        raise body_read_error(
            "An unexpected 'PrimitiveValue' node was found when reading from the JSON reader. "
            "A 'StartObject' node was expected."
        )
    save = params.get("savetosentitems")
    save_copy = True if save is None else read_bool(save)
    mailbox = ctx.mailbox_user.mailbox
    msg = build_message(ctx, message, _sent_folder(mailbox))
    if not (msg.to or msg.cc or msg.bcc):
        raise _no_recipients()
    user = ctx.mailbox_user
    msg.is_draft = False
    msg.sent = msg.received = ctx.state.clock.now()
    msg.from_ = msg.from_ or _me(user)
    msg.sender = msg.sender or _me(user)
    if save_copy:
        ctx.state.store.insert_message(ctx.tenant, mailbox, msg)
    _deliver(ctx, msg, kind="send", comment=None)
    return GraphResponse(202)
