"""Prefill of expand prompts against raw top-n, paired per question and repeated.

    .venv/bin/python benchmarks/expand_prefill.py [--questions 30] [--reps 3] [--share 0.35]

`eval qa` times each row's questions in one pass, row after row, so a drift of the machine
between rows (another process, frequency) lands on one row only; on 20 questions the SQuAD
raw row ran at 2.59 ms per position and HotpotQA's at 1.84 in the same run. Here every question's
raw and expand prompts (the eval's own, from `evaluation.qa.build_one` over the sets' `eval qa`
indexes) are timed alternately, `--reps` times each, and the speed-up is taken per question:
median of per-question ratios, and the ratio of the medians. Prefill = the prompt's forward
pass to the first token, as `eval qa` and `ask` time it. Writes section `expand-prefill` of
docs/benchmarks.md unless `--no-write`.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine_line, write_section

from extok_rag.ask.retrieval import retrieve
from extok_rag.cli.console import quiet_transformers
from extok_rag.config import GenerationConfig, RuntimeConfig, home_dir
from extok_rag.evaluation.qa import Condition, QAEvalConfig, build_one
from extok_rag.evaluation.qa_data import load_qa_set
from extok_rag.indexing import open_index
from extok_rag.models.embedder import Embedder
from extok_rag.models.generation import generate_ids
from extok_rag.models.llm import FrozenLLM

GEN = GenerationConfig(max_new_tokens=1, temperature=0.0)


def prefill_ms(llm: FrozenLLM, row) -> float:
    start = time.perf_counter()
    list(itertools.islice(generate_ids(llm, row, GEN), 1))
    return 1000 * (time.perf_counter() - start)


def measure_set(name: str, llm, embedder, args) -> dict:
    """Per question: (raw positions, expand positions, raw ms, expand ms), medians of reps."""
    cfg = QAEvalConfig(questions=300, expand_budgets=(args.share,))
    snapshot = open_index(home_dir() / "eval-qa" / name / "index")
    raw = Condition("raw", "raw", cfg.top_n)
    expand = Condition("expand", "expand", cfg.top_n, None, args.share, cfg.expand_scorer)
    rows = []
    for item in load_qa_set(name, cfg.questions, cfg.seed).items[: args.questions]:
        chunks = retrieve(snapshot, embedder, item.question, cfg.top_n)
        p_raw = build_one(llm, embedder, item.question, chunks, raw, cfg, snapshot)
        budget = round(args.share * p_raw.positions)
        p_exp = build_one(llm, embedder, item.question, chunks, expand, cfg, snapshot, budget)
        prefill_ms(llm, p_raw.row)  # warm-up
        times = [(prefill_ms(llm, p_raw.row), prefill_ms(llm, p_exp.row)) for _ in range(args.reps)]
        rows.append(
            (
                p_raw.positions,
                p_exp.positions,
                statistics.median(t[0] for t in times),
                statistics.median(t[1] for t in times),
            )
        )
    return {"name": name, "rows": rows}


def summary_line(result: dict, share: float) -> str:
    rows = result["rows"]
    med = statistics.median
    raw_ms, exp_ms = med(r[2] for r in rows), med(r[3] for r in rows)
    ratios = [r[2] / r[3] for r in rows]
    met = "met" if med(ratios) >= 2.5 else "missed"
    return (
        f"| {result['name']} | {len(rows)} | {med(r[0] for r in rows):.0f} | "
        f"{med(r[1] for r in rows):.0f} | {raw_ms:,.0f} | {exp_ms:,.0f} | {raw_ms / exp_ms:.2f}× | "
        f"{med(ratios):.2f}× ({met}) | {sum(x >= 2.5 for x in ratios)} / {len(rows)} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default="squad,hotpotqa")
    parser.add_argument("--questions", type=int, default=30)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--share", type=float, default=0.35)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    runtime = RuntimeConfig()
    quiet_transformers()
    llm = FrozenLLM.load(runtime=runtime)
    embedder = Embedder.load(None, runtime)
    results = [measure_set(name, llm, embedder, args) for name in args.sets.split(",")]
    body = "\n".join(
        [
            f"## Expand prefill, paired (`benchmarks/expand_prefill.py`, share {args.share})",
            "",
            f"`.venv/bin/python benchmarks/expand_prefill.py --questions {args.questions} "
            f"--reps {args.reps}` — {machine_line()}; {llm.dtype}.",
            "",
            "The first questions of `eval qa`'s 300-question draws, over its indexes; each "
            f"question's raw top-4 and expand {args.share} prompts timed alternately "
            f"{args.reps}× after a warm-up (medians per question). Target: ≥ 2.5× at 0.35.",
            "",
            "| set | questions | raw positions | expand positions | raw prefill ms | "
            "expand prefill ms | ratio of medians | median per-question speed-up | "
            "questions ≥ 2.5× |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
            *(summary_line(r, args.share) for r in results),
        ]
    )
    print(body)
    if not args.no_write:
        write_section("expand-prefill", body)


if __name__ == "__main__":
    main()
