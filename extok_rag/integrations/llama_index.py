"""LlamaIndex integration: an extok index as a `BaseRetriever`, and a query engine that answers
with compressed retrieved chunks read by the frozen LLM.

    engine = ExtokQueryEngine.from_index("indexes/corpus")
    response = engine.query("What is ...?")          # Response with source_nodes
    engine = ExtokQueryEngine.from_index(..., retriever=any_llama_index_retriever)

Nodes that come from another retriever (not rows of the extok index) are compressed on the fly
by the extensible tokenizer. Nothing here touches LlamaIndex's `Settings` (whose defaults would
reach for OpenAI): every model is ours and local.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.response.schema import Response, StreamingResponse
from llama_index.core.bridge.pydantic import Field
from llama_index.core.query_engine import CustomQueryEngine
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from extok_rag.ask.answer import describe
from extok_rag.ask.build import build_prompt
from extok_rag.ask.modes import SCORES_SPANS
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

    `retrieval`: vector (MiniLM), text (BM25) or hybrid (both, rank-fused), as `ask --retrieval`.
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
                self.snapshot.manifest.downscale,
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
        pooling = self.tokenizer.config.downscale
        return Retrieved(-1, node.score or 0.0, path, text, int(ids.numel()), states, pooling)
