"""Conversation memory: a reply goes where the earlier mail of its conversation went.

People file threads, not single emails. When Postroom (by rule or model) or a person has put
an email of a conversation into a category, the next email of that conversation is put there
too, unless a rule says otherwise — and a person's correction moves the whole conversation
along from then on. On 20 Newsgroups read in date order, half of the messages continue a
thread seen before, and the thread's last category is right for 98 % of them, more than the
model alone manages for any kind of message (``benchmarks/bench_classify.py``).

What is remembered is a keyed hash of :func:`~postroom.classify.features.conversation_key`
(Graph's ``conversationId``, or the normalized subject when there is none) and a category
name. The hash is keyed (HMAC-SHA256 with a secret of the deployment), so a stored key cannot
be tested against guessed subjects. Nothing of the email is kept.

:class:`ConversationMemory` is the in-process store (bounded, least recently used dropped
first) used by the benchmark and tests; the product keeps the same pairs in PostgreSQL
(:mod:`postroom.learning.service`), with the same :func:`conversation_hash`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict

from postroom.classify.features import MessageView, conversation_key
from postroom.classify.model import Prediction

CONVERSATION_CONFIDENCE = 0.95
"""Confidence given to a category taken from the conversation (measured 0.98 on 20NG)."""


def conversation_hash(view: MessageView, secret: bytes) -> bytes | None:
    """16-byte keyed hash of the message's conversation, or None when it has none."""
    key = conversation_key(view)
    if not key:
        return None
    return hmac.new(secret, key.encode("utf-8"), hashlib.sha256).digest()[:16]


def from_conversation(
    prediction: Prediction, remembered: str | None, *, known: tuple[str, ...] | None = None
) -> Prediction:
    """The model's prediction, unless the conversation already has a category.

    ``known`` are the categories that may be used (a remembered category that was deleted
    since is ignored). The model's own scores stay attached for the activity view.
    """
    if remembered is None or (known is not None and remembered not in known):
        return prediction
    return Prediction(
        category=remembered,
        confidence=max(CONVERSATION_CONFIDENCE, prediction.scores.get(remembered, 0.0)),
        scores=prediction.scores,
        stage="conversation",
    )


class ConversationMemory:
    """Last category per conversation, in memory, at most ``capacity`` conversations."""

    def __init__(self, secret: bytes = b"postroom", capacity: int = 50_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._secret = secret
        self._capacity = capacity
        self._last: OrderedDict[bytes, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._last)

    def recall(self, view: MessageView) -> str | None:
        key = conversation_hash(view, self._secret)
        if key is None or key not in self._last:
            return None
        self._last.move_to_end(key)
        return self._last[key]

    def remember(self, view: MessageView, category: str) -> None:
        key = conversation_hash(view, self._secret)
        if key is None:
            return
        self._last[key] = category
        self._last.move_to_end(key)
        while len(self._last) > self._capacity:
            self._last.popitem(last=False)
