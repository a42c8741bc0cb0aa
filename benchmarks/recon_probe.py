"""The trainer's reconstruction probe on checkpoints side by side, with ×1 (every state, no
down-scaling) as the pipeline's ceiling: how much of a paragraph's exact text the LLM reads
back from the tokenizer's states before and after compression.

    .venv/bin/python benchmarks/recon_probe.py NAME=CKPT [NAME=CKPT ...] [--items 48]
        [--ks 1,2,4,8] [--recon-len 64] [--section NAME]

CKPT is a tokenizer checkpoint directory or `shipped`. Items: the first gold paragraph of the
held-out HotpotQA probe items (the same seeded order as the trainer's probe, so its ×2/×4/×8
columns match the run logs), cut to `--recon-len` tokens and repeated back in the ask frame.
Gap closed = (NLL none − NLL ×k) / (NLL none − NLL raw). "Per kept state" is the ×k gap
times k over the ×1 gap: 1/k of the ×1 gap is what embeddings carrying only the token at their
own position would give. Writes section `recon-probe-NAME` of docs/training.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine_line, write_section

from extok_rag.cli.console import quiet_transformers
from extok_rag.config import RuntimeConfig, fastest_dtype
from extok_rag.datasets.training_files import read_answer_probe
from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer
from extok_rag.models.llm import FrozenLLM
from extok_rag.training.answer_probe import ReconstructionProbe
from extok_rag.training.setup import init_path

DOC = Path(__file__).resolve().parent.parent / "docs" / "training.md"


def table(results: dict[str, dict], ks: tuple[int, ...]) -> list[str]:
    lines = [
        "| checkpoint | " + " | ".join(f"gap closed ×{k}" for k in ks) + " | per kept state |",
        "|---|" + "---:|" * (len(ks) + 1),
    ]
    for name, r in results.items():
        gaps = " | ".join(f"{r[f'gap_k{k}']:.1%}" for k in ks)
        per_state = (
            " / ".join(f"×{k} {k * r[f'gap_k{k}'] / r['gap_k1']:.2f}" for k in ks if k > 1)
            if 1 in ks
            else "—"
        )
        lines.append(f"| {name} | {gaps} | {per_state} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoints", nargs="+", help="NAME=CKPT (a directory or 'shipped')")
    parser.add_argument("--items", type=int, default=48)
    parser.add_argument("--ks", default="1,2,4,8")
    parser.add_argument("--recon-len", type=int, default=64)
    parser.add_argument("--section", default="study")
    args = parser.parse_args()
    quiet_transformers()
    ks = tuple(int(k) for k in args.ks.split(","))
    llm = FrozenLLM.load(None, RuntimeConfig(device="auto", dtype=fastest_dtype("cpu")))
    probe = ReconstructionProbe.sample(
        read_answer_probe(), args.items, ks=ks, recon_len=args.recon_len
    )
    results: dict[str, dict] = {}
    for spec in args.checkpoints:
        name, _, path = spec.partition("=")
        tok = ExtensibleTokenizer.from_pretrained(init_path(path), llm)
        probe.method = tok.config.downscale  # read states the way they were trained
        results[name] = probe.run(llm, tok)
        print(name, json.dumps(results[name]), flush=True)
    first = next(iter(results.values()))
    lines = [
        f"## Reconstruction probe: {args.section}",
        "",
        f"`benchmarks/recon_probe.py` — {machine_line()}; {len(probe.items)} held-out HotpotQA "
        f"paragraphs, {args.recon_len} tokens each, repeated back. NLL per token: none "
        f"{first['nll_none']:.3f}, raw {first['nll_raw']:.3f}.",
        "",
        *table(results, ks),
    ]
    body = "\n".join(lines)
    print(body)
    write_section(f"recon-probe-{args.section}", body, DOC)


if __name__ == "__main__":
    main()
