"""LlamaIndex integration: an extok index as a `BaseRetriever`, a query engine that answers
with compressed retrieved chunks read by the frozen LLM, and a chat engine whose old turns are
condensed instead of dropped (`ExtokChatEngine`).

    engine = ExtokQueryEngine.from_index("indexes/corpus")
    response = engine.query("What is ...?")          # Response with source_nodes
    engine = ExtokQueryEngine.from_index(..., retriever=any_llama_index_retriever)

Nodes that come from another retriever (not rows of the extok index) are compressed on the fly
by the extensible tokenizer. Nothing here touches LlamaIndex's `Settings` (whose defaults would
reach for OpenAI): every model is ours and local.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from threading import Thread
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, MessageRole
from llama_index.core.base.response.schema import Response, StreamingResponse
from llama_index.core.bridge.pydantic import Field
from llama_index.core.chat_engine.types import (
    AgentChatResponse,
    BaseChatEngine,
    StreamingAgentChatResponse,
)
from llama_index.core.memory import BaseMemory, ChatMemoryBuffer
from llama_index.core.query_engine import CustomQueryEngine
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from extok_rag.ask.answer import describe
from extok_rag.ask.build import build_prompt
from extok_rag.ask.conversation import Condenser, Turn, converse
from extok_rag.ask.modes import SCORES_SPANS
from extok_rag.ask.pooling import snapshot_pooling, tokenizer_pooling
from extok_rag.ask.retrieval import Retrieved, check_embedder, check_llm, retrieve
from extok_rag.config import AskConfig, GenerationConfig, RuntimeConfig
from extok_rag.indexes import IndexSnapshot, open_index
from extok_rag.models.embedder import Embedder
from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer, load_default_tokenizer
from extok_rag.models.generation import stream_text
from extok_rag.models.llm import FrozenLLM

ROW_ID = "extok_row_id"  # node metadata key marking a row of the extok index


class ExtokRetriever(BaseRetriever):
    """Top-n chunks of an extok index as `NodeWithScore` (text + document metadata).

    retriever = ExtokRetriever.from_index("indexes/corpus", similarity_top_k=4)

    `retrieval`: one of config.RETRIEVERS, as `ask --retrieval` (default two-hop).
    """

    def __init__(
        self,
        snapshot: IndexSnapshot,
        embedder: Embedder,
        similarity_top_k: int = 4,
        retrieval: str = AskConfig.retrieval,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.snapshot, self.embedder = snapshot, embedder
        self.similarity_top_k, self.retrieval = similarity_top_k, retrieval

    @classmethod
    def from_index(
        cls,
        index_dir: str | Path,
        similarity_top_k: int = 4,
        embedder: Embedder | None = None,
        retrieval: str = AskConfig.retrieval,
    ) -> ExtokRetriever:
        """A retriever over an index built by `extok-rag index` (the default embedder)."""
        snapshot, embedder = open_index(Path(index_dir)), embedder or Embedder.load()
        check_embedder(snapshot, embedder)
        return cls(snapshot, embedder, similarity_top_k, retrieval)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        query, n = query_bundle.query_str, self.similarity_top_k
        chunks = retrieve(self.snapshot, self.embedder, query, n, self.retrieval)
        return [NodeWithScore(node=to_node(c), score=c.score) for c in chunks]


def to_node(chunk: Retrieved) -> TextNode:
    return TextNode(
        id_=f"extok-{chunk.row_id}",
        text=chunk.text,
        metadata={ROW_ID: chunk.row_id, "doc_path": chunk.doc_path, "n_tokens": chunk.n_tokens},
    )


class ExtokQueryEngine(CustomQueryEngine):
    """Retrieve nodes, compress them, and answer with the frozen LLM (streaming optional)."""

    llm: Any = Field(description="FrozenLLM")
    retriever: Any = Field(description="any LlamaIndex BaseRetriever")
    snapshot: Any = Field(default=None, description="IndexSnapshot holding stored states")
    tokenizer: Any = Field(default=None, description="ExtensibleTokenizer for other nodes")
    embedder: Any = Field(default=None, description="Embedder scoring spans (mode expand)")
    ask_config: AskConfig = Field(default_factory=AskConfig)
    generation: GenerationConfig = Field(default_factory=lambda: GenerationConfig(128))
    streaming: bool = False

    @classmethod
    def from_index(
        cls,
        index_dir: str | Path,
        llm: FrozenLLM | None = None,
        retriever: BaseRetriever | None = None,
        tokenizer: ExtensibleTokenizer | None = None,
        **kwargs,
    ) -> ExtokQueryEngine:
        """An engine over an index built by `extok-rag index` (default models if not given)."""
        snapshot = open_index(Path(index_dir))
        llm = llm or FrozenLLM.load(None, RuntimeConfig())
        check_llm(snapshot, llm)
        ask = kwargs.get("ask_config", AskConfig())
        if retriever is None:
            embedder = Embedder.load()
            check_embedder(snapshot, embedder)
            retriever = ExtokRetriever(snapshot, embedder, ask.top_n, ask.retrieval)
        return cls(llm=llm, retriever=retriever, snapshot=snapshot, tokenizer=tokenizer, **kwargs)

    @property
    def stride(self) -> int:
        return self.snapshot.manifest.stride if self.snapshot is not None else 1

    def custom_query(self, query_str: str) -> Response | StreamingResponse:
        nodes = self.retriever.retrieve(query_str)
        chunks = [self.as_chunk(n) for n in nodes]
        prompt = build_prompt(
            self.llm,
            query_str,
            chunks,
            self.ask_config,
            self.stride,
            self.generation.max_new_tokens,
            self.span_embedder(),
        )
        pieces = stream_text(self.llm, prompt.row, self.generation)
        metadata = describe(prompt, chunks)
        if self.streaming:
            return StreamingResponse(response_gen=pieces, source_nodes=nodes, metadata=metadata)
        return Response("".join(pieces).strip(), source_nodes=nodes, metadata=metadata)

    def span_embedder(self) -> Embedder | None:
        """The retrieval embedder scores spans for the budget modes (loaded once if needed)."""
        if self.ask_config.mode not in SCORES_SPANS:
            return None
        if self.embedder is None:
            self.embedder = getattr(self.retriever, "embedder", None) or Embedder.load()
        return self.embedder

    def as_chunk(self, node: NodeWithScore) -> Retrieved:
        """A stored row when the node is one; otherwise the node's text compressed now."""
        row_id = node.node.metadata.get(ROW_ID)
        if row_id is not None and self.snapshot is not None:
            row = self.snapshot.table.fetch([int(row_id)])[0]
            return Retrieved(
                row.row_id,
                node.score or 0.0,
                row.doc_path,
                row.text,
                row.n_tokens,
                row.states,
                snapshot_pooling(self.snapshot, self.llm),
            )
        return self.compress_node(node)

    def compress_node(self, node: NodeWithScore) -> Retrieved:
        """A node from another retriever, encoded now as the indexer encodes chunks."""
        if self.tokenizer is None:
            self.tokenizer = load_default_tokenizer(self.llm)
        text = node.node.get_content()
        ids = self.llm.tokenize(text)
        states = self.tokenizer.stored_states([ids], self.stride)[0]  # (ceil(L/s), d)
        path = str(node.node.metadata.get("file_path", node.node.node_id))
        pooling = tokenizer_pooling(self.tokenizer)
        return Retrieved(-1, node.score or 0.0, path, text, int(ids.numel()), states, pooling)


class ExtokChatEngine(BaseChatEngine):
    """A chat engine whose memory never drops a turn: every message is answered over the whole
    conversation (`ask.conversation`), its oldest turns condensed into extensible embeddings
    once they outgrow the window, where LlamaIndex's memory buffers drop old messages at a
    token limit. With an index, each message is also answered from it as `ask` answers it.

    engine = ExtokChatEngine.from_index("indexes/corpus", system_prompt="Answer briefly.")
    engine.chat("My name is Zorblax.");  engine.chat("What is my name?")

    `memory` only stores the messages (`get_all`: all of them); it never decides what is read.
    """

    def __init__(
        self,
        llm: FrozenLLM,
        condenser: Condenser | None,
        snapshot: IndexSnapshot | None = None,
        embedder: Embedder | None = None,
        ask_config: AskConfig | None = None,
        generation: GenerationConfig | None = None,
        system_prompt: str | None = None,
        memory: BaseMemory | None = None,
    ):
        self.llm, self.condenser = llm, condenser
        self.snapshot, self.embedder = snapshot, embedder
        self.ask_config = ask_config or AskConfig()
        self.generation = generation or GenerationConfig(128)
        self.system_prompt = system_prompt
        self._memory = memory or ChatMemoryBuffer.from_defaults(token_limit=2**62)

    @classmethod
    def from_index(
        cls,
        index_dir: str | Path | None = None,
        llm: FrozenLLM | None = None,
        tokenizer: ExtensibleTokenizer | None = None,
        **kwargs,
    ) -> ExtokChatEngine:
        """A chat over an index built by `extok-rag index` (none: the LLM alone), default
        models where not given; the shipped tokenizer condenses old turns (loaded when needed)."""
        llm = llm or FrozenLLM.load(None, RuntimeConfig())
        snapshot = embedder = None
        if index_dir is not None:
            snapshot, embedder = open_index(Path(index_dir)), Embedder.load()
            check_llm(snapshot, llm)
            check_embedder(snapshot, embedder)
        condenser = Condenser(lambda: tokenizer or load_default_tokenizer(llm))
        return cls(llm, condenser, snapshot, embedder, **kwargs)

    @property
    def chat_history(self) -> list[ChatMessage]:
        return self._memory.get_all()

    def reset(self) -> None:
        self._memory.reset()

    def _start(self, message: str, chat_history: list[ChatMessage] | None):
        """The user's message stored, the prompt built over every stored message: (source
        nodes, the answer's text pieces)."""
        if chat_history is not None:
            self._memory.set(chat_history)
        head = [Turn("system", self.system_prompt)] if self.system_prompt else []
        turns = head + [as_turn(m) for m in self._memory.get_all()] + [Turn("user", message)]
        chunks, prompt, _ = converse(
            self.llm,
            self.embedder,
            self.snapshot,
            turns,
            self.ask_config,
            self.generation,
            self.condenser,
        )
        self._memory.put(ChatMessage(role=MessageRole.USER, content=message))
        nodes = [NodeWithScore(node=to_node(c), score=c.score) for c in chunks]
        return nodes, stream_text(self.llm, prompt.row, self.generation)

    def chat(self, message: str, chat_history: list[ChatMessage] | None = None):
        nodes, pieces = self._start(message, chat_history)
        answer = "".join(pieces).strip()
        self._memory.put(ChatMessage(role=MessageRole.ASSISTANT, content=answer))
        return AgentChatResponse(response=answer, source_nodes=nodes)

    def stream_chat(self, message: str, chat_history: list[ChatMessage] | None = None):
        nodes, pieces = self._start(message, chat_history)
        response = StreamingAgentChatResponse(
            chat_stream=chat_responses(pieces), source_nodes=nodes
        )
        thread = Thread(target=response.write_response_to_history, args=(self._memory,))
        response.write_response_to_history_thread = thread
        thread.start()
        return response

    async def achat(self, message: str, chat_history: list[ChatMessage] | None = None):
        return await asyncio.to_thread(self.chat, message, chat_history)

    async def astream_chat(self, message: str, chat_history: list[ChatMessage] | None = None):
        nodes, pieces = await asyncio.to_thread(self._start, message, chat_history)

        async def stream():
            for response in await asyncio.to_thread(list, chat_responses(pieces)):
                yield response

        response = StreamingAgentChatResponse(achat_stream=stream(), source_nodes=nodes)
        response.awrite_response_to_history_task = asyncio.create_task(
            response.awrite_response_to_history(self._memory)
        )
        return response


def as_turn(message: ChatMessage) -> Turn:
    """A stored LlamaIndex message as a conversation turn (tool and other roles refused)."""
    return Turn(str(getattr(message.role, "value", message.role)), message.content or "")


def chat_responses(pieces):
    """Text pieces as LlamaIndex's streamed ChatResponses (the message so far, the delta)."""
    text = ""
    for piece in pieces:
        text += piece
        yield ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=piece
        )
