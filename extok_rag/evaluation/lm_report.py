"""Markdown for an `LMEvalResult`: pooled perplexity, median per-window perplexity and the
positions each row reads, rows × lengths."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from extok_rag.evaluation.lm import Cell, LMEvalResult


def length_label(tokens: int) -> str:
    return f"{tokens // 1024}K" if tokens % 1024 == 0 else f"{tokens:,}"


def format_ppl(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value >= 1000:
        return f"{value:.3g}"
    return f"{value:.2f}"


def table(result: LMEvalResult, cell_text: Callable[[Cell], str]) -> str:
    lengths = sorted(result.cells)
    lines = [
        "| row | " + " | ".join(length_label(t) for t in lengths) + " |",
        "|---|" + "---:|" * len(lengths),
    ]
    for key, label in result.labels.items():
        cells = [cell_text(result.cells[t][key]) for t in lengths]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def lm_markdown(result: LMEvalResult) -> str:
    cfg = result.config
    n_books = len({w.book for w in result.windows})
    tok = result.tokenizers
    notes = result.notes
    d_note = tok.get("extok") or f"n/a ({notes.get('extok', 'not run')})"
    e_note = tok.get("untrained") or f"n/a ({notes.get('untrained', 'not run')})"
    timing = result.timing
    header = (
        f"Perplexity of the last {cfg.target_len} tokens of T-token windows given the "
        f"T − {cfg.target_len} tokens before them (the paper's Table 1 protocol). "
        f"LLM {result.model} ({result.max_positions:,}-position window); "
        f"{len(result.windows)} windows over {n_books} books (seed {cfg.seed}), the same "
        f"windows and targets for every row and length; context chunks of {cfg.chunk_len} "
        f"tokens, each encoded on its own, {cfg.downscale} down-scaling by k. "
        f"(d) tokenizer: {d_note}. (e): {e_note}. n/a: the row does not fit the LLM window "
        "(or was not run). Row (a) is primed with the one token before the target, so every "
        f"row scores the same {cfg.target_len} next-token predictions per window."
    )
    ppl = table(result, lambda c: format_ppl(c.ppl))
    median = table(result, lambda c: format_ppl(c.median_ppl))
    positions = table(result, lambda c: f"{c.positions:,}" if not c.na else "n/a")
    rss_gb = timing["peak_rss_bytes"] / 2**30
    footer = (
        f"Evaluation time {timing['seconds']:.0f} s "
        f"({timing['seconds_per_window']:.1f} s per window and length), "
        f"{timing['llm_positions_per_s']:,.0f} LLM positions/s, "
        f"{timing['target_tokens_per_s']:,.0f} scored target tokens/s, "
        f"{timing['encoder_tokens']:,.0f} tokens encoded; peak RSS {rss_gb:.1f} GB."
    )
    return "\n\n".join(
        [
            header,
            "Perplexity (exp of the mean NLL over all windows' target tokens):",
            ppl,
            "Median of per-window perplexities:",
            median,
            "Positions the LLM reads per window (context + target):",
            positions,
            footer,
        ]
    )
