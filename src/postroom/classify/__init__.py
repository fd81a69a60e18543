"""The learned classifier: categorizes an email from examples and learns from corrections.

Pure and offline (no database, HTTP or settings): the pipeline passes a :class:`MessageView`
in memory, gets a :class:`Prediction`, and :func:`combine` turns it and any rule match into a
:class:`Decision`. What is kept per integration is :meth:`Classifier.to_state` — hashed
features, embedding vectors and model parameters, never the text of an email.

Modules: ``features`` (view → hashed n-grams), ``embed`` (bundled embedding models, loaded once
per process), ``model`` (the cascade classifier), ``decide`` (rules + model + threshold),
``summary`` (accuracy against corrections, confusions), ``state`` (state ⇄ bytes, no pickle),
``conversations`` (a reply follows its conversation).
"""

from postroom.classify.conversations import (
    ConversationMemory,
    Remembered,
    conversation_hash,
    from_conversation,
    merged,
)
from postroom.classify.decide import Decision, DecisionSource, combine
from postroom.classify.embed import EmbedderUnavailable, load_embedder
from postroom.classify.features import (
    HashedFeatures,
    MessageView,
    conversation_key,
    hash_message,
)
from postroom.classify.model import (
    NONE_OF_THESE,
    OBSERVE_MINIMUM,
    Classifier,
    ClassifierConfig,
    Example,
    Origin,
    Prediction,
    adapted,
    example_from_state,
    example_state,
    message_number,
)
from postroom.classify.state import dump_state, load_state
from postroom.classify.summary import ModelSummary, Outcome, summarize

__all__ = [
    "NONE_OF_THESE",
    "OBSERVE_MINIMUM",
    "Classifier",
    "ClassifierConfig",
    "ConversationMemory",
    "Decision",
    "DecisionSource",
    "EmbedderUnavailable",
    "Example",
    "HashedFeatures",
    "MessageView",
    "ModelSummary",
    "Origin",
    "Outcome",
    "Prediction",
    "Remembered",
    "adapted",
    "combine",
    "conversation_hash",
    "conversation_key",
    "dump_state",
    "example_from_state",
    "example_state",
    "from_conversation",
    "merged",
    "hash_message",
    "load_embedder",
    "load_state",
    "message_number",
    "summarize",
]
