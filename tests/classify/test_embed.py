"""Embedding models come from their wheels: offline, loaded once per process."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from postroom.classify import EmbedderUnavailable, load_embedder
from postroom.classify.embed import E5Embedder, WordLlamaEmbedder


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("embedder_class", [WordLlamaEmbedder, E5Embedder])
def test_bundled_models_load_and_embed_without_network(
    no_network: None, embedder_class: type[WordLlamaEmbedder] | type[E5Embedder]
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


def test_unknown_embedder_is_a_clear_error() -> None:
    with pytest.raises(EmbedderUnavailable):
        load_embedder("bert")  # type: ignore[arg-type]
