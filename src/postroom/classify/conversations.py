"""Conversation memory: a reply goes where the earlier mail of its conversation went.

People file threads, not single emails. When a person (a correction) or a rule has put an
email of a conversation into a category, the next email of that conversation is put there too,
unless a rule says otherwise — a person's correction moves the whole conversation along from
then on. When the *model* put it there, the next email follows only if the model is unsure of
it (:data:`CONVERSATION_TRUST`): a model's mistake must not spread through a thread. On 20
Newsgroups read in date order, 60 % of the messages continue a thread seen before; where the
thread's last category is a person's, it is right for 98 % of them, more than the model alone
manages for any kind of message (``benchmarks/bench_classify.py``).

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
from dataclasses import dataclass

from postroom.classify.features import conversation_key
from postroom.processing.decide import Prediction
from postroom.processing.view import MessageView

CONVERSATION_CONFIDENCE = 0.95
"""Confidence given to a category taken from the conversation (measured 0.98 on 20NG)."""
CONVERSATION_TRUST = 0.9
"""A conversation's category that came from a *model* decision is only taken when the model is
less sure than this of the new email. Chosen on a date-ordered validation split of the 20NG
*train* set (model trained on the older 70 % of each newsgroup, the newer 30 % streamed with
nobody correcting, so the memory holds the model's own decisions): the model alone 0.902,
always following the conversation 0.903, following it below 0.8 / 0.9 / 0.95 / 0.99
confidence 0.909 each. On the test split: 0.884, 0.875 and 0.897 (at 0.9). A conversation
whose category a person set (a correction) or a rule decided is always followed."""


@dataclass(frozen=True, slots=True)
class Remembered:
    """Where a conversation's mail went last, and whether a person (correction) or a rule put
    it there rather than the model."""

    category: str
    by_person: bool = False


def conversation_hash(view: MessageView, secret: bytes) -> bytes | None:
    """16-byte keyed hash of the message's conversation, or None when it has none."""
    key = conversation_key(view)
    if not key:
        return None
    return hmac.new(secret, key.encode("utf-8"), hashlib.sha256).digest()[:16]


def from_conversation(
    prediction: Prediction, remembered: Remembered | None, *, known: tuple[str, ...] | None = None
) -> Prediction:
    """The model's prediction, unless the conversation already has a category that is to be
    followed: always when a person or a rule set it, else when the model is less sure than
    :data:`CONVERSATION_TRUST` (before the small-category shrinkage: both are its own guesses).

    ``known`` are the categories that may be used (a remembered category that was deleted
    since is ignored). The model's own scores stay attached for the activity view.
    """
    if remembered is None or (known is not None and remembered.category not in known):
        return prediction
    sure = prediction.confidence if prediction.sureness is None else prediction.sureness
    if not remembered.by_person and (
        prediction.category is not None and sure >= CONVERSATION_TRUST
    ):
        return prediction
    return Prediction(
        category=remembered.category,
        confidence=max(CONVERSATION_CONFIDENCE, prediction.scores.get(remembered.category, 0.0)),
        scores=prediction.scores,
        stage="conversation",
        fit_bar=prediction.fit_bar,
    )


def merged(previous: Remembered | None, category: str, by_person: bool) -> Remembered:
    """What to remember after a decision: a model decision that agrees with a person's keeps
    the person's mark; any other decision replaces what was there."""
    keep = previous is not None and previous.by_person and previous.category == category
    return Remembered(category, by_person or keep)


class ConversationMemory:
    """Last category per conversation, in memory, at most ``capacity`` conversations."""

    def __init__(self, secret: bytes = b"postroom", capacity: int = 50_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._secret = secret
        self._capacity = capacity
        self._last: OrderedDict[bytes, Remembered] = OrderedDict()

    def __len__(self) -> int:
        return len(self._last)

    def recall(self, view: MessageView) -> Remembered | None:
        key = conversation_hash(view, self._secret)
        if key is None or key not in self._last:
            return None
        self._last.move_to_end(key)
        return self._last[key]

    def remember(self, view: MessageView, category: str, *, by_person: bool = False) -> None:
        key = conversation_hash(view, self._secret)
        if key is None:
            return
        self._last[key] = merged(self._last.get(key), category, by_person)
        self._last.move_to_end(key)
        while len(self._last) > self._capacity:
            self._last.popitem(last=False)
