"""The GPU training run's measurements, from the files it returned
(research/scripts/device_train.py).

    .venv/bin/python benchmarks/device_run.py NAME DIR [DIR ...] [--no-write]

Each DIR is one call's returned files (summary.json, log.jsonl): the calls of one run, in
order (a resumed call's log holds the whole run). Writes section `device-NAME` of
docs/benchmarks.md: the machine, the time each call took, training steps/s and tokens/s by
objective, the encoding throughput of index-style 256-token chunks, and the probe curve.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

from report import write_section

from extok_rag.training.trainer import failed_probes


def load(run: Path) -> tuple[dict, list[dict]]:
    summary = json.loads((run / "summary.json").read_text())
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line]
    return summary, log


def objective_rows(log: list[dict]) -> list[str]:
    """Median seconds per optimiser step whose micro-steps all drew one objective."""
    by: dict[str, list[dict]] = defaultdict(list)
    for rec in log:
        if "loss" in rec and len(rec["objectives"]) == 1:
            by[next(iter(rec["objectives"]))].append(rec)
    rows = []
    for name in sorted(by):
        recs = by[name]
        step = statistics.median(r["step_s"] for r in recs)
        tokens = statistics.median(r["tokens"] / r["step_s"] for r in recs)
        built = [r["build_s"] / r["step_s"] for r in recs if "build_s" in r]  # logs since 12-05
        host = f"{statistics.median(built):.0%}" if built else "not logged"
        rows.append(f"| {name} | {len(recs)} | {step:.2f} | {tokens:,.0f} | {host} |")
    return rows


def probe_rows(log: list[dict]) -> list[str]:
    rows = []
    seen = set()
    for rec in log:
        ans = rec.get("answer_probe", {})
        if not ans or "error" in ans or rec["step"] in seen:
            continue
        seen.add(rec["step"])
        rec_probe = next(
            (r["recon_probe"] for r in log if r["step"] == rec["step"] and "recon_probe" in r), {}
        )
        content = next((r["probe"] for r in log if r["step"] == rec["step"] and "probe" in r), {})
        ks = sorted(int(k[5:]) for k in ans if re.fullmatch(r"gap_k\d+", k))
        nan = float("nan")
        cells = [" / ".join(f"{ans[f'gap_k{k}']:.0%}" for k in ks)]
        other = ans.get("gap_k4_other")  # logged since session 33
        cells.append(
            "—" if other is None else f"{other:.0%} / {(ans['gap_k4'] - other) * 100:+.1f}"
        )
        cells.append(
            " / ".join(
                f"{ans.get(f'greedy_{k}', nan):.0%}"
                for k in ("none", "raw", *(f"k{k}" for k in ks))
            )
        )
        company = ans.get("greedy_k4_company")  # logged since session 42
        cells.append("—" if company is None else f"{company:.0%} / {ans['greedy_raw_company']:.0%}")
        cells.append(" / ".join(f"{rec_probe.get(f'gap_k{k}', nan):.0%}" for k in ks))
        cells.append(f"{content.get('self_k2', nan):.2f} / {content.get('other_k2', nan):.2f}")
        rows.append(f"| {rec['step']} | " + " | ".join(cells) + " |")
    return rows


KNEE = (0.45, 0.60)  # docs/training.md What next 18: x4 answers arrive between these gaps


def knee_line(log: list[dict]) -> list[str]:
    """The last ×4 reconstruction reading against the knee where repeat-fitted ×4 vectors
    started to be answered from (What next 18)."""
    gaps = [r["recon_probe"]["gap_k4"] for r in log if "gap_k4" in r.get("recon_probe", {})]
    if not gaps:
        return []
    gap = gaps[-1]
    where = "under" if gap < KNEE[0] else "over" if gap > KNEE[1] else "within"
    return [
        f"×4 reconstruction at the last probe: **{gap:.1%} of the gap, {where} the knee** of "
        f"docs/training.md What next 18 ({KNEE[0]:.0%}–{KNEE[1]:.0%}: vectors fitted to repeat "
        "a SQuAD paragraph went from 0.21 to 0.43 of raw text's answers there, each read "
        "alone)."
    ]


def after_blank(lines: list[str]) -> list[str]:
    """Lines set off by a blank line, or nothing when there are none."""
    return ["", *lines] if lines else []


def probe_errors(log: list[dict]) -> list[str]:
    """Probes that raised (`probe_failure` "record"): the run trained on."""
    return [f"- step {step}: {name} failed: {err}" for step, name, err in failed_probes(log)]


def memory_line(summary: dict) -> list[str]:
    """The card's peak memory, when the run recorded it (runs since 2026-12-05)."""
    mem = summary.get("gpu_memory")
    if not mem:
        return []
    return [
        f"Peak GPU memory allocated: {mem['peak_allocated_gib']:.1f} of {mem['total_gib']:.0f} GiB."
    ]


def profile_rows(summary: dict) -> list[str]:
    """Where a micro-step's time went, per objective (runs since 2026-12-05 profile a few
    micro-steps after training: `device_train.profile_micro_steps`)."""
    prof = summary.get("profile")
    if not prof or "error" in prof:
        return [f"Profile: {prof['error']}"] if prof else []
    rows = [
        "Where a micro-step's time goes (torch profiler, after training; means over "
        f"{next(iter(prof.values()))['reps']} micro-steps): the card busy with kernels and "
        "copies against the wall clock, the host building rows, and the op with the most "
        "device time:",
        "",
        "| objective | wall s | card busy s | busy share | host building rows s | top op |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for objective, p in sorted(prof.items()):
        top = p["top"][0] if p["top"] else ["—", 0, 0.0, 0.0]
        # kernel events, else the ops' own device time (which profiler builds list kernels)
        busy = p["device_busy_s"] or p.get("device_time_of_ops_s", 0.0)
        rows.append(
            f"| {objective} | {p['wall_s']:.3f} | {busy:.3f} | "
            f"{busy / p['wall_s']:.0%} | {p['host_build_s']:.3f} | "
            f"{top[0]} ({top[2]:.0f} ms on the card, {top[3]:.0f} ms on the host) |"
        )
    return [*rows, ""]


def phase_lines(summary: dict) -> list[str]:
    """The mixture's phases as trained (a phase set as a share of the budget closed at the
    step its share was spent), where the run had more than one."""
    phases = summary.get("phases") or []  # returned files since 2026-12-06
    if len(phases) < 2:
        return []
    start, parts = 0, []
    for phase in phases:
        weights = ", ".join(f"{n} {w:g}" for n, w in phase["weights"].items())
        share = f" ({phase['share']:.0%} of the budget)" if phase.get("share") else ""
        end = f"steps {start}–{start + phase['steps'] - 1}" if phase["steps"] else f"from {start}"
        parts.append(f"{weights}: {end}{share}")
        start += phase["steps"]
    return ["Phases as trained: " + "; ".join(parts) + ".", ""]


def render(name: str, runs: list[Path]) -> str:
    calls = [load(r) for r in runs]
    summary, log = calls[-1]
    hw, cfg = summary["hardware"], summary["config"]
    train, enc = summary["train"], summary["encode"]
    lines = [
        f"## GPU training run `{name}` (`research/scripts/device_train.sh`, issue 25)",
        "",
        f"`benchmarks/device_run.py {name}` from the returned files of {len(calls)} device "
        f"call(s) — {hw['device']}, host CPU {hw['cpu']} ({hw['cpu_count']} cores), torch "
        f"{hw['torch']}, bf16 autocast; config `research/configs/v3/gpu.json` "
        f"({cfg['tokenizer']['num_layers']} layers, train_mode {cfg['train_mode']}, "
        f"{summary['trainable_parameters']:,} trained parameters, downscale "
        f"{cfg['downscale']}, k from {cfg['k_choices']}; seq_batch {cfg['seq_batch']}, "
        f"frame_rows {cfg['frame_rows']}, grad_accum {cfg['grad_accum']}).",
        "",
        "| call | LLM load (GGUF dequantised there) | training s | steps | whole call s |",
        "|---|---:|---:|---:|---:|",
    ]
    previous = 0
    for i, (s, _log) in enumerate(calls, start=1):
        t = s["train"]
        lines.append(
            f"| {i} | {s['llm_load_s']:.1f} s | {t['train_s']:.0f} (run total) | "
            f"{previous} → {t['last_step']} | {s['total_s']:.0f} |"
        )
        previous = t["last_step"]
    lines += [
        "",
        *phase_lines(summary),
        f"Training: **{train['steps_per_s']:.2f} optimiser steps/s**, "
        f"**{train['predicted_tokens_per_s']:,.0f} predicted tokens/s** (tokens scored by the "
        "loss; the encoder and the LLM read several times more), over "
        f"{train['steps']} steps and {train['train_s']:.0f} s.",
        *memory_line(summary),
        "",
        "Per objective (optimiser steps that drew one objective in all their micro-steps):",
        "",
        "| objective | steps | median s/step | median predicted tokens/s | host building "
        "rows, median share of a step |",
        "|---|---:|---:|---:|---:|",
        *objective_rows(log),
        "",
        *profile_rows(summary),
        f"Index-style encoding (the trained tokenizer, {enc['batch']} chunks × "
        f"{enc['chunk_len']} tokens per batch, bf16, no reading or storing): "
        f"**{enc['chunks_per_s']:,.0f} chunks/s, {enc['tokens_per_s']:,.0f} tokens/s** "
        f"({enc['batch_s'] * 1000:.1f} ms per batch).",
        "",
        "Probes during the run (96 held-out HotpotQA items; k = "
        f"{', '.join(str(k) for k in cfg['answer_probe_ks'])}): answer gap closed, "
        "reconstruction gap closed (128 tokens), and the content probe's perplexity of a chunk "
        "after its own / another chunk's ×2 embeddings:",
        "",
        "| step | answer gap closed | ×4 with another item's paragraphs / content (own − "
        "other, points) | greedy accuracy none / raw / ×k | greedy ×4 / raw beside the next "
        "item's paragraphs | reconstruction gap closed | self / other ×2 ppl |",
        "|---:|---|---|---|---|---|---|",
        *probe_rows(log),
        *after_blank(knee_line(log)),
        *after_blank(probe_errors(log)),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name")
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    body = render(args.name, args.runs)
    print(body)
    if not args.no_write:
        write_section(f"device-{args.name}", body)


if __name__ == "__main__":
    main()
