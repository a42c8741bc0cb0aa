"""Does the C++ decoding step change an answer? `eval qa`'s raw row (greedy, 4-bit weights, in
batches of 16 as eval qa decodes) on the same questions, decoded by the C++ step
(`models/native_step.cpp`, the default) and by its Python loop (`EXTOK_RAG_NATIVE=0`), each in
its own child process over its own copy of the work dir's corpus and index (fresh journals:
neither run reuses answers the other, or an earlier run, wrote).

    .venv/bin/python benchmarks/native_answers.py [--questions 300] [--sets squad,hotpotqa] \
        [--work-dir ~/.cache/extok-rag/ship-check/work-v1]

The work dir must hold each set's `corpus` and `index` (as `benchmarks/q4_answers.py` and the
ship check leave them). Reports per set: answers identical (exact token text) and each run's
accuracy. Writes section `native-answers` of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from q4_answers import ROW, identical, run_set
from report import machine_line, write_section

from extok_rag.config import home_dir

STEPS = {"C++": "1", "Python": "0"}  # EXTOK_RAG_NATIVE


def child(name: str, work_dir: Path, questions: int, out: Path) -> None:
    """One set's raw row in this process (its EXTOK_RAG_NATIVE decides the step)."""
    from extok_rag.cli.console import quiet_transformers
    from extok_rag.models import native

    quiet_transformers()
    step = "C++" if native.load() is not None else "Python"
    args = argparse.Namespace(questions=questions, work_dir=work_dir)
    row = run_set(name, "auto", args)["per_question"][ROW]
    out.write_text(json.dumps({"step": step, "answers": row["answers"], "correct": row["correct"]}))


def run(name: str, step: str, args) -> dict:
    """`child` in a fresh process over a copy of the set's corpus and index."""
    with tempfile.TemporaryDirectory(prefix="native-answers-") as tmp:
        for part in ("corpus", "index"):
            shutil.copytree(args.work_dir / name / part, Path(tmp) / name / part)
        out = Path(tmp) / "answers.json"
        env = {**os.environ, "EXTOK_RAG_NATIVE": STEPS[step]}
        command = [sys.executable, __file__, "--child", name, "--work-dir", tmp, "--out", str(out)]
        command += ["--questions", str(args.questions)]
        start = time.perf_counter()
        subprocess.run(command, env=env, check=True)
        result = json.loads(out.read_text()) | {"seconds": time.perf_counter() - start}
    assert result["step"] == step, f"asked for the {step} step, ran {result['step']}"
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--questions", type=int, default=300)
    parser.add_argument("--sets", default="squad,hotpotqa")
    parser.add_argument("--work-dir", type=Path, default=home_dir() / "ship-check" / "work-v1")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.work_dir, args.questions, args.out)
        return
    from extok_rag.models import native

    assert native.load(build=True) is not None, f"no C++ step here: {native.failure()}"
    rows = []
    for name in args.sets.split(","):
        runs = {step: run(name, step, args) for step in STEPS}
        n = len(runs["C++"]["answers"])
        acc = {s: 100 * sum(r["correct"]) / n for s, r in runs.items()}
        same = identical(runs["C++"], runs["Python"])
        rows.append(
            f"| {name} | {n} | {same} ({100 * same / n:.1f}%) | {acc['C++']:.1f}% | "
            f"{acc['Python']:.1f}% | {runs['C++']['seconds']:.0f} s | "
            f"{runs['Python']['seconds']:.0f} s |"
        )
        print(rows[-1], flush=True)
    lines = [
        "## The C++ decoding step and the answers (`benchmarks/native_answers.py`, issue 30)",
        "",
        f"`benchmarks/native_answers.py --questions {args.questions}` — {machine_line()}. "
        f"`eval qa`'s {ROW} row (greedy, 4-bit decoding weights, batches of 16, default "
        "retrieval) on the same questions, decoded by the C++ step (`models/native_step.cpp`, "
        "the default) and by its Python loop (`EXTOK_RAG_NATIVE=0`), each in a fresh process "
        "over its own copy of the index, with fresh journals. Seconds: the whole run "
        "(loading, retrieval, prefill — the model's forward in both — and decoding).",
        "",
        "| set | questions | answers identical | accuracy, C++ | accuracy, Python "
        "| run, C++ | run, Python |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "The two compute the same logits bit for bit (tests/models/test_native_step.py): the C++ "
        "step calls the same ATen matmuls, SDPA and SiLU, and rounds its fused small ops as "
        "ATen's do.",
    ]
    write_section("native-answers", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
