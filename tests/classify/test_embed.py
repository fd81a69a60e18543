"""Embedding models come from their wheels: offline, loaded once per process."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

from postroom.classify import EmbedderUnavailable, embed, load_embedder
from postroom.classify.embed import E5Embedder, MiniLMEmbedder, WordLlamaEmbedder


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("embedder_class", [WordLlamaEmbedder, E5Embedder, MiniLMEmbedder])
def test_bundled_models_load_and_embed_without_network(
    no_network: None,
    embedder_class: type[WordLlamaEmbedder] | type[E5Embedder] | type[MiniLMEmbedder],
) -> None:
    embedder = embedder_class()
    vectors = embedder.embed(["Where is my parcel?", "Waar blijft mijn pakket?", ""])
    assert vectors.shape == (3, embedder.dimension)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors[:2], axis=1), 1.0, rtol=1e-4)
    again = embedder.embed(["Where is my parcel?"])
    assert np.array_equal(again[0], vectors[0])


def test_e5_places_a_dutch_email_near_its_english_translation() -> None:
    vectors = load_embedder("e5").embed(
        [
            "Where is my parcel? It has not arrived.",
            "Waar is mijn pakket? Het is niet bezorgd.",
            "Please find the invoice for your order attached.",
        ]
    )
    assert vectors[0] @ vectors[1] > vectors[1] @ vectors[2]


def test_embedders_are_loaded_once_per_process() -> None:
    assert load_embedder("wordllama") is load_embedder("wordllama")
    assert load_embedder("e5") is load_embedder("e5")
    assert load_embedder("minilm") is load_embedder("minilm")


def test_unknown_embedder_is_a_clear_error() -> None:
    with pytest.raises(EmbedderUnavailable):
        load_embedder("bert")  # type: ignore[arg-type]


def test_minilm_groups_intents_and_batches_change_nothing() -> None:
    minilm = load_embedder("minilm")
    texts = [
        "My new card still has not arrived.",
        "When will the card I ordered be delivered?",
        "How do I top up my account with a bank transfer?",
        "Why was my card payment declined at the shop?",
    ]
    together = minilm.embed(texts)
    one_by_one = np.vstack([minilm.embed([text]) for text in texts])
    assert np.array_equal(together, one_by_one)  # bit for bit: a stored example stays valid
    similarity = together @ together.T
    assert similarity[0, 1] > max(similarity[0, 2], similarity[0, 3]) + 0.1


def test_pair_embedder_is_e5_then_minilm() -> None:
    texts = ["Waar blijft mijn nieuwe kaart?", "Where is my new card?"]
    pair = load_embedder("e5+minilm").embed(texts)
    assert pair.shape == (2, 768)
    np.testing.assert_allclose(pair[:, :384], load_embedder("e5").embed(texts), atol=1e-6)
    np.testing.assert_allclose(pair[:, 384:], load_embedder("minilm").embed(texts), atol=1e-6)


def test_minilm_refuses_files_that_are_not_the_published_model(tmp_path: Path) -> None:
    files = embed._minilm_files()
    tampered = tmp_path / "tokenizer.json"
    tampered.write_bytes(files["tokenizer.json"].read_bytes().replace(b"[UNK]", b"[UNX]", 1))
    with pytest.raises(EmbedderUnavailable, match="sha256"):
        MiniLMEmbedder({**files, "tokenizer.json": tampered})


def test_minilm_without_its_wheel_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(embed, "MINILM_DISTRIBUTION", "no-such-distribution-postroom")
    with pytest.raises(EmbedderUnavailable, match="requirements/models.txt"):
        MiniLMEmbedder()


def test_minilm_and_the_vote_run_numpy_on_one_blas_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenBLAS threads left spinning after MiniLM (or the neighbour vote) starve e5's OpenMP
    threads: the pair took 93 ms per text instead of ~40 (see ``one_blas_thread``)."""
    from threadpoolctl import threadpool_info

    seen: list[int] = []
    minilm = load_embedder("minilm")
    forward = minilm._forward  # type: ignore[attr-defined]

    def spy(ids: np.ndarray) -> np.ndarray:
        seen.extend(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
        return forward(ids)  # type: ignore[no-any-return]

    monkeypatch.setattr(minilm, "_forward", spy)
    minilm.embed(["Where is my card?"])
    assert seen and set(seen) == {1}
    with embed.one_blas_thread():
        inside = {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
    assert inside == {1}


PAGE = [
    "Invoice 2041 for your order, due in 30 days.",
    "",
    "Waar blijft mijn pakket? Het is nog steeds niet bezorgd.",
    "Re: lunch on Friday?",
    "Why was my card payment declined at the shop yesterday afternoon? " * 6,
    "Ünïcödé ✓ — 注文 №7",
    "Where is my new card?",
]


@pytest.mark.parametrize("name", ["e5", "minilm", "e5+minilm", "wordllama"])
def test_a_page_at_once_gives_each_text_the_vector_it_gets_alone(name: str) -> None:
    """A sync page's unsure emails are embedded in one call (cheaper per email); no vector may
    depend on its neighbours, or a prediction would change with the page it came on."""
    embedder = load_embedder(name)  # type: ignore[arg-type]
    together = embedder.embed(PAGE)
    alone = np.vstack([embedder.embed([text]) for text in PAGE])
    assert np.array_equal(together, alone)
    assert np.array_equal(embedder.embed(PAGE[::-1]), together[::-1])


def test_minilm_embeds_a_page_on_one_thread_per_core(monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import threading

    names: set[str] = set()
    minilm = load_embedder("minilm")
    forward = minilm._forward  # type: ignore[attr-defined]

    def spy(ids: np.ndarray) -> np.ndarray:
        names.add(threading.current_thread().name)
        return forward(ids)  # type: ignore[no-any-return]

    monkeypatch.setattr(minilm, "_forward", spy)
    minilm.embed(PAGE)
    if (os.cpu_count() or 1) > 1:
        assert names and all(name.startswith("embed") for name in names)
    names.clear()
    minilm.embed(["one text stays on the caller's thread"])
    assert names == {threading.current_thread().name}
