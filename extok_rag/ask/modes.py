"""The ways retrieved chunks reach the frozen LLM: the one list of modes. The CLI's `--mode`,
`serve`'s `extok_mode`, `eval qa`'s row families and `generate --mode` all read it; the prompt
builders (`ask.build.BUILDERS`) are registered against it. No torch here: the CLI reads it to
build its options.

What measures best (docs/benchmarks.md, `eval qa` on SQuAD and HotpotQA with the shipped
checkpoint): raw top-n when it fits the budget; under a smaller budget, the question's best
sentences raw (`spans`): at 0.25 and 0.35 of raw's positions it equals `expand` on both sets
within the noise, both cut at sentence starts (docs/training.md, "What next" 16), and reads no
compressed states. So `auto`, the default, is raw when it fits and `AUTO_BUDGET_MODE` when it
does not.
The ship check of a new checkpoint decides `AUTO_BUDGET_MODE` again (research/ship_check.sh).
"""

from __future__ import annotations

from extok_rag.errors import ExtokError

MODES: dict[str, str] = {
    "auto": "raw when the top-n chunks fit the budget, else spans (what measures best)",
    "raw": "the top-n chunks as text",
    "spans": "the sentences that best match the question, as text, within the budget",
    "expand": "the best sentences as text, the rest of each chunk compressed, within the budget",
    "truncated": "the chunks as text, cut where the budget ends (a control of expand)",
    "compressed": "every chunk as extensible embeddings at k",
    "hybrid": "the best chunk as text, the others compressed at k",
    "none": "no retrieval: the question alone",
}
DEFAULT_MODE = "auto"
AUTO_BUDGET_MODE = "spans"  # auto's mode when raw top-n overflows the budget
BUDGETED = ("expand", "spans", "truncated")  # modes that fill a position budget
COMPRESSING = ("compressed", "hybrid", "expand")  # modes that read chunks at a k
SCORES_SPANS = ("expand", "spans")  # modes that score sentences with the retrieval embedder
if AUTO_BUDGET_MODE in COMPRESSING:
    COMPRESSING = (*COMPRESSING, "auto")
if AUTO_BUDGET_MODE in SCORES_SPANS:
    SCORES_SPANS = (*SCORES_SPANS, "auto")


def check_mode(mode: str, k: int | None = None) -> str:
    """`mode`, or a one-line error when it is unknown or would ignore a given `k`."""
    if mode not in MODES:
        raise ExtokError(f"unknown mode {mode!r}: one of {', '.join(MODES)}")
    if k is not None and mode not in COMPRESSING:
        raise ExtokError(
            f"k={k} applies to the modes that compress ({', '.join(COMPRESSING)}); "
            f"mode {mode} reads no compressed chunk: leave k on auto"
        )
    return mode
