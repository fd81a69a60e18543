"""The learned classifier: categorizes an email from examples and learns from corrections.

Pure and offline (no database, HTTP or settings): the pipeline passes the one message view
(:class:`postroom.processing.view.MessageView`) in memory and gets a :class:`Prediction`
(defined beside :func:`postroom.processing.decide.decide`, the one place that says how rules,
the model and "Needs review" combine). What is kept per integration is
:meth:`Classifier.to_state` — hashed features, embedding vectors and model parameters, never
the text of an email.

Modules: ``features`` (view → hashed n-grams), ``embed`` (bundled embedding models, loaded once
per process), ``config`` (how a classifier is built), ``examples`` (a labelled message as numbers),
``head`` (the linear head: fitting, calibration, k-NN vote, open-set quantiles), ``model`` (the
cascade classifier), ``summary`` (accuracy against corrections,
confusions), ``state`` (state ⇄ bytes, no pickle), ``conversations`` (a reply follows its
conversation).
"""

from postroom.classify.config import ClassifierConfig
from postroom.classify.conversations import (
    ConversationMemory,
    Remembered,
    conversation_hash,
    from_conversation,
    merged,
)
from postroom.classify.embed import EmbedderUnavailable, load_embedder
from postroom.classify.examples import (
    Example,
    Origin,
    adapted,
    example_from_state,
    example_state,
    message_number,
)
from postroom.classify.features import (
    HashedFeatures,
    conversation_key,
    hash_message,
    text_view,
)
from postroom.classify.model import OBSERVE_MINIMUM, Classifier
from postroom.classify.state import dump_state, load_state
from postroom.classify.summary import ModelSummary, Outcome, summarize
from postroom.processing.decide import NONE_OF_THESE, Prediction

__all__ = [
    "NONE_OF_THESE",
    "OBSERVE_MINIMUM",
    "Classifier",
    "ClassifierConfig",
    "ConversationMemory",
    "EmbedderUnavailable",
    "Example",
    "HashedFeatures",
    "ModelSummary",
    "Origin",
    "Outcome",
    "Prediction",
    "Remembered",
    "adapted",
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
    "text_view",
]
