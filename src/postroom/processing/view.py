"""The message as the decision sees it: in memory only, never persisted (invariant 2).

The one message view: rules read it (:mod:`.rules`), the classifier reads its subject, sender,
body and conversation id (:mod:`postroom.classify.features`), and a pasted example becomes one
with only a body (:func:`postroom.classify.features.text_view`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Address:
    name: str
    address: str


@dataclass(frozen=True)
class MessageView:
    id: str = ""  # immutable Graph id ("" for a pasted example, which is no message)
    internet_message_id: str = ""
    subject: str = ""
    sender: Address | None = None
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    body_text: str = ""
    has_attachments: bool = False
    importance: str = "normal"  # low | normal | high
    received: datetime | None = None
    categories: tuple[str, ...] = ()  # the message's categories now (the user's own included)
    folder_id: str | None = None
    conversation_id: str = ""  # Graph's conversationId (an opaque id)
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
