"""Ask an index: retrieve, build the prompt, and stream the answer; and the answer as `ask
--json`, `serve` and the public API report it."""

from __future__ import annotations

from collections.abc import Iterator

from extok_rag.ask.budget import describe_spans
from extok_rag.ask.build import build_prompt
from extok_rag.ask.prompt import Prompt
from extok_rag.ask.retrieval import Retrieved, check_models, retrieve
from extok_rag.config import AskConfig, GenerationConfig
from extok_rag.indexes import IndexSnapshot
from extok_rag.models.embedder import Embedder
from extok_rag.models.generation import stream_text
from extok_rag.models.llm import FrozenLLM


def ask(
    llm: FrozenLLM,
    embedder: Embedder,
    snapshot: IndexSnapshot,
    question: str,
    cfg: AskConfig,
    gen: GenerationConfig,
) -> tuple[list[Retrieved], Prompt, Iterator[str]]:
    """Retrieve, build the prompt, and return the streamed answer (lazy)."""
    chunks = retrieved(llm, embedder, snapshot, question, cfg)
    stride = snapshot.manifest.stride
    prompt = build_prompt(llm, question, chunks, cfg, stride, gen.max_new_tokens, embedder)
    return chunks, prompt, stream_text(llm, prompt.row, gen)


def retrieved(
    llm: FrozenLLM, embedder: Embedder, snapshot: IndexSnapshot, question: str, cfg: AskConfig
) -> list[Retrieved]:
    """The models checked against the index, then `question`'s top-n chunks by
    `cfg.retrieval` (none in mode none)."""
    check_models(snapshot, llm, embedder)
    if cfg.mode == "none":
        return []
    return retrieve(snapshot, embedder, question, cfg.top_n, cfg.retrieval, llm)


def describe(prompt: Prompt, chunks: list[Retrieved]) -> dict:
    """How the answer was read: the mode (auto: the one it chose), k, positions, the spans
    read raw, and the chunks read (budget modes)."""
    return {
        "mode": prompt.mode,
        "k": prompt.k,
        "positions": prompt.positions,
        "expanded": describe_spans(chunks, prompt.expanded),
        "chunks_read": prompt.chunks_read,
    }


def sources(chunks: list[Retrieved]) -> list[dict]:
    return [
        {"doc_path": c.doc_path, "score": c.score, "row_id": c.row_id, "text": c.text}
        for c in chunks
    ]
