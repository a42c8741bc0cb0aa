"""Install a training run's checkpoint as the shipped extensible tokenizer and write its model
card (README.md beside the weights) from the run's log and the evaluation outputs.

    .venv/bin/python benchmarks/model_card.py --run RUN_DIR --lm LM.json [--qa QA.json] [--install]

`--install` copies the run's checkpoint (only trained tensors + config) into
`extok_rag/checkpoints/smollm2-135m/`. The card states the recipe, the data, steps, tokens,
wall time, hardware, the probe curve, the Table-1 results with each target checked, the QA
results, and the command that reproduces the checkpoint.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from extok_rag.models.defaults import DEFAULT_TOKENIZER_DIR  # noqa: E402

SHIPPED = ("tokenizer.safetensors", "tokenizer_config.json")


def read_log(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if x.strip()]


def training_section(run: Path, records: list[dict]) -> str:
    state = json.loads((run / "checkpoint" / "trainer_state.json").read_text())
    cfg = state["config"]
    steps = [r for r in records if "loss" in r]
    seqs = state["step"] * cfg["grad_accum"]
    parts = [r for r in records if "hardware" in r]
    first_logged = parts[0]["step"] if parts else state["step"]
    hardware = [
        f"  - from step {r['step']}: {r['hardware']['device']}, {r['hardware']['cpu_count']} "
        f"CPU cores, {r['hardware']['torch_threads']} torch threads, torch {r['hardware']['torch']}"
        for r in parts
    ]
    if first_logged > 0:
        hardware.insert(
            0,
            f"  - steps 0–{first_logged}: the same 2-core CPU machine (x86_64, no GPU, torch "
            "2.13.0+cpu, 2 threads; logged before hardware records existed)",
        )
    return "\n".join(
        [
            "## Training",
            "",
            f"- Optimiser steps: {state['step']:,} (each {cfg['grad_accum']} sequences of "
            f"{cfg['seq_len']:,} tokens).",
            f"- Sequences seen: {seqs:,}; tokens encoded by the tokenizer: "
            f"{seqs * cfg['seq_len']:,}; scored next-token targets: "
            f"{sum(r['tokens'] for r in steps):,}.",
            f"- Wall time in training steps: {state['elapsed_s'] / 3600:.2f} h (probes and "
            "checkpointing not counted).",
            "- Hardware:",
            *hardware,
        ]
    )


def probe_section(records: list[dict]) -> str:
    probes = [r for r in records if "probe" in r]
    lines = [
        "## Content probe during training",
        "",
        "Perplexity of the same held-out validation chunks (6 sequences) given the earlier "
        "chunks: as nothing, raw, or extensible embeddings at k = 2 / 16; `self` / `other`: "
        "the chunk after its own vs another sequence's embeddings (k = 2).",
        "",
        "| step | none | raw | k=2 | k=16 | self k=2 | other k=2 |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in probes:
        p = r["probe"]
        lines.append(
            f"| {r['step']} | {p['none']:.2f} | {p['raw']:.2f} | {p['k2']:.2f} | "
            f"{p['k16']:.2f} | {p['self_k2']:.2f} | {p['other_k2']:.2f} |"
        )
    return "\n".join(lines)


def ppl(lm: dict, length: int, key: str) -> float | None:
    cell = lm["results"].get(str(length), {}).get(key)
    return cell["ppl"] if cell else None


def target_lines(lm: dict) -> list[str]:
    """The training issue's three targets, each checked on every cell it names."""
    lengths = sorted(int(t) for t in lm["results"])
    ks = lm["config"]["ks"]
    out = ["## Targets (issue: train and ship the default checkpoint)", ""]
    misses = [
        f"{t // 1024}K ×{k}: (d) {ppl(lm, t, f'extok@{k}'):.2f} vs (a) "
        f"{ppl(lm, t, 'none'):.2f} / (e) {ppl(lm, t, f'untrained@{k}'):.2f}"
        for t in lengths
        for k in ks
        if ppl(lm, t, f"extok@{k}") is not None
        and not ppl(lm, t, f"extok@{k}") < min(ppl(lm, t, "none"), ppl(lm, t, f"untrained@{k}"))
    ]
    out.append(
        "1. (d) beats no context (a) and the untrained tokenizer (e) at every k and length: "
        + ("**met**." if not misses else f"**missed** at {len(misses)} cells: " + "; ".join(misses))
    )
    gaps = {}
    for t in (x for x in lengths if x >= 4096):
        a, c = ppl(lm, t, "none"), ppl(lm, t, "raw-full")
        for k in (x for x in ks if x in (2, 4)):
            d = ppl(lm, t, f"extok@{k}")
            if d is not None and a is not None and c is not None and a > c:
                gaps[f"{t // 1024}K ×{k}"] = (a - d) / (a - c)
    closed = "; ".join(f"{cell}: {100 * share:.0f}%" for cell, share in gaps.items())
    out.append(
        "2. (d) at k = 2 and 4 closes ≥ 50% of the (a)→(c) gap on 4K and 8K windows: "
        + (
            verdict(all(v >= 0.5 for v in gaps.values())) + f" — closed {closed}."
            if gaps
            else "n/a (no 4K/8K window measured)."
        )
    )
    equal = {
        f"{t // 1024}K ×{k}": (ppl(lm, t, f"extok@{k}"), ppl(lm, t, f"raw-equal@{k}"))
        for t in lengths
        if t >= 4096
        for k in ks
        if k >= 4 and ppl(lm, t, f"extok@{k}") is not None
    }
    cells = "; ".join(f"{cell}: (d) {d:.2f} vs (b) {b:.2f}" for cell, (d, b) in equal.items())
    out.append(
        "3. (d) beats the equal-position raw baseline (b) for k ≥ 4 at every length ≥ 4K: "
        + verdict(bool(equal) and all(d < b for d, b in equal.values()))
        + f" — {cells}."
    )
    return out


def verdict(met: bool) -> str:
    return "**met**" if met else "**missed**"


def lm_table(lm: dict) -> str:
    lengths = sorted(int(t) for t in lm["results"])
    lines = [
        "| row | " + " | ".join(f"{t // 1024}K" for t in lengths) + " |",
        "|---|" + "---:|" * len(lengths),
    ]
    for key, label in lm["rows"].items():
        cells = [ppl(lm, t, key) for t in lengths]
        lines.append(
            f"| {label} | " + " | ".join("n/a" if v is None else f"{v:.2f}" for v in cells) + " |"
        )
    return "\n".join(lines)


def qa_table(qa: dict) -> str:
    lines = []
    for s in qa["sets"]:
        lines += [
            f"**{s['name']}** ({len(s['qids'])} questions)",
            "",
            "| condition | recall@n | accuracy | F1 | prompt positions | prefill ms |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in s["summary"]:
            recall = "—" if r["recall"] is None else f"{100 * r['recall']:.1f}%"
            prefill = r["prefill_ms_median"]
            lines.append(
                f"| {r['name']} | {recall} | {100 * r['accuracy']:.1f}% | {100 * r['f1']:.1f} | "
                f"{r['positions_median']:.0f} | {'—' if prefill is None else f'{prefill:.0f}'} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--lm", type=Path, required=True, help="`eval lm --out` JSON")
    parser.add_argument("--qa", type=Path, help="`eval qa --out` JSON")
    parser.add_argument(
        "--notes",
        type=Path,
        default=Path(__file__).with_name("model_card_notes.md"),
        help="Markdown appended (findings, next steps)",
    )
    parser.add_argument("--install", action="store_true")
    args = parser.parse_args()
    if args.install:
        DEFAULT_TOKENIZER_DIR.mkdir(parents=True, exist_ok=True)
        for name in SHIPPED:
            shutil.copy2(args.run / "checkpoint" / name, DEFAULT_TOKENIZER_DIR / name)
    records = read_log(args.run)
    state = json.loads((args.run / "checkpoint" / "trainer_state.json").read_text())
    lm = json.loads(args.lm.read_text())
    size = (DEFAULT_TOKENIZER_DIR / SHIPPED[0]).stat().st_size
    sections = [
        HEADER.format(size=size / 1e6),
        "## Recipe\n\n```json\n" + json.dumps(state["config"], indent=1) + "\n```",
        DATA,
        training_section(args.run, records),
        probe_section(records),
        "## Language modelling on held-out books (paper Table 1, `eval lm`)\n\n"
        f"{len(lm['windows'])} windows, context chunks of {lm['config']['chunk_len']} tokens; "
        "perplexity of the last 512 tokens (full protocol and command: `docs/benchmarks.md`).\n\n"
        + lm_table(lm),
        "\n".join(target_lines(lm)),
    ]
    if args.qa:
        qa = json.loads(args.qa.read_text())
        sections.append("## RAG question answering (`eval qa`)\n\n" + qa_table(qa))
    if args.notes:
        sections.append(args.notes.read_text().strip())
    sections.append(REPRODUCE)
    (DEFAULT_TOKENIZER_DIR / "README.md").write_text("\n\n".join(sections).rstrip() + "\n")
    print(f"wrote {DEFAULT_TOKENIZER_DIR / 'README.md'}")


HEADER = """# Extensible tokenizer for SmolLM2-135M-Instruct

The default extensible tokenizer of extok-rag (arXiv 2401.07793): the first 2 decoder layers of
the frozen SmolLM2-135M-Instruct with LoRA (rank 16) on their projections, plus an output
adapter (standardise → RMSNorm → Linear) that maps their hidden states into the LLM's input
embedding space. A chunk of L tokens becomes L states; strided down-scaling by k keeps every
k-th (ceil(L/k) embeddings), which the frozen LLM reads in place of the chunk's tokens.

Files: `tokenizer.safetensors` ({size:.1f} MB: only the trained tensors — LoRA deltas and the
adapter; the layers themselves are rebuilt from the LLM at load time) and
`tokenizer_config.json` (architecture and the identity of the LLM it was trained for; loading
it next to another LLM is refused). `extok-rag index` and `extok-rag eval` use it by default
with the default LLM; `--tokenizer PATH|untrained` overrides."""

DATA = """## Data

`extok-rag data prepare` (see `docs/data-card.md`): 8.82M training tokens (8,616 sequences of
1,024) of cleaned English prose from 15 Debian documentation and dictionary packages
(debian-reference, debian-handbook, Python, git, PostgreSQL, vim, perl, Rust books, Node.js,
Django, Linux kernel docs, scikit-learn guide, GCIDE, Jargon File, FOLDOC), plus 0.19M held-out
validation tokens. No evaluation book or QA set is in it (a test checks 64-character shingles).
The data is technical documentation and dictionary entries: no fiction, verse or speeches —
which is what the Table-1 books are."""

REPRODUCE = """## Reproduce

From a clean checkout: `bash research/scripts/train_default_checkpoint.sh` (installs if needed,
prepares the data, trains, exports here). The run was trained in three parts on one 2-core CPU
machine, and the script repeats them: steps 0–420 at a constant learning rate (5e-4 LoRA, 1e-3
adapter, 5 warm-up steps); steps 420–615 on a linear decay planned for 1,400 steps; steps 615–1,000
on a linear decay to zero at step 1,000 (the plan was shortened to fit the session). The trainer
resumes exactly (data order and k draws are functions of the step), so the parts give the same
tensors as one uninterrupted run with that schedule. Then `benchmarks/model_card.py --run
<home>/runs/<name> --lm LM.json --qa QA.json` rewrites this card from the run's log and the `eval
lm` / `eval qa` outputs."""


if __name__ == "__main__":
    main()
