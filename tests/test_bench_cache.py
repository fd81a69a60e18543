"""The benchmarks' cache (benchmarks/cache.py): a cached vector is the encoder's own, a part is
computed once per key, and a change of the data or the code computes it again."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from benchmarks import cache


class CountingEncoder:
    """Deterministic vectors from the text, counting the texts it was asked to embed."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.asked += texts
        rows = [np.random.default_rng(sum(map(ord, t))).random(256) for t in texts]
        return np.vstack(rows).astype(np.float32)


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(cache, "CACHE_DIR", tmp_path)
    monkeypatch.setattr(cache, "ENABLED", True)
    return tmp_path


def test_embeddings_come_back_identical_and_the_encoder_is_asked_only_for_new_texts(
    cache_dir: Path,
) -> None:
    encoder = CountingEncoder()
    first = cache.CachedEmbedder("wordllama", 256, lambda: encoder)
    vectors = first.embed(["invoice due", "printer broken", "invoice due"])
    assert encoder.asked == ["invoice due", "printer broken"]
    assert np.array_equal(vectors[0], vectors[2])
    first.flush()

    again = CountingEncoder()
    second = cache.CachedEmbedder("wordllama", 256, lambda: again)
    cached = second.embed(["printer broken", "invoice due", "new text"])
    assert again.asked == ["new text"]
    assert np.array_equal(cached[0], vectors[1])
    assert np.array_equal(cached[1], vectors[0])
    assert np.array_equal(cached[2], CountingEncoder().embed(["new text"])[0])
    assert list(cache_dir.glob("embeddings/wordllama-*.npz"))


def test_a_part_runs_once_per_key_and_again_when_its_data_changes(
    cache_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data.csv"
    data.write_text("text,category\n")
    runs: list[int] = []

    def part() -> dict[str, float]:
        runs.append(1)
        return {"classify.x_accuracy": 0.5 + len(runs)}

    assert cache.memoized("x", [data], part) == {"classify.x_accuracy": 1.5}
    assert cache.memoized("x", [data], part) == {"classify.x_accuracy": 1.5}
    assert len(runs) == 1
    data.write_text("text,category\nmore,rows\n")
    os.utime(data, (1, 1))
    assert cache.memoized("x", [data], part) == {"classify.x_accuracy": 2.5}
    assert len(runs) == 2


def test_switched_off_it_always_computes(
    cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache, "ENABLED", False)
    runs: list[int] = []
    for _ in range(2):
        cache.memoized("y", [tmp_path], lambda: runs.append(1) or {"a": 1.0})
    assert len(runs) == 2
    assert not list(cache_dir.glob("parts/*"))


def test_timings_run_on_the_real_encoders_not_on_cached_vectors(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A timing on cached vectors measured no encoder at all (``mps_cascade_10shot`` read 309
    emails/s where the encoders allow ~40)."""
    from postroom.classify import embed

    monkeypatch.setattr(embed, "_LOADED", {})
    real = {"e5": CountingEncoder(), "minilm": CountingEncoder()}
    cached = {
        name: cache.CachedEmbedder(name, 256, lambda encoder=encoder: encoder)
        for name, encoder in real.items()
    }
    embed._LOADED.update(cached)  # type: ignore[arg-type]
    embed._LOADED["e5+minilm"] = embed.PairEmbedder(cached["e5"], cached["minilm"])
    embed.load_embedder("e5+minilm").embed(["invoice due"])
    assert real["e5"].asked == ["invoice due"]

    with cache.real_encoders():
        assert embed.load_embedder("e5") is real["e5"]
        embed.load_embedder("e5+minilm").embed(["invoice due"])
    assert real["e5"].asked == real["minilm"].asked == ["invoice due"] * 2
    assert embed.load_embedder("e5") is cached["e5"]
    embed.load_embedder("e5+minilm").embed(["invoice due"])
    assert real["e5"].asked == ["invoice due"] * 2  # the cache again
