"""Retrieval: question -> retrieval vector -> FAISS top-n -> LanceDB rows, and each chunk's
stored states down-scaled to k.

States are stored at the index's base stride s; a chunk is read at k (a multiple of s) by
down-scaling the stored states by k / s, the way the tokenizer was trained (the manifest's
`downscale`: strided sampling or window means). No extensible tokenizer runs here, the index
already holds its output; except for a tokenizer that pools queries, whose held-back last
layer pools the stored states (`ask/pooling.py`).
"""

from __future__ import annotations

import itertools
import logging
import re
from dataclasses import dataclass

import numpy as np
import torch

from extok_rag.ask.pooling import snapshot_pooling
from extok_rag.config import RETRIEVERS, check_k
from extok_rag.errors import ExtokError, IncompatibleModelError
from extok_rag.indexes import IndexSnapshot
from extok_rag.models.embedder import Embedder
from extok_rag.models.llm import FrozenLLM
from extok_rag.spans import Pooling, Span, pool_run, score_spans, sentence_starts, words


@dataclass(frozen=True)
class Retrieved:
    """One retrieved chunk: its score, text and stored states (n_states, d) float16, pooled
    from the tokenizer's output by `pooling` and read at larger k the same way (a method's
    name, or the held-back layer of a tokenizer that pools queries: `ask/pooling.py`)."""

    row_id: int
    score: float
    doc_path: str
    text: str
    n_tokens: int
    states: np.ndarray
    pooling: Pooling = "strided"


def check_llm(snapshot: IndexSnapshot, llm: FrozenLLM) -> None:
    """Refuse to read an index whose states were made for another LLM."""
    made_for = snapshot.manifest.llm
    if not made_for.matches(llm.identity):
        raise IncompatibleModelError(
            f"index was built for LLM {made_for.describe()}, not {llm.identity.describe()}: "
            "use that --llm or re-index"
        )


def check_embedder(snapshot: IndexSnapshot, embedder: Embedder) -> None:
    """Refuse to search an index whose vectors another retrieval embedder made: its questions
    would land in the wrong vector space and retrieve noise."""
    made_with = snapshot.manifest.embedder
    if made_with != embedder.identity:
        raise IncompatibleModelError(
            f"index was built with retrieval embedder {made_with}, not {embedder.identity}: "
            "use that --embedder or re-index"
        )


def check_models(snapshot: IndexSnapshot, llm: FrozenLLM, embedder: Embedder | None) -> None:
    """`check_llm`, and `check_embedder` when the embedder is given."""
    check_llm(snapshot, llm)
    if embedder is not None:
        check_embedder(snapshot, embedder)


_log = logging.getLogger("extok_rag")
_WARNED: set[int] = set()  # snapshots already warned that hybrid fell back to vectors
FUSION_DEPTH = 20  # hybrid: candidates each retriever gives the fusion (at least n)
RANKED = ("vector", "text", "hybrid")  # the RETRIEVERS that rank rows in one pass
RRF_K = 60  # reciprocal rank fusion: a row scores sum(1 / (RRF_K + rank)) over the lists


def retrieve(
    snapshot: IndexSnapshot,
    embedder: Embedder,
    question: str,
    n: int,
    method: str = "vector",
    llm: FrozenLLM | None = None,
) -> list[Retrieved]:
    """Top-n chunks, best first, by `method` (one of RETRIEVERS): inner product of normalised
    MiniLM vectors (`vector`), LanceDB's full-text BM25 (`text`), both fused by reciprocal
    rank (`hybrid`: the second hop's paragraph often shares words, not meaning, with the
    question; docs/benchmarks.md "hybrid-retrieval"), or `two-hop` (`second_hop`). `llm`:
    the LLM the chunks are read by, which the index of a tokenizer that pools queries needs
    to pool them (`snapshot_pooling`); a retriever that only ranks can leave it out."""
    if method not in RETRIEVERS:
        raise ExtokError(f"unknown retrieval {method!r}: one of {', '.join(RETRIEVERS)}")
    if snapshot.manifest.counts.chunks == 0:
        raise ExtokError("the index is empty: run `extok-rag index` on a corpus with text")
    if method == "two-hop":
        hits = ranked_hits(snapshot, embedder, question, n, "hybrid")
        rows = snapshot.table.fetch([i for i, _ in hits])
        rows, scores = second_hop(snapshot, embedder, question, n, rows, [s for _, s in hits])
    else:
        hits = ranked_hits(snapshot, embedder, question, n, method)
        rows, scores = snapshot.table.fetch([i for i, _ in hits]), [s for _, s in hits]
    pooling = snapshot_pooling(snapshot, llm)
    return [
        Retrieved(r.row_id, s, r.doc_path, r.text, r.n_tokens, r.states, pooling)
        for r, s in zip(rows, scores, strict=True)
    ]


# -- two hops ------------------------------------------------------------------------------
_NAME = re.compile(r"\b[A-Z][\w'-]*(?:\s+[A-Z][\w'-]*)*")  # runs of capitalised words


def bridge_names(question: str, text: str, embedder: Embedder) -> list[str]:
    """The names in `text`'s best sentence for `question` (the `both` span scorer) that the
    question does not already hold: in a two-hop question, the bridge to the second hop."""
    cuts = sorted({0, *sentence_starts(text), len(text)})
    sentences = [Span(0, a, b, text[a:b]) for a, b in itertools.pairwise(cuts) if text[a:b].strip()]
    if not sentences:
        return []
    best = max(score_spans("both", embedder, question, sentences), key=lambda s: s.score)
    asked = set(words(question))
    return [m for m in _NAME.findall(best.text) if not set(words(m)) <= asked]


def second_hop(snapshot, embedder, question: str, n: int, rows: list, scores: list):
    """Hybrid's first n - 1 rows, then the best row of a new document found by a second
    hybrid query, the question plus the bridge names of the top row (`bridge_names`); hybrid's
    n-th row when that finds nothing. (rows, scores), n of each at most."""
    if n < 2 or len(rows) < n:
        return rows, scores
    names = bridge_names(question, rows[0].text, embedder)
    if not names:
        return rows, scores
    hop = new_document_row(snapshot, embedder, f"{question} {' '.join(names)}", rows[: n - 1])
    if hop is None:
        return rows, scores
    return [*rows[: n - 1], hop[0]], [*scores[: n - 1], hop[1]]


def new_document_row(snapshot, embedder, query: str, taken: list):
    """(row, score) of the best hybrid hit for `query` from a document none of the `taken`
    rows comes from; None when the first FUSION_DEPTH hits hold none."""
    docs = {r.doc_path for r in taken}
    hits = ranked_hits(snapshot, embedder, query, FUSION_DEPTH, "hybrid")
    for start in range(0, len(hits), 4):  # rows fetched a few at a time: their states are big
        batch = hits[start : start + 4]
        for row, (_, score) in zip(snapshot.table.fetch([i for i, _ in batch]), batch, strict=True):
            if row.doc_path not in docs:
                return row, score
    return None


def ranked_hits(snapshot, embedder, question: str, n: int, method: str) -> list[tuple[int, float]]:
    """(row id, score) of the top-n rows by `method`."""
    if method not in RANKED:
        raise ExtokError(f"unknown ranking {method!r}: one of {', '.join(RANKED)}")
    if method != "vector" and not snapshot.table.has_text_index():
        advice = "run `extok-rag index` on its corpus again to add one"
        if method == "text":
            raise ExtokError(f"this index has no full-text index (it predates it): {advice}")
        if id(snapshot) not in _WARNED:
            _WARNED.add(id(snapshot))
            _log.warning(f"this index has no full-text index: retrieving by vectors only; {advice}")
        method = "vector"
    depth = n if method != "hybrid" else max(n, FUSION_DEPTH)
    lists = []
    if method in ("vector", "hybrid"):
        ids, scores = snapshot.vectors.search(embedder.embed([question]), depth)
        lists.append([(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0])
    if method in ("text", "hybrid"):
        ids, scores = snapshot.table.search_text(question, depth)
        lists.append([(int(i), float(s)) for i, s in zip(ids, scores, strict=True)])
    if len(lists) == 1:
        return lists[0][:n]
    fused: dict[int, float] = {}
    for ranked in lists:
        for rank, (row_id, _) in enumerate(ranked, start=1):
            fused[row_id] = fused.get(row_id, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(fused.items(), key=lambda hit: -hit[1])[:n]


def chunk_embeddings(chunk: Retrieved, k: int, stride: int) -> torch.Tensor:
    """Stored states (stride s) down-scaled to k: (ceil(n_states / (k/s)), d) float32."""
    states = torch.from_numpy(chunk.states.astype(np.float32))
    return pool_run(states, 0, len(states), check_k(k, stride) // stride, chunk.pooling)
