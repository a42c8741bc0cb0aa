"""The answer probe on checkpoints side by side: answer NLL gap closed, greedy accuracy, and
paired per-item statistics against a reference checkpoint (v1, the shipped one).

    .venv/bin/python benchmarks/answer_probe.py NAME=CKPT [NAME=CKPT ...] [--items 200]
        [--greedy 48] [--ks 2,4,8] [--reference v1] [--section NAME]

CKPT is a tokenizer checkpoint directory or `shipped`. Items: the held-out HotpotQA probe items
(`answer_probe.jsonl` of `data prepare`), the first N of the same seeded order the trainer's
probe uses; gold paragraphs given none / raw / compressed ×k in the `ask` frame. Greedy
accuracy (an answer contained in 32 greedy tokens, SQuAD normalisation) on the first `--greedy`
items. The control column reads each item's question with the *next* item's gold paragraphs
compressed ×4: a gap closed there is format (how to answer), not content (what the answer is).
Writes section `answer-probe-NAME` of docs/training.md and a JSON beside the log dir.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paired_runs import paired_cell
from report import machine_line, write_section

from extok_rag.cli.console import quiet_transformers
from extok_rag.config import RuntimeConfig, fastest_dtype, home_dir
from extok_rag.datasets.training_files import read_answer_probe
from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer
from extok_rag.models.llm import FrozenLLM
from extok_rag.training.answer_probe import (
    AnswerProbe,
    greedy_accuracy,
    greedy_hits,
    probe_examples,
    summarise,
)
from extok_rag.training.frame import frame_users
from extok_rag.training.objective import ChunkLosses
from extok_rag.training.setup import init_path

DOC = Path(__file__).resolve().parent.parent / "docs" / "training.md"


def per_item(losses: ChunkLosses) -> torch.Tensor:
    return losses.nll / losses.count.clamp(min=1)


def paired(a: ChunkLosses, b: ChunkLosses, draws: int = 2000) -> tuple[float, float, float]:
    """Share of items where a's per-token answer NLL is lower than b's, and a bootstrap 95%
    interval of the mean per-token NLL difference a - b."""
    na, nb = per_item(a), per_item(b)
    wins = float((na < nb).float().mean())
    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(0, len(na), (draws, len(na)), generator=gen)
    diffs = (na[idx] - nb[idx]).mean(dim=1)
    lo, hi = torch.quantile(diffs, torch.tensor([0.025, 0.975])).tolist()
    return wins, lo, hi


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoints", nargs="+", help="NAME=CKPT (a directory or 'shipped')")
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--greedy", type=int, default=48)
    parser.add_argument("--ks", default="2,4,8")
    parser.add_argument("--greedy-ks", default="4", help="ks with greedy accuracy")
    parser.add_argument("--reference", default="v1")
    parser.add_argument("--section", default="study")
    args = parser.parse_args()
    quiet_transformers()
    ks = tuple(int(k) for k in args.ks.split(","))
    greedy_ks = tuple(int(k) for k in args.greedy_ks.split(","))
    llm = FrozenLLM.load(None, RuntimeConfig(device="auto", dtype=fastest_dtype("cpu")))
    items = read_answer_probe()
    probe = AnswerProbe.sample(items, args.items, ks=ks, other_k=4)
    examples = probe_examples(probe.items)[: args.greedy]
    results: dict[str, dict] = {}
    detailed: dict[str, dict[str, ChunkLosses]] = {}
    hits: dict[str, list[bool]] = {}  # greedy ×4 per item, to pair against the reference
    accuracy: dict[str, float] = {
        "none": greedy_accuracy(llm, examples, frame_users(llm, examples, 0)),
        "raw": greedy_accuracy(llm, examples, frame_users(llm, examples, probe.context_len)),
    }
    for spec in args.checkpoints:
        name, _, path = spec.partition("=")
        tok = ExtensibleTokenizer.from_pretrained(init_path(path), llm)
        probe.method = tok.config.downscale  # as the checkpoint was trained
        detailed[name] = probe.run_detailed(llm, tok)
        results[name] = summarise(detailed[name], ks)
        results[name].update(probe.other_summary(llm, tok, results[name]))  # next item's ×4
        for k in greedy_ks:
            users = frame_users(
                llm, examples, probe.context_len, tok, [k] * len(examples), probe.method
            )
            right = greedy_hits(llm, examples, users)
            results[name][f"greedy_k{k}"] = sum(right) / max(1, len(right))
            if k == 4:
                hits[name] = right
        print(name, json.dumps(results[name]), flush=True)
    ref = detailed.get(args.reference)
    pairs = ref is not None and 4 in ks  # the ×4 columns against the reference
    lines = [
        f"## Answer probe: {args.section}",
        "",
        f"`benchmarks/answer_probe.py` — {machine_line()}; {len(probe.items)} held-out HotpotQA "
        f"probe items (gold paragraphs in the ask frame), greedy accuracy on {len(examples)}. "
        f"Answer NLL per token: none {results[next(iter(results))]['nll_none']:.3f}, raw "
        f"{results[next(iter(results))]['nll_raw']:.3f}; greedy accuracy none "
        f"{accuracy['none']:.0%}, raw {accuracy['raw']:.0%}.",
        "",
        "| checkpoint | "
        + " | ".join(f"NLL ×{k} | gap closed ×{k} | greedy ×{k}" for k in ks)
        + " | gap closed ×4, another item's paragraphs"
        + (
            f" | ×4 wins over {args.reference} (Δ NLL 95% CI) | greedy ×4 right only here / "
            f"only {args.reference} (sign test) |"
            if pairs
            else " |"
        ),
        "|---|" + "---:|---:|---:|" * len(ks) + "---:|" + ("---:|---:|" if pairs else ""),
    ]
    for name, r in results.items():
        cells = " | ".join(
            f"{r[f'nll_k{k}']:.3f} | {r[f'gap_k{k}']:.0%} | "
            + (f"{r[f'greedy_k{k}']:.0%}" if k in greedy_ks else "—")
            for k in ks
        )
        extra = ""
        if pairs and name == args.reference:
            extra = " reference | reference |"
        elif pairs:
            wins, lo, hi = paired(detailed[name]["k4"], ref["k4"])
            extra = f" {wins:.0%} ({lo:+.3f}, {hi:+.3f}) |"
            both = name in hits and args.reference in hits
            extra += f" {paired_cell(hits[name], hits[args.reference]) if both else '—'} |"
        lines.append(f"| {name} | {cells} | {r['gap_k4_other']:.0%} |{extra}")
    body = "\n".join(lines)
    write_section(f"answer-probe-{args.section}", body, doc=DOC)
    out = home_dir() / "runs" / f"answer-probe-{args.section}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"results": results, "greedy_baselines": accuracy, "greedy_k4": hits}, indent=2)
    )
    print(body)


if __name__ == "__main__":
    main()
