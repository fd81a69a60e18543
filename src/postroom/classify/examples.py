"""Examples: a labelled message as numbers (what the classifier keeps instead of an email), their
state, and the index :meth:`~postroom.classify.model.Classifier.observe` consults."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from postroom.classify.config import ClassifierConfig
from postroom.classify.embed import (
    EMBEDDER_PARTS,
    EmbedderName,
)
from postroom.classify.features import (
    Float32Array,
    HashedFeatures,
)
from postroom.processing.decide import NONE_OF_THESE

STATE_FORMAT = 1
"""Version of the stored state (:meth:`~postroom.classify.model.Classifier.to_state`)."""
Origin = Literal["user_example", "correction", "seed", "decision"]
ORIGINS: tuple[Origin, ...] = ("user_example", "correction", "seed", "decision")
"""Append only: a stored state refers to origins by their position here."""
BY_PEOPLE: frozenset[Origin] = frozenset({"user_example", "correction"})
"""Origins of examples a person labelled (the others: seeds and the model's own decisions)."""


@dataclass(frozen=True, slots=True, eq=False)
class Example:
    """A labelled message as numbers: what the classifier keeps instead of the email."""

    category: str
    origin: Origin
    features: HashedFeatures
    fast_embedding: Float32Array | None = None
    slow_embedding: Float32Array | None = None
    key: int = 0
    """Which message it came from (a hash, see :func:`message_number`); 0 when none."""


def adapted(example: Example, config: ClassifierConfig) -> Example | None:
    """``example`` for a classifier built with ``config``: embeddings that classifier does not
    use are dropped (a correction made under the e5 cascade still teaches an n-gram model), and
    an ``e5+minilm`` vector keeps its e5 half for an ``e5`` classifier; None when it needs an
    embedding the example lacks — that would take the email's text, which is not kept."""
    fast = _reused(example.fast_embedding, config.fast_embedder)
    slow = _reused(example.slow_embedding, config.slow_embedder)
    if (config.fast_embedder is not None and fast is None) or (
        config.slow_embedder is not None and slow is None
    ):
        return None
    return replace(example, fast_embedding=fast, slow_embedding=slow)


def _reused(vector: Float32Array | None, embedder: EmbedderName | None) -> Float32Array | None:
    """The part of ``vector`` an ``embedder`` classifier can use, if any. Pair vectors start
    with their first encoder's block (``e5+minilm``: the e5 vector)."""
    if vector is None or embedder is None:
        return None
    width = sum(EMBEDDER_PARTS[embedder])
    if vector.shape[-1] == width:
        return vector
    if embedder == "e5" and vector.shape[-1] == sum(EMBEDDER_PARTS["e5+minilm"]):
        return vector[:width]
    return None


def example_state(example: Example) -> dict[str, Any]:
    """One example as arrays and numbers (for :func:`~postroom.classify.state.dump_state`);
    the category name is kept by the caller."""
    state: dict[str, Any] = {
        "format": STATE_FORMAT,
        "origin": ORIGINS.index(example.origin),
        "key": example.key,
        "indices": example.features.indices,
        "values": example.features.values,
    }
    for name in ("fast_embedding", "slow_embedding"):
        vector = getattr(example, name)
        if vector is not None:
            state[name] = vector
    return state


def example_from_state(state: Mapping[str, Any], category: str) -> Example:
    """The :class:`Example` that :func:`example_state` described."""
    if int(state["format"]) != STATE_FORMAT:
        raise ValueError(f"unsupported example format {state['format']!r}")
    fast, slow = state.get("fast_embedding"), state.get("slow_embedding")
    return Example(
        category=category,
        origin=ORIGINS[int(state["origin"])],
        features=HashedFeatures(
            np.asarray(state["indices"], np.int32), np.asarray(state["values"], np.float32)
        ),
        fast_embedding=None if fast is None else np.asarray(fast, np.float32),
        slow_embedding=None if slow is None else np.asarray(slow, np.float32),
        key=int(state["key"]),
    )


def message_number(message_key: str) -> int:
    """A positive 60-bit number from a message's hex key, to tie examples to a message."""
    return int(message_key[:15], 16) if message_key else 0


@dataclass(slots=True)
class ExampleIndex:
    """What :meth:`Classifier.observe` asks of the examples per decision, kept up to date
    instead of scanning them all (a 2,000-decision fold of a 10,000-example model made
    60 million comparisons)."""

    keys: set[int]
    by_people: Counter[str]
    decisions: int
    by_category: Counter[str] = field(default_factory=Counter)

    @classmethod
    def of(cls, examples: Iterable[Example]) -> ExampleIndex:
        index = cls(set(), Counter(), 0)
        for example in examples:
            index.add(example)
        return index

    def median_per_category(self) -> float:
        """Median number of examples of the categories ("none of these" not counted)."""
        counts = [n for category, n in self.by_category.items() if category != NONE_OF_THESE]
        return float(np.median(counts)) if counts else 0.0

    def add(self, example: Example) -> None:
        self.by_category[example.category] += 1
        if example.key:
            self.keys.add(example.key)
        if example.origin in BY_PEOPLE:
            self.by_people[example.category] += 1
        self.decisions += example.origin == "decision"
