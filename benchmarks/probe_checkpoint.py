"""Paired content probe of a tokenizer checkpoint on many held-out sequences.

    .venv/bin/python benchmarks/probe_checkpoint.py CHECKPOINT [--sequences 32] [--name NAME]

Same rows as the training probe (the last 256-token chunk of each validation sequence: no
context, raw context, k=2 / k=16 embeddings of the 3 earlier chunks, own vs another chunk's
embeddings), with per-sequence pairing: the share of sequences where one row beats another and
a bootstrap 95% interval of the perplexity ratio. Writes section `probe-NAME` of
docs/training.md.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine_line, write_section

from extok_rag.cli.console import quiet_transformers
from extok_rag.config import RuntimeConfig, home_dir
from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer
from extok_rag.models.llm import FrozenLLM
from extok_rag.training.probe import ContentProbe, nll_to_ppl
from extok_rag.training.shards import PackedSequences

DOC = Path(__file__).resolve().parent.parent / "docs" / "training.md"
PAIRS = (("k2", "k16"), ("k2", "none"), ("k16", "none"), ("self_k2", "other_k2"))


def paired(a, b, draws: int = 2000) -> tuple[float, float, float]:
    """Share of sequences where a < b (per-token NLL), and a bootstrap 95% interval of
    ppl(a) / ppl(b) over sequences."""
    na, nb = a.nll / a.count, b.nll / b.count
    wins = float((na < nb).float().mean())
    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(0, len(na), (draws, len(na)), generator=gen)
    ratios = (
        (a.nll[idx].sum(1) / a.count[idx].sum(1)) - (b.nll[idx].sum(1) / b.count[idx].sum(1))
    ).exp()
    lo, hi = torch.quantile(ratios.float(), torch.tensor([0.025, 0.975])).tolist()
    return wins, lo, hi


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--sequences", type=int, default=32)
    parser.add_argument("--name", default="final")
    args = parser.parse_args()
    quiet_transformers()
    llm = FrozenLLM.load(None, RuntimeConfig(device="auto", dtype="bfloat16"))
    tok = ExtensibleTokenizer.from_pretrained(args.checkpoint, llm)
    val = PackedSequences(home_dir() / "training-data" / "val.bin", 1024)
    seqs = torch.stack([torch.as_tensor(val[i]) for i in range(args.sequences)]).view(-1, 4, 256)
    losses = ContentProbe(seqs).run_detailed(llm, tok)
    rows = " | ".join(f"{k} {nll_to_ppl(v):.2f}" for k, v in losses.items())
    lines = [
        f"## Paired probe: `{args.checkpoint}` ({args.name})",
        "",
        f"`benchmarks/probe_checkpoint.py` — {machine_line()}; {args.sequences} validation "
        "sequences, perplexity of each one's last 256-token chunk.",
        "",
        f"Perplexities: {rows}.",
        "",
        "| comparison | share of sequences where the first is better | ppl ratio (95% bootstrap) |",
        "|---|---|---|",
    ]
    for a, b in PAIRS:
        wins, lo, hi = paired(losses[a], losses[b])
        ratio = math.exp(float(losses[a].mean() - losses[b].mean()))
        lines.append(f"| {a} vs {b} | {wins:.0%} | {ratio:.3f} [{lo:.3f}, {hi:.3f}] |")
    body = "\n".join(lines)
    write_section(f"probe-{args.name}", body, doc=DOC)
    print(body)


if __name__ == "__main__":
    main()
