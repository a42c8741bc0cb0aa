"""How answers end: at the chat template's end of turn, at a loop, or cut at max_new_tokens;
and what the loop guard (`GenerationConfig.repeat_stop`) changes. SQuAD questions that are NOT
in any `eval qa` draw (the probe draw of benchmarks/expand_probe.py), over the SQuAD index of
`eval qa` (all 1,204 dev paragraphs), greedy, 128 new tokens as `ask` answers by default.

    .venv/bin/python benchmarks/answer_endings.py [--index DIR] [--questions 64]

Rows: `raw` top-4 (what the default mode reads when it fits) and `compressed` ×4 top-4 (the
old default). Each row is decoded once without the guard; the guarded answer is the same
greedy tokens cut where the guard stops (`loops`), so the two are paired exactly. Writes
section `answer-endings` of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from expand_probe import probe_items
from report import machine_line, write_section

from extok_rag.ask.build import build_prompt
from extok_rag.ask.retrieval import retrieve
from extok_rag.config import AskConfig, GenerationConfig, RuntimeConfig, home_dir
from extok_rag.evaluation.qa_data import answer_contained
from extok_rag.indexes import open_index
from extok_rag.models.embedder import Embedder
from extok_rag.models.generation import generate_batch, loops
from extok_rag.models.llm import FrozenLLM

NEW_TOKENS = 128
GUARD = GenerationConfig().repeat_stop


def guarded(ids: list[int], min_run: int) -> list[int]:
    """The tokens the guarded decode yields: cut right after the first loop."""
    for n in range(1, len(ids) + 1):
        if loops(ids[:n], min_run):
            return ids[:n]
    return ids


def measure(llm, embedder, snapshot, items, cfg: AskConfig, batch: int = 16) -> dict:
    stride = snapshot.manifest.stride
    rows = []
    for item in items:
        chunks = retrieve(snapshot, embedder, item.question, cfg.top_n)
        rows.append(build_prompt(llm, item.question, chunks, cfg, stride, NEW_TOKENS).row)
    answers: list[list[int]] = []
    for start in range(0, len(rows), batch):
        answers += generate_batch(llm, rows[start : start + batch], NEW_TOKENS, repeat_stop=0)
    out = {"off": [], "on": []}
    for item, ids in zip(items, answers, strict=True):
        for guard, kept in (("off", ids), ("on", guarded(ids, GUARD))):
            text = llm.tokenizer.decode(kept, skip_special_tokens=True)
            out[guard].append((len(kept), answer_contained(text, item.answers), loops(kept, GUARD)))
    return out


def table(results: dict) -> str:
    lines = [
        "| row | guard | accuracy | mean tokens | cut at 128 | stopped at a loop |",
        "|---|---|---|---|---|---|",
    ]
    for row, by_guard in results.items():
        for guard, answers in by_guard.items():
            n = len(answers)
            tokens = statistics.mean(t for t, _, _ in answers)
            cut = sum(t == NEW_TOKENS for t, _, _ in answers)
            looped = sum(loop and t < NEW_TOKENS for t, _, loop in answers) if guard == "on" else 0
            acc = sum(c for _, c, _ in answers) / n
            lines.append(
                f"| {row} | {guard} | {acc:.1%} | {tokens:.1f} | {cut}/{n} | "
                f"{looped if guard == 'on' else '—'} |"
            )
        off, on = by_guard["off"], by_guard["on"]
        lost = sum(a[1] and not b[1] for a, b in zip(off, on, strict=True))
        lines.append(f"| {row} | paired | answers lost to the guard: {lost} | | | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, default=home_dir() / "eval-qa" / "squad" / "index")
    parser.add_argument("--questions", type=int, default=64)
    parser.add_argument("--draw", type=int, default=5928)
    args = parser.parse_args()
    runtime = RuntimeConfig(device="cpu")
    llm, embedder = FrozenLLM.load(None, runtime), Embedder.load(None, runtime)
    snapshot = open_index(args.index)
    items = probe_items("squad", args.draw, args.questions)
    results = {
        "raw top-4": measure(llm, embedder, snapshot, items, AskConfig(mode="raw")),
        "compressed ×4 top-4": measure(
            llm, embedder, snapshot, items, AskConfig(mode="compressed", k=4)
        ),
    }
    body = "\n\n".join(
        [
            "## How answers end, and the loop guard (`benchmarks/answer_endings.py`)",
            f"`.venv/bin/python benchmarks/answer_endings.py --questions {args.questions}` — "
            f"{machine_line()}; index `{args.index}`, {len(items)} SQuAD probe-draw questions "
            f"(in no eval draw), greedy, {NEW_TOKENS} new tokens; guard: stop once a run of "
            f"≥ {GUARD} tokens repeats right after itself.",
            table(results),
        ]
    )
    print(body)
    write_section("answer-endings", body)


if __name__ == "__main__":
    main()
