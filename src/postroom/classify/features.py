"""From a message view to numbers: hashed sparse features that keep no text.

A :class:`~postroom.processing.view.MessageView` is what the processing pipeline holds in
memory while it decides about one email; the classifier reads its subject, sender, plain-text
body and conversation id. It is never persisted. Everything the
classifier keeps is produced here, and is numbers only:

* **word features** — lower-cased word 1- and 2-grams of ``subject``, sender and body,
  hashed (MurmurHash3, as :class:`~sklearn.feature_extraction.text.HashingVectorizer` does) into
  :data:`WORD_BUCKETS` buckets. No vocabulary is built, so no word is stored anywhere.
* **character features** — character 3–5-grams inside word boundaries of the subject, sender
  and the beginning of the body, hashed into :data:`CHAR_BUCKETS` more buckets. They make the
  features robust to Dutch compounds, inflections, typos and order numbers, and need no
  language-specific tokenizer, so English, Dutch and mixed mailboxes work the same way.
* **conversation feature** — one hashed token for the message's conversation
  (:func:`conversation_key`: Graph's ``conversationId`` when the pipeline has it, otherwise
  the subject without ``Re:``/``Fwd:``/``Antw:``/``Doorst:`` prefixes), in
  :data:`CONVERSATION_BUCKETS` more buckets. Replies then lean towards where earlier mail of
  their conversation went, which the model learns like any other feature.

Counts are damped (``log1p``) but not yet weighted: inverse document frequencies depend on
the examples a model was trained on, so :mod:`postroom.classify.model` applies them.

Invariant: a :class:`HashedFeatures` holds bucket numbers and damped counts, never a string.
Hashing is one-way but not secret: someone holding the features and guessing a word can test
whether it occurred. That is the accepted trade-off of the "store numbers, not text" rule.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import sparse  # type: ignore[import-untyped]
from sklearn.feature_extraction.text import HashingVectorizer  # type: ignore[import-untyped]

from postroom.processing.view import MessageView

Float32Array = npt.NDArray[np.float32]

WORD_BUCKETS = 2**18
"""Buckets for word 1–2-grams: feature ids ``[0, WORD_BUCKETS)``."""

CHAR_BUCKETS = 2**18
"""Buckets for character n-grams: feature ids ``[WORD_BUCKETS, SPARSE_DIMENSION)``."""

CONVERSATION_BUCKETS = 2**16
"""Buckets for the conversation token: ids ``[WORD_BUCKETS + CHAR_BUCKETS, SPARSE_DIMENSION)``."""

CONVERSATION_OFFSET = WORD_BUCKETS + CHAR_BUCKETS
SPARSE_DIMENSION = CONVERSATION_OFFSET + CONVERSATION_BUCKETS

MAX_BODY_CHARS = 20_000
"""Body text beyond this is ignored: long quoted threads add time, not signal."""

MAX_CHAR_NGRAM_CHARS = 3_000
"""Character n-grams are taken from this many leading characters only (they cost ~1 µs each)."""


def sender_text(view: MessageView) -> str:
    """The sender's name and address, as the features read them."""
    sender = view.sender
    return f"{sender.name} {sender.address}".strip() if sender else ""


def short_text(view: MessageView, max_words: int) -> str:
    """Subject and the first ``max_words`` words of the body, for a costly embedding."""
    words = view.body_text[: max_words * 12].split()[:max_words]
    return f"{view.subject}\n{' '.join(words)}".strip()


def long_text(view: MessageView) -> str:
    """Subject, sender and the body (up to :data:`MAX_BODY_CHARS`): what the words come from."""
    return f"{view.subject}\n{sender_text(view)}\n{view.body_text[:MAX_BODY_CHARS]}"


def text_view(text: str) -> MessageView:
    """A pasted example as a view: all of it is read as body text (subject and body weigh the
    same in the features)."""
    return MessageView(body_text=text)


@dataclass(frozen=True, slots=True, eq=False)
class HashedFeatures:
    """Damped counts of hashed n-grams of one message: sorted bucket ids and values."""

    indices: npt.NDArray[np.int32]
    values: npt.NDArray[np.float32]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HashedFeatures):
            return NotImplemented
        return bool(
            np.array_equal(self.indices, other.indices)
            and np.array_equal(self.values, other.values)
        )

    __hash__ = None  # type: ignore[assignment]


def _tokens(tokens: list[str]) -> list[str]:
    return tokens


_REPLY_PREFIX = re.compile(
    r"^(?:(?:re|fw|fwd|aw|wg|antw|antwoord|doorst|tr|sv|vs)\s*(?:\[\d+\])?\s*:\s*)+",
    re.IGNORECASE,
)


def conversation_key(view: MessageView) -> str:
    """What ties a message to its conversation: the conversation id, else the normalized
    subject (reply/forward prefixes in English, Dutch, German, French and Nordic mail removed,
    case and spacing folded); ``""`` when there is neither."""
    if view.conversation_id:
        return f"id:{view.conversation_id}"
    subject = _REPLY_PREFIX.sub("", view.subject.strip())
    subject = " ".join(subject.casefold().split())
    return f"subject:{subject}" if subject else ""


_WORDS = HashingVectorizer(
    ngram_range=(1, 2),
    n_features=WORD_BUCKETS,
    alternate_sign=False,
    norm=None,
    dtype=np.float32,
)
_CHARS = HashingVectorizer(
    analyzer="char_wb",
    ngram_range=(3, 5),
    n_features=CHAR_BUCKETS,
    alternate_sign=False,
    norm=None,
    dtype=np.float32,
)

_CONVERSATIONS = HashingVectorizer(
    analyzer=_tokens,
    n_features=CONVERSATION_BUCKETS,
    alternate_sign=False,
    norm=None,
    dtype=np.float32,
)


def hash_messages(views: Sequence[MessageView]) -> list[HashedFeatures]:
    """Hash many messages at once (vectorized; same result as one by one)."""
    if not views:
        return []
    words = _WORDS.transform([long_text(view) for view in views])
    chars = _CHARS.transform(
        [
            f"{view.subject}\n{sender_text(view)}\n{view.body_text}"[:MAX_CHAR_NGRAM_CHARS]
            for view in views
        ]
    )
    keys = [conversation_key(view) for view in views]
    conversations = _CONVERSATIONS.transform([[key] if key else [] for key in keys])
    matrix = sparse.hstack([words, chars, conversations], format="csr", dtype=np.float32)
    matrix.sort_indices()
    np.log1p(matrix.data, out=matrix.data)
    out: list[HashedFeatures] = []
    for row in range(matrix.shape[0]):
        start, end = matrix.indptr[row], matrix.indptr[row + 1]
        out.append(
            HashedFeatures(
                indices=matrix.indices[start:end].astype(np.int32, copy=True),
                values=matrix.data[start:end].astype(np.float32, copy=True),
            )
        )
    return out


def hash_message(view: MessageView) -> HashedFeatures:
    """Hash one message into :class:`HashedFeatures`."""
    return hash_messages([view])[0]


def stack(features: Sequence[HashedFeatures]) -> sparse.csr_matrix:
    """Rows of hashed features as one CSR matrix of width :data:`SPARSE_DIMENSION`."""
    indptr = np.zeros(len(features) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(f.indices) for f in features])
    if features:
        indices = np.concatenate([f.indices for f in features])
        data = np.concatenate([f.values for f in features])
    else:
        indices = np.zeros(0, dtype=np.int32)
        data = np.zeros(0, dtype=np.float32)
    return sparse.csr_matrix((data, indices, indptr), shape=(len(features), SPARSE_DIMENSION))
