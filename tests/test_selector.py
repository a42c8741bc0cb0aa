"""The learned span scorer: the shipped checkpoint loads offline and matches the features this
version computes, scores deterministically, ranks through `score_spans`, and round-trips."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from extok_rag.config import SCORERS, AskConfig, RuntimeConfig
from extok_rag.errors import IncompatibleModelError, ModelNotFoundError
from extok_rag.models.embedder import Embedder
from extok_rag.models.sentence_selector import (
    CONFIG,
    DEFAULT_SELECTOR_DIR,
    SELECTOR_ENV,
    SelectorConfig,
    SentenceSelector,
    default_selector,
)
from extok_rag.spans import SELECTOR_SCALARS, Span, chunk_title, learned_features, score_spans

QUESTION = "When was the city of bridges founded?"
SPANS = [
    Span(0, 0, 4, "Beta\n\nBeta is a city of bridges."),
    Span(0, 4, 8, " It was founded in 1204 by river merchants."),
    Span(1, 0, 4, "Gamma\n\nGamma is a quiet village of Beta."),
]


@pytest.fixture(scope="module")
def embedder(tiny_embedder_dir) -> Embedder:
    return Embedder.load(tiny_embedder_dir, RuntimeConfig(device="cpu", dtype="float32"))


def test_learned_is_a_scorer_choice():
    assert "learned" in SCORERS and AskConfig(scorer="learned").scorer == "learned"


def test_the_shipped_selector_loads_with_this_versions_features():
    selector = default_selector()
    assert selector.cfg.scalars == SELECTOR_SCALARS
    assert not selector.training and not any(p.requires_grad for p in selector.parameters())
    config = json.loads((DEFAULT_SELECTOR_DIR / CONFIG).read_text())
    assert config["training"]["questions"]["train"] > 1000  # trained, not a fresh init
    assert (DEFAULT_SELECTOR_DIR / "README.md").is_file()


def test_features_and_scores_are_deterministic(embedder):
    vectors = embedder.embed([QUESTION, *(s.text for s in SPANS)])
    features = learned_features(QUESTION, SPANS, vectors[0], vectors[1:])
    assert features.shape == (3, len(SELECTOR_SCALARS)) and features.dtype == np.float32
    col = dict(zip(SELECTOR_SCALARS, features.T, strict=True))
    assert list(col["first_in_chunk"]) == [1, 0, 1] and list(col["chunk_rank"]) == [0, 0, 1]
    assert list(col["has_number"]) == [0, 1, 0] and set(col["asks_when"]) == {1}
    assert col["title_in_best"][2] == 0 and col["title_in_best"][0] == 1  # Beta named in chunk 1
    first = score_spans("learned", embedder, QUESTION, SPANS)
    again = score_spans("learned", embedder, QUESTION, SPANS)
    assert [s.score for s in first] == [s.score for s in again]
    assert [s.text for s in first] == [s.text for s in SPANS]
    assert np.isfinite([s.score for s in first]).all()


def test_chunk_title():
    assert chunk_title("Beta\n\nBeta is a city.") == "Beta" and chunk_title(" It was.") == ""


def test_save_load_round_trip_and_refusals(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = SentenceSelector(SelectorConfig(SELECTOR_SCALARS, hidden=8)).eval()
    model.save(tmp_path / "sel", {"note": "test"})
    loaded = SentenceSelector.load(tmp_path / "sel")
    x = np.random.default_rng(0).normal(size=(5, len(SELECTOR_SCALARS))).astype(np.float32)
    assert np.array_equal(model.score(x), loaded.score(x))
    with pytest.raises(IncompatibleModelError):
        loaded.score(x[:, :3])
    with pytest.raises(ModelNotFoundError):
        SentenceSelector.load(tmp_path / "nothing")
    SentenceSelector(SelectorConfig(("cosine",), hidden=8)).save(tmp_path / "old")
    monkeypatch.setenv(SELECTOR_ENV, str(tmp_path / "old"))
    with pytest.raises(IncompatibleModelError, match="retrain"):
        score_spans("learned", None, QUESTION, SPANS)
