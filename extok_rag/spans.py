"""Query-aware expansion: raw tokens where the question points, extensible embeddings for the
rest, under a budget of LLM positions.

Each retrieved chunk is cut into spans (sentences; fixed windows inside very long ones).
Spans are scored against the question; the best are read as raw text and the rest of each
chunk as its stored states (one per s tokens, s the index's stride), down-scaled to k, in
document order; a state a raw span shares with the run beside it is read in the run:

    [emb: tokens 0..t0)  [raw: sentence t0..t1]  [emb: tokens t1..n)

Spans are added greedily by score while the prompt fits the budget with the rest compressed at
the largest k; then k for the rest is the smallest that fits (as `k=auto` chooses).
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from extok_rag.config import SCORERS, DownscaleMethod, k_choices
from extok_rag.errors import IncompatibleModelError
from extok_rag.models.extensible_tokenizer import downscale
from extok_rag.models.sentence_selector import default_selector

SPAN_MAX_TOKENS = 48  # a longer sentence is read in windows of about this many tokens
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n+")
_WORD = re.compile(r"\w+")
STOPWORDS = frozenset(
    _WORD.findall(
        "a an the of in on at to for from by with and or is are was were be been what which who "
        "whom whose when where why how did does do that this these those it its as into than "
        "then there their they he she his her him i you we our not no yes"
    )
)


@dataclass(frozen=True)
class Span:
    """Tokens [start, end) of retrieved chunk `chunk`, its text and score."""

    chunk: int
    start: int
    end: int
    text: str
    score: float = 0.0


def token_starts(tokenizer, text: str, n_tokens: int) -> np.ndarray:
    """(n_tokens + 1,) the character where each chunk token starts, then len(text).

    The chunk's own ids came from tokenising its whole document; re-tokenising the chunk's text
    gives the same count almost always (offsets are then exact). When it does not, tokens are
    placed proportionally along the text: spans stay whole sentences of the text, and only the
    split of states between neighbouring spans is approximate.
    """
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    if len(offsets) == n_tokens:
        starts = offsets[:, 0]
    else:
        starts = np.round(np.arange(n_tokens) * len(text) / max(n_tokens, 1)).astype(np.int64)
    return np.append(starts, len(text))


def sentence_starts(text: str) -> list[int]:
    """Character offsets where sentences (or lines) begin; always starts with 0."""
    return [0] + [m.end() for m in _SENTENCE_END.finditer(text) if 0 < m.end() < len(text)]


def chunk_spans(chunk: int, text: str, starts: np.ndarray, stride: int) -> list[Span]:
    """Cut one chunk into spans: sentence starts snapped to the nearest multiple of `stride`
    (in tokens: the index's stride aligns spans with stored states, 1 keeps the sentences'
    own starts), windows of ~SPAN_MAX_TOKENS inside longer sentences."""
    n = len(starts) - 1
    if n <= 0:
        return []
    cuts = {0, n}
    for char in sentence_starts(text):
        token = int(np.searchsorted(starts[:-1], char, side="left"))
        cuts.add(min(n, stride * round(token / stride)))
    bounds = sorted(cuts)
    step = max(stride, stride * (SPAN_MAX_TOKENS // stride))
    fine = [b for lo, hi in itertools.pairwise(bounds) for b in range(lo, hi, step)]
    bounds = [*fine, n]
    return [
        Span(chunk, lo, hi, text[starts[lo] : starts[hi]])
        for lo, hi in itertools.pairwise(bounds)
        if text[starts[lo] : starts[hi]].strip()
    ]


# -- scoring --------------------------------------------------------------------------------
def words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


def lexical_scores(question: str, spans: Sequence[Span]) -> np.ndarray:
    """IDF-weighted share of the question's content words found in each span (IDF over the
    spans of this prompt)."""
    q = set(words(question))
    span_words = [set(words(s.text)) for s in spans]
    df = Counter(w for ws in span_words for w in ws & q)
    idf = {w: math.log((1 + len(spans)) / (1 + df[w])) + 1 for w in q}
    total = sum(idf.values()) or 1.0
    return np.array([sum(idf[w] for w in q & ws) / total for ws in span_words])


def minilm_scores(embedder, question: str, spans: Sequence[Span]) -> np.ndarray:
    """Cosine similarity of MiniLM vectors (the retrieval model) of the question and each span."""
    vectors = embedder.embed([question, *(s.text for s in spans)])
    return vectors[1:] @ vectors[0]


def _normalised(x: np.ndarray) -> np.ndarray:
    spread = x.max() - x.min() if len(x) else 0.0
    return (x - x.min()) / spread if spread > 0 else np.zeros_like(x)


_QUESTION_KINDS = {
    "when": re.compile(r"\b(when|what year|which year|what date)\b"),
    "who": re.compile(r"\b(who|whom|whose)\b"),
    "count": re.compile(r"\bhow (many|much|long|old|far|tall|big)\b"),
    "where": re.compile(r"\b(where|what country|which country|what city|which city)\b"),
}
_NAME = re.compile(r"\b[A-Z][\w'-]*")
_DIGIT = re.compile(r"\d")

# The learned scorer's per-span numbers beside the vectors, in the order `learned_features`
# writes them; the checkpoint records this list and refuses another.
SELECTOR_SCALARS = (
    "cosine",
    "lexical",
    "cosine_in_prompt",  # min-max over this prompt's spans
    "lexical_in_prompt",
    "first_in_chunk",
    "place_in_chunk",  # log(1 + index among its chunk's spans)
    "chunk_rank",  # retrieval rank of its chunk, 0 = best
    "chunk_best_cosine",
    "chunk_best_lexical",
    "words",  # log(1 + content words)
    "bridge_cosine",  # cosine to the best span of another chunk (the first hop)
    "title_in_best",  # share of its chunk's title words in the best spans of other chunks
    "new_words",  # log(1 + content words not in the question): an answer is news
    "new_names",  # log(1 + capitalised words not in the question)
    "has_number",
    *(f"asks_{kind}" for kind in _QUESTION_KINDS),  # crossed with the above by the MLP
)
_BEST = 3  # spans of other chunks that count as "the best" for title_in_best


def chunk_title(text: str) -> str:
    """The "Title" of a span that opens a corpus file "Title\n\ntext"; else ""."""
    head, sep, _ = text.partition("\n\n")
    return head if sep and len(head) < 200 else ""


def learned_features(
    question: str, spans: Sequence[Span], q_vec: np.ndarray, span_vecs: np.ndarray
) -> np.ndarray:
    """(n, len(SELECTOR_SCALARS)) float32 inputs of the learned scorer, from the MiniLM vectors
    of the question q (d,) and the spans (n, d) and their words. `span.chunk` is the chunk's
    retrieval rank; spans of a chunk are placed by `start`. (The vectors themselves, [q, s, q*s,
    |q-s|], overfit the ~1,600 training questions: see the selector's card.)"""
    n = len(spans)
    cos = span_vecs @ q_vec
    lex = lexical_scores(question, spans)
    both = (_normalised(cos) + _normalised(lex)) / 2
    chunks = np.array([s.chunk for s in spans])
    place = np.zeros(n)
    best_cos, best_lex, bridge, title_hit = (np.zeros(n) for _ in range(4))
    for c in np.unique(chunks):
        own = np.flatnonzero(chunks == c)
        place[own[np.argsort([spans[i].start for i in own], kind="stable")]] = np.arange(len(own))
        best_cos[own], best_lex[own] = cos[own].max(), lex[own].max()
        others = np.flatnonzero(chunks != c)
        if not len(others):
            continue
        top = others[np.argsort(-both[others], kind="stable")[:_BEST]]
        bridge[own] = span_vecs[own] @ span_vecs[top[0]]
        title = set(words(chunk_title(spans[own[0]].text)))
        if title:
            found = set().union(*(words(spans[i].text) for i in top))
            title_hit[own] = len(title & found) / len(title)
    q_words, q_lower = set(words(question)), question.lower()
    new_words = [len(set(words(s.text)) - q_words) for s in spans]
    new_names = [
        len({m.lower() for m in _NAME.findall(s.text)} - q_words - STOPWORDS) for s in spans
    ]
    kinds = [np.full(n, float(bool(rx.search(q_lower)))) for rx in _QUESTION_KINDS.values()]
    scalars = np.stack(
        [
            cos,
            lex,
            _normalised(cos),
            _normalised(lex),
            (place == 0).astype(float),
            np.log1p(place),
            chunks.astype(float),
            best_cos,
            best_lex,
            np.log1p([len(words(s.text)) for s in spans]),
            bridge,
            title_hit,
            np.log1p(new_words),
            np.log1p(new_names),
            np.array([float(bool(_DIGIT.search(s.text))) for s in spans]),
            *kinds,
        ],
        axis=1,
    )
    return scalars.astype(np.float32)


def learned_scores(selector, embedder, question: str, spans: Sequence[Span]) -> np.ndarray:
    """The learned selector's logit per span (`models.sentence_selector`, trained on HotpotQA
    supporting facts): higher = more likely a sentence the answer needs."""
    if selector.cfg.scalars != SELECTOR_SCALARS:
        raise IncompatibleModelError(
            "the span selector was trained on other features than this version computes: "
            "retrain it (python -m extok_rag.training.selector) or use another --scorer"
        )
    vectors = embedder.embed([question, *(s.text for s in spans)])
    return selector.score(learned_features(question, spans, vectors[0], vectors[1:]))


def score_spans(
    scorer: str,
    embedder,
    question: str,
    spans: Sequence[Span],
    llm_scores: Callable[[], np.ndarray] | None = None,
) -> list[Span]:
    """Spans with their scores; "both" is the mean of the two min-max normalised scores;
    "learned" the shipped sentence selector's logits; "llm" calls `llm_scores` (the frozen
    LLM's attention to each span, `ask.attention`)."""
    if not spans:
        return []
    if scorer == "llm":
        if llm_scores is None:
            raise ValueError("the llm scorer needs the frozen LLM's attention pass")
        scores = llm_scores()
    elif scorer == "lexical":
        scores = lexical_scores(question, spans)
    elif scorer == "minilm":
        scores = minilm_scores(embedder, question, spans)
    elif scorer == "learned":
        scores = learned_scores(default_selector(), embedder, question, spans)
    elif scorer == "both":
        lex = _normalised(lexical_scores(question, spans))
        scores = (lex + _normalised(minilm_scores(embedder, question, spans))) / 2
    else:
        raise ValueError(f"unknown span scorer {scorer!r}; one of {', '.join(SCORERS)}")
    return [
        Span(s.chunk, s.start, s.end, s.text, float(v)) for s, v in zip(spans, scores, strict=True)
    ]


# -- composing and budgeting ----------------------------------------------------------------
Part = str | torch.Tensor
# a down-scale with weights (`ExtensibleTokenizer.downscale_from`): (states[:hi], lo, k) ->
# states[lo:hi] down-scaled by k, free to read the states before lo
Pooler = Callable[[torch.Tensor, int, int], torch.Tensor]
Pooling = DownscaleMethod | Pooler  # how stored states are read at k (`ask/pooling.py`)


def pool_run(states: torch.Tensor, lo: int, hi: int, k: int, pooling: Pooling) -> torch.Tensor:
    """states[lo:hi] (of (n, d)) down-scaled by k by `pooling`: (ceil((hi - lo) / k), d)."""
    if callable(pooling):
        return pooling(states[:hi], lo, k)
    return downscale(states[lo:hi], k, pooling)


def chunk_parts(
    states: torch.Tensor,
    spans: Sequence[Span],
    raw: set[tuple[int, int]],
    k: int,
    stride: int,
    pooling: Pooling = "strided",
) -> list[Part]:
    """One chunk in document order: each run of compressed spans as its stored states (n/s, d)
    down-scaled by k/s (by `pooling`), each expanded span as its text. `raw` holds (start, end)
    of expanded spans of this chunk."""
    parts: list[Part] = []
    run: list[Span] = []

    def flush() -> None:
        if run:
            lo = run[0].start // stride
            parts.append(pool_run(states, lo, lo + run_states(run, stride), k // stride, pooling))
            run.clear()

    for span in spans:
        if (span.start, span.end) in raw:
            flush()
            parts.append(span.text)
        else:
            run.append(span)
    flush()
    return parts


def run_states(run: Sequence[Span], stride: int) -> int:
    """The stored states a run of compressed spans reads (as `chunk_parts` does): from the
    state holding its first token to the one holding its last, a state shared with a raw
    span beside it included."""
    return -(-run[-1].end // stride) - run[0].start // stride if run else 0


def compressed_count(n_states: int, k: int, stride: int) -> int:
    return -(-n_states // (k // stride))


@dataclass
class Plan:
    raw: set[tuple[int, int, int]]  # (chunk, start, end) of expanded spans
    k: int


def plan_expansion(
    spans: Sequence[Span],
    raw_cost: Callable[[Span], int],
    fixed: int,
    budget: int,
    stride: int,
    k: int | None = None,
) -> Plan | None:
    """Greedy by score: expand a span while the prompt (its `fixed` positions, the expanded
    spans' tokens, the rest compressed at the largest k, or at `k` when one is given) fits
    `budget`; then the smallest k that fits. None when nothing fits even with no span
    expanded."""
    ks = k_choices(stride, k)

    def positions(raw: set, k: int) -> int:
        cost = fixed
        for chunk in sorted({s.chunk for s in spans}):
            run: list[Span] = []  # the compressed spans since the last raw one
            for s in (x for x in spans if x.chunk == chunk):
                if (s.chunk, s.start, s.end) in raw:
                    cost += compressed_count(run_states(run, stride), k, stride) + raw_cost(s)
                    run = []
                else:
                    run.append(s)
            cost += compressed_count(run_states(run, stride), k, stride)
        return cost

    raw: set[tuple[int, int, int]] = set()
    if positions(raw, ks[-1]) > budget:
        return None
    for span in sorted(spans, key=lambda s: -s.score):
        key = (span.chunk, span.start, span.end)
        if positions(raw | {key}, ks[-1]) <= budget:
            raw.add(key)
    return Plan(raw, next(k for k in ks if positions(raw, k) <= budget))
