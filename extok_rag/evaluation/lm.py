"""Language-modelling evaluation, the paper's Table 1 protocol (arXiv 2401.07793, §3.1, after
AutoCompressor): perplexity of the last `target_len` (512) tokens of a window of T tokens,
given the T - 512 tokens before them in one of several forms.

Windows: `windows` (book, end) pairs drawn once (seeded), spread round-robin over the books;
at length T a window is the T tokens ending at `end`. So every row and every length scores the
*same* target tokens, and only the context in front of them changes.

Rows (one perplexity per row and length; n/a when the row's positions exceed the LLM window):
    none          (a) no context: the target, primed by the one token before it (unscored)
    raw@P         (b) raw context cut to its most recent P - 512 tokens (P positions in all)
    raw-full      (c) the whole raw context
    raw-equal@k   (b) raw context cut to as many positions as extok@k uses: the
                      equal-position baseline
    extok@k       (d) context in chunks of `chunk_len`, each encoded on its own by the trained
                      extensible tokenizer, down-scaled by k, concatenated; then the raw target
    untrained@k   (e) as (d) with an untrained tokenizer (`ExtensibleTokenizer.from_llm`)

Every row scores exactly `target_len` next-token predictions per window. The reported
perplexity is exp(total NLL / total tokens) over all windows; the median of per-window
perplexities is reported beside it.
"""

from __future__ import annotations

import math
import random
import resource
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F

from extok_rag.config import LEARNED_DOWNSCALES, DownscaleMethod
from extok_rag.errors import ExtokError
from extok_rag.evaluation.books import Book
from extok_rag.evaluation.journal import Journal
from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer
from extok_rag.models.llm import FrozenLLM
from extok_rag.models.mixed_input import IGNORE_INDEX, EmbeddingSegment, Row, TokenSegment

DEFAULT_LENGTHS = (2048, 4096, 8192, 16384, 32768)
DEFAULT_KS = (2, 4, 8, 16, 32)


class EvaluationError(ExtokError):
    """An evaluation cannot run as asked (no book long enough, bad lengths, ...)."""


@dataclass(frozen=True)
class LMEvalConfig:
    lengths: tuple[int, ...] = DEFAULT_LENGTHS  # total window lengths T, in tokens
    windows: int = 40  # windows per length (the same ones for every length and row)
    ks: tuple[int, ...] = DEFAULT_KS  # down-scaling factors of rows (b)/(d)/(e)
    chunk_len: int = 512  # tokens per encoded chunk of the context
    target_len: int = 512  # scored tokens at the end of each window
    raw_positions: int = 2048  # positions of the fixed-budget raw row (context + target)
    seed: int = 0
    batch_tokens: int = 8192  # most (padded) positions per LLM / tokenizer call
    downscale: DownscaleMethod = "strided"
    states: str = "float32"  # float32 (as encoded), or round-tripped through an index's
    # state encoding: float16, int8 (indexes.table), to measure what storage costs

    def __post_init__(self):
        if not self.lengths or min(self.lengths) <= self.target_len:
            raise EvaluationError(f"every length must exceed the target ({self.target_len})")
        if self.windows < 1 or not self.ks or min(self.ks) < 1 or self.chunk_len < 1:
            raise EvaluationError("windows, k and chunk length must be positive")
        if self.states not in ("float32", "float16", "int8"):
            raise EvaluationError(f"states: float32, float16 or int8, not {self.states!r}")

    def to_dict(self) -> dict:
        return asdict(self)


# -- windows --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Window:
    """T tokens of book `book` ending at token `end` (exclusive), for any length T."""

    book: int  # index into the books
    end: int

    def tokens(self, book_ids: Sequence[torch.Tensor], length: int) -> torch.Tensor:
        return book_ids[self.book][self.end - length : self.end]


def sample_windows(book_tokens: Sequence[int], n: int, longest: int, seed: int) -> list[Window]:
    """`n` windows, round-robin over the books holding at least `longest` tokens, each ending
    at a uniformly drawn token. Deterministic for a given seed and book list."""
    eligible = [i for i, size in enumerate(book_tokens) if size >= longest]
    if not eligible:
        raise EvaluationError(
            f"no book holds {longest} tokens (longest: {max(book_tokens, default=0)})"
        )
    rng = random.Random(seed)
    return [
        Window(b, rng.randint(longest, book_tokens[b]))
        for b in (eligible[i % len(eligible)] for i in range(n))
    ]


def split_window(tokens: torch.Tensor, target_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(context, target): the target is the last `target_len` tokens."""
    return tokens[:-target_len], tokens[-target_len:]


def truncate_context(context: torch.Tensor, n: int) -> torch.Tensor:
    """The most recent `n` tokens of the context (all of it when shorter)."""
    return context[max(0, context.numel() - n) :]


def embedding_count(context_len: int, k: int, chunk_len: int) -> int:
    """Extensible embeddings of a context: chunks of `chunk_len` from its start, ceil(L/k)
    each (the same split and count as `ExtensibleTokenizer.compress`)."""
    full, rest = divmod(context_len, chunk_len)
    return full * -(-chunk_len // k) + -(-rest // k)


# -- rows -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RowSpec:
    """One row of the table at one length: its input layout, or why it is n/a."""

    key: str
    label: str
    context_positions: int  # positions in front of the target
    kind: str  # "raw" (context_positions raw tokens) or a tokenizer name ("extok", "untrained")
    k: int = 0
    na: str = ""  # reason the row is not computed; "" = computed


def plan_rows(
    cfg: LMEvalConfig, length: int, max_positions: int, tokenizers: Sequence[str], notes: dict
) -> list[RowSpec]:
    """The rows at one length T, in table order. `tokenizers` names those available;
    `notes` maps an unavailable tokenizer kind to the reason."""
    ctx = length - cfg.target_len
    fits = max_positions - cfg.target_len  # most context positions the LLM can take

    def raw(key, label, n, k=0):
        na = "" if n <= fits else f"{n + cfg.target_len} positions > window {max_positions}"
        return RowSpec(key, label, n, "raw", k, na)

    budget = cfg.raw_positions - cfg.target_len
    rows = [
        raw("none", "(a) no context", 1),
        raw(
            f"raw@{cfg.raw_positions}",
            f"(b) raw, last {budget:,} tokens ({cfg.raw_positions:,} positions)",
            min(budget, ctx),
        ),
        raw("raw-full", "(c) raw, full context", ctx),
    ]
    for k in cfg.ks:
        n = embedding_count(ctx, k, cfg.chunk_len)
        rows.append(raw(f"raw-equal@{k}", f"(b) raw, equal positions ×{k}", min(n, ctx), k))
        for kind, label in (("extok", "(d) extensible"), ("untrained", "(e) untrained")):
            na = "" if kind in tokenizers else notes.get(kind, "no tokenizer given")
            if n > fits:
                na = f"{n + cfg.target_len} positions > window {max_positions}"
            rows.append(RowSpec(f"{kind}@{k}", f"{label} ×{k}", n, kind, k, na))
    return rows


@torch.inference_mode()
def target_nll(llm: FrozenLLM, rows: Sequence[Row], target_len: int) -> torch.Tensor:
    """Summed NLL (B,) of the last `target_len` tokens of each row, every row ending with its
    scored target. Same numbers as `training.objective.row_losses` on such rows, but rows are
    left-padded so the LM head runs only on the last target_len + 1 positions (the head is
    ~20% of SmolLM2's compute, and full logits of an 8K row take ~2 GB)."""
    batch = llm.batch(rows, padding_side="left")
    out = llm.model(
        inputs_embeds=batch.inputs_embeds,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=False,
        logits_to_keep=target_len + 1,
    )
    logits = out.logits[:, :-1].float()  # (B, target_len, V): position i predicts token i+1
    targets = batch.labels[:, -target_len:]  # (B, target_len)
    if bool((targets == IGNORE_INDEX).any()):
        raise EvaluationError("a row does not end with its scored target")
    return F.cross_entropy(logits.transpose(1, 2), targets, reduction="none").sum(dim=1)


@torch.inference_mode()
def encode_context(
    tokenizer: ExtensibleTokenizer, context: torch.Tensor, chunk_len: int, batch_tokens: int
) -> list[torch.Tensor]:
    """All output states of a context, chunk by chunk (each chunk encoded on its own):
    one (L_i, d) tensor per chunk, to be down-scaled for any k."""
    chunks = list(context.split(chunk_len))
    per_call = max(1, batch_tokens // chunk_len)
    states: list[torch.Tensor] = []
    for i in range(0, len(chunks), per_call):
        states += tokenizer.encode(chunks[i : i + per_call])
    return states


def pooling_for(tokenizer: ExtensibleTokenizer, method: DownscaleMethod) -> DownscaleMethod:
    """The run's down-scale for this row's tokenizer; one without the learned down-scale's
    weights (the untrained row of a merge or query-pool run) pools by mean (what an untrained
    merge tree computes, and what query pooling starts next to)."""
    learned = method in LEARNED_DOWNSCALES and tokenizer.config.downscale != method
    return "mean" if learned else method


def stored(states: torch.Tensor, encoding: str) -> torch.Tensor:
    """States (L, d) as an index would give them back in `encoding` (float32: unchanged)."""
    if encoding == "float32":
        return states
    if encoding == "float16":
        return states.half().to(states.dtype)
    from extok_rag.indexes.table import dequantize_int8, quantize_int8

    q, scales = quantize_int8(states.float().cpu().numpy())
    return torch.from_numpy(dequantize_int8(q, scales)).to(states.device, states.dtype)


# -- results --------------------------------------------------------------------------------
@dataclass
class Cell:
    """One row at one length: its positions and per-window summed NLL."""

    positions: int  # context + target positions per window
    nll: list[float] = field(default_factory=list)  # per window, summed over target tokens
    tokens: int = 0  # scored tokens per window
    na: str = ""

    @classmethod
    def for_row(cls, row: RowSpec, target_len: int) -> Cell:
        """The row's cell before any window: its positions, or why it is n/a."""
        return cls(row.context_positions + target_len, tokens=target_len, na=row.na)

    @property
    def ppl(self) -> float | None:
        if self.na or not self.nll:
            return None
        return math.exp(sum(self.nll) / (self.tokens * len(self.nll)))

    @property
    def median_ppl(self) -> float | None:
        if self.na or not self.nll:
            return None
        return statistics.median(math.exp(x / self.tokens) for x in self.nll)

    def to_dict(self) -> dict:
        return {
            "positions": self.positions,
            "ppl": self.ppl,
            "median_ppl": self.median_ppl,
            "window_nll": self.nll,
            "tokens_per_window": self.tokens,
            "na": self.na or None,
        }


@dataclass
class LMEvalResult:
    config: LMEvalConfig
    model: str
    max_positions: int
    tokenizers: dict[str, str]  # kind -> description (path, or "untrained ...")
    notes: dict[str, str]  # kind -> why a tokenizer row is n/a
    books: list[dict]  # name, sha256, tokens
    windows: list[Window]
    labels: dict[str, str]  # row key -> label, in table order
    cells: dict[int, dict[str, Cell]]  # length -> key -> cell
    timing: dict[str, float]

    def ppl(self, key: str, length: int) -> float | None:
        return self.cells[length][key].ppl

    def to_dict(self) -> dict:
        return {
            "protocol": "paper Table 1: ppl of the last target_len tokens of T-token windows",
            "config": self.config.to_dict(),
            "model": self.model,
            "max_positions": self.max_positions,
            "tokenizers": self.tokenizers,
            "notes": self.notes,
            "books": self.books,
            "windows": [{"book": self.books[w.book]["name"], "end": w.end} for w in self.windows],
            "rows": self.labels,
            "results": {
                str(t): {key: cell.to_dict() for key, cell in row.items()}
                for t, row in self.cells.items()
            },
            "timing": self.timing,
        }


# -- the evaluation -------------------------------------------------------------------------
def evaluate_lm(
    llm: FrozenLLM,
    books: Sequence[Book],
    cfg: LMEvalConfig | None = None,
    tokenizers: dict[str, ExtensibleTokenizer] | None = None,
    descriptions: dict[str, str] | None = None,
    notes: dict[str, str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    journal: Journal | None = None,
) -> LMEvalResult:
    """Run the protocol. `tokenizers` maps "extok" (trained, row d) and/or "untrained" (row e)
    to an extensible tokenizer; a missing one makes its rows n/a with `notes[kind]`. With a
    journal, each finished window (at one length) is recorded, and one recorded before is
    read back instead of run."""
    tokenizers = tokenizers or {}
    cfg, notes = _resolve_config(cfg or LMEvalConfig(), tokenizers, notes)
    book_ids = [llm.tokenize(book.text) for book in books]  # one (n_tokens,) tensor per book
    windows = sample_windows([t.numel() for t in book_ids], cfg.windows, max(cfg.lengths), cfg.seed)
    lengths = sorted(cfg.lengths)
    plans = {t: plan_rows(cfg, t, llm.max_positions, list(tokenizers), notes) for t in lengths}
    cells = {t: {r.key: Cell.for_row(r, cfg.target_len) for r in plan} for t, plan in plans.items()}
    counters: dict[str, float] = defaultdict(float)
    start = time.perf_counter()
    run = _WindowRun(llm, cfg, tokenizers, book_ids, counters, journal)
    total, done = len(lengths) * len(windows), 0
    for t in lengths:
        for i, window in enumerate(windows):
            for row_key, nll in run.values(t, i, window, plans[t]).items():
                cells[t][row_key].nll.append(nll)
            done += 1
            if progress is not None:
                progress(done, total)
    timing = _timing(counters, time.perf_counter() - start, total)
    return LMEvalResult(
        config=cfg,
        model=llm.identity.name,
        max_positions=llm.max_positions,
        tokenizers=dict(descriptions or {k: "given" for k in tokenizers}),
        notes={k: v for k, v in notes.items() if k not in tokenizers},
        books=[
            {"name": b.name, "sha256": b.sha256, "tokens": int(ids.numel())}
            for b, ids in zip(books, book_ids, strict=True)
        ],
        windows=windows,
        labels={r.key: r.label for r in plans[lengths[0]]},
        cells=cells,
        timing=timing,
    )


def _resolve_config(
    cfg: LMEvalConfig,
    tokenizers: dict[str, ExtensibleTokenizer],
    notes: dict[str, str] | None,
) -> tuple[LMEvalConfig, dict[str, str]]:
    """The config with the trained tokenizer's down-scale (its states are read the way the
    checkpoint was trained to), and a note for each tokenizer row kind not given."""
    if "extok" in tokenizers:
        cfg = replace(cfg, downscale=tokenizers["extok"].config.downscale)
    notes = dict(notes or {})
    for kind in ("extok", "untrained"):
        if kind not in tokenizers:
            notes.setdefault(kind, "no tokenizer given")
    return cfg, notes


@dataclass
class _WindowRun:
    """Scores windows one at a time, reading back those a journal recorded before."""

    llm: FrozenLLM
    cfg: LMEvalConfig
    tokenizers: dict[str, ExtensibleTokenizer]
    book_ids: list[torch.Tensor]  # (n_tokens,) per book
    counters: dict[str, float]
    journal: Journal | None

    def values(self, length: int, i: int, window: Window, plan: list[RowSpec]) -> dict[str, float]:
        """Row key -> summed target NLL of window `i` at `length`."""
        key = f"{length}/{i}"
        values = self.journal.done.get(key) if self.journal is not None else None
        if values is not None:
            self.counters["resumed_windows"] += 1
            return values
        tokens = window.tokens(self.book_ids, length)  # (length,)
        values = _evaluate_window(self.llm, self.cfg, plan, tokens, self.tokenizers, self.counters)
        if self.journal is not None:
            self.journal.record(key, values)
        return values


def _timing(counters: dict[str, float], seconds: float, total: int) -> dict[str, float]:
    """Time, throughput and peak memory of a run over `total` windows (at all lengths)."""
    return {
        "seconds": seconds,
        "seconds_per_window": seconds / max(1, total),
        "llm_positions": counters["llm_positions"],
        "llm_positions_per_s": counters["llm_positions"] / max(seconds, 1e-9),
        "encoder_tokens": counters["encoder_tokens"],
        "target_tokens_per_s": counters["target_tokens"] / max(seconds, 1e-9),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "resumed_windows": counters["resumed_windows"],
    }


def _evaluate_window(
    llm: FrozenLLM,
    cfg: LMEvalConfig,
    plan: list[RowSpec],
    tokens: torch.Tensor,
    tokenizers: dict[str, ExtensibleTokenizer],
    counters: dict,
) -> dict[str, float]:
    """Score every computable row of one window (row key -> summed target NLL); rows with
    identical inputs run once."""
    context, target = split_window(tokens, cfg.target_len)
    live = [r for r in plan if not r.na]
    states = {}  # tokenizer kind -> per-chunk states, encoded once for every k
    for kind in {r.kind for r in live if r.kind != "raw"}:
        encoded = encode_context(tokenizers[kind], context, cfg.chunk_len, cfg.batch_tokens)
        states[kind] = [stored(s, cfg.states) for s in encoded]
        counters["encoder_tokens"] += context.numel()

    inputs: dict[tuple, Row] = {}  # input identity -> row
    owners: dict[tuple, list[str]] = defaultdict(list)  # input identity -> row keys
    for r in live:
        if r.kind == "raw":
            ident = ("raw", r.context_positions)
            if ident not in inputs:
                ctx = truncate_context(context, r.context_positions)
                inputs[ident] = [TokenSegment(ctx, scored=False), TokenSegment(target)]
        else:
            ident = (r.kind, r.k)
            tokenizer = tokenizers[r.kind]
            method = pooling_for(tokenizer, cfg.downscale)
            embeds = torch.cat([tokenizer.downscale(s, r.k, method) for s in states[r.kind]])
            inputs[ident] = [EmbeddingSegment(embeds), TokenSegment(target)]
        owners[ident].append(r.key)

    # Batch rows of equal length together (no padding), within the token budget.
    values: dict[str, float] = {}
    by_length: dict[int, list[tuple]] = defaultdict(list)
    for ident, row in inputs.items():
        by_length[sum(len(s) for s in row)].append(ident)
    for length, idents in by_length.items():
        per_call = max(1, cfg.batch_tokens // length)
        for i in range(0, len(idents), per_call):
            group = idents[i : i + per_call]
            nll = target_nll(llm, [inputs[g] for g in group], cfg.target_len)
            counters["llm_positions"] += length * len(group)
            counters["target_tokens"] += cfg.target_len * len(group)
            for ident, value in zip(group, nll.tolist(), strict=True):
                values.update(dict.fromkeys(owners[ident], value))
    return {r.key: values[r.key] for r in live}  # in plan order
