"""The LlamaIndex integration through LlamaIndex's own calling conventions, on tiny models."""

from __future__ import annotations

import asyncio

import pytest
from llama_index.core.base.response.schema import Response, StreamingResponse
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from extok_rag.config import AskConfig, GenerationConfig, RuntimeConfig
from extok_rag.indexing import build_index, open_index
from extok_rag.integrations.llama_index import ROW_ID, ExtokQueryEngine, ExtokRetriever
from extok_rag.models.embedder import Embedder

GEN = GenerationConfig(max_new_tokens=3)


@pytest.fixture
def snapshot(corpus, tmp_path, models, settings):
    build_index(corpus, tmp_path / "idx", models, settings)
    return open_index(tmp_path / "idx")


@pytest.fixture
def retriever(snapshot, tiny_embedder_dir):
    embedder = Embedder.load(tiny_embedder_dir, RuntimeConfig(device="cpu", dtype="float32"))
    return ExtokRetriever(snapshot, embedder, similarity_top_k=3)


def test_retriever_is_a_llama_index_retriever(retriever):
    assert isinstance(retriever, BaseRetriever)
    nodes = retriever.retrieve("Section 4 numbers")
    assert len(nodes) == 3 and all(isinstance(n, NodeWithScore) for n in nodes)
    assert all(ROW_ID in n.node.metadata and n.node.metadata["doc_path"] for n in nodes)
    again = asyncio.run(retriever.aretrieve(QueryBundle("Section 4 numbers")))
    assert [n.node.node_id for n in again] == [n.node.node_id for n in nodes]


def test_query_engine_answers_with_sources(snapshot, retriever, tiny_llm):
    engine = ExtokQueryEngine(
        llm=tiny_llm,
        retriever=retriever,
        snapshot=snapshot,
        ask_config=AskConfig(k=4, top_n=3, mode="compressed"),
        generation=GEN,
    )
    response = engine.query("What does section 2 say?")
    assert isinstance(response, Response) and isinstance(response.response, str)
    assert len(response.source_nodes) == 3 and response.metadata["k"] == 4
    async_response = asyncio.run(engine.aquery("What does section 2 say?"))
    assert async_response.response == response.response


def test_query_engine_streams(snapshot, retriever, tiny_llm):
    engine = ExtokQueryEngine(
        llm=tiny_llm, retriever=retriever, snapshot=snapshot, generation=GEN, streaming=True
    )
    response = engine.query("Alpha?")
    assert isinstance(response, StreamingResponse)
    text = "".join(response.response_gen)
    assert isinstance(text, str) and response.source_nodes


class ListRetriever(BaseRetriever):
    """A foreign retriever: nodes that are not rows of any extok index."""

    def _retrieve(self, query_bundle):
        texts = ["Foreign node one about cats.", "Another foreign node about dogs and cats."]
        return [
            NodeWithScore(node=TextNode(text=t), score=1.0 - i / 10) for i, t in enumerate(texts)
        ]


def test_foreign_nodes_are_compressed_on_the_fly(tiny_llm):
    engine = ExtokQueryEngine(
        llm=tiny_llm,
        retriever=ListRetriever(),
        generation=GEN,
        ask_config=AskConfig(k=2, mode="compressed"),
    )
    response = engine.query("Which animal?")
    assert len(response.source_nodes) == 2 and response.metadata["k"] == 2
    assert engine.tokenizer is not None  # built on demand for the foreign nodes
    chunk = engine.as_chunk(response.source_nodes[0])
    assert chunk.row_id == -1 and chunk.states.shape[0] == chunk.n_tokens


def test_foreign_nodes_are_pooled_the_way_the_tokenizer_was_trained(tiny_llm):
    import torch

    from extok_rag.ask.retrieval import chunk_embeddings
    from extok_rag.config import TokenizerConfig
    from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer, downscale

    config = TokenizerConfig(num_layers=1, downscale="mean")
    tokenizer = ExtensibleTokenizer.from_llm(tiny_llm, config)
    engine = ExtokQueryEngine(
        llm=tiny_llm, retriever=ListRetriever(), tokenizer=tokenizer, generation=GEN
    )
    node = ListRetriever().retrieve("cats")[1]
    chunk = engine.as_chunk(node)
    with torch.no_grad():
        (states,) = tokenizer.encode([tiny_llm.tokenize(node.node.get_content())])
    assert chunk.pooling == "mean"
    want = downscale(states, engine.stride, "mean").numpy().astype("float16")
    assert chunk.states.tobytes() == want.tobytes()
    read = chunk_embeddings(chunk, 4, engine.stride)  # what the prompt holds at k=4
    torch.testing.assert_close(read, downscale(states, 4, "mean"), atol=2e-3, rtol=2e-3)


def test_chat_engine_reads_every_turn_and_condenses_instead_of_dropping(
    snapshot, retriever, tiny_llm
):
    """Every stored message reaches the prompt; a conversation past the 512-position window is
    condensed (the memory keeps every message); sync, streamed and async answers agree."""
    from llama_index.core.base.llms.types import ChatMessage
    from llama_index.core.chat_engine.types import BaseChatEngine

    from extok_rag.ask.conversation import Condenser
    from extok_rag.config import TokenizerConfig
    from extok_rag.integrations.llama_index import ExtokChatEngine
    from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer

    tokenizer = ExtensibleTokenizer.from_llm(tiny_llm, TokenizerConfig(num_layers=1))
    engine = ExtokChatEngine(
        tiny_llm,
        Condenser(lambda: tokenizer),
        snapshot,
        retriever.embedder,
        AskConfig(top_n=2),
        GEN,
        system_prompt="Be brief.",
    )
    assert isinstance(engine, BaseChatEngine)
    first = engine.chat("What does section 2 say?")
    assert len(first.source_nodes) == 2 and len(engine.chat_history) == 2
    streamed = engine.stream_chat("And section 3?")
    text = "".join(streamed.response_gen)  # ends once the answer is in the memory
    assert [m.content for m in engine.chat_history[-2:]] == ["And section 3?", text.strip()]
    history = [ChatMessage(role="user", content="x" * 300)] * 3  # 900 bytes: past the window
    again = engine.chat("Alpha?", chat_history=history)
    assert len(engine.chat_history) == 5 and isinstance(again.response, str)
    engine.reset()
    sync = engine.chat("Alpha?").response
    engine.reset()
    assert asyncio.run(engine.achat("Alpha?")).response == sync
