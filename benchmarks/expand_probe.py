"""Probe for query-aware expansion, no generation: how often the spans read raw hold a gold
answer, by scorer and budget share, on SQuAD or HotpotQA questions that are NOT in any
`eval qa` draw (so the scorer is picked without looking at the evaluation questions).

    .venv/bin/python benchmarks/expand_probe.py [--questions 300] [--shares 0.25,0.35,0.5]
    E=".venv/bin/extok-rag eval qa --sets hotpotqa --seed 97 --questions 440 --rows none"
    $E --states float16 --work-dir W   # the probe draw's own corpus and index
    .venv/bin/python benchmarks/expand_probe.py --set hotpotqa --draw 440 \
        --index W/hotpotqa/index --questions 200

SQuAD uses the `eval qa` SQuAD index (run `extok-rag eval qa --sets squad` once to build it).
A HotpotQA question's corpus is its own ten paragraphs, so the probe draw needs its own index,
built by `eval qa` on the probe seed and size (`--draw`). Top-4 retrieval, then for each share
of the question's raw top-4 positions, the spans `expand` and `spans` would read raw. "answer in
raw spans" = a normalised gold answer occurs in them (the same containment as eval qa's
accuracy); "in top-4" is the ceiling (the answer is somewhere in the retrieved chunks). Writes
section `expand-probe` (SQuAD) or `expand-probe-hotpotqa` of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine_line, write_section

from extok_rag import spans as expansion
from extok_rag.ask import budget as query_budget
from extok_rag.ask.build import build_prompt
from extok_rag.ask.retrieval import retrieve
from extok_rag.cli.console import quiet_transformers
from extok_rag.config import AskConfig, RuntimeConfig, home_dir
from extok_rag.datasets.qa_splits import EVAL_DRAWS
from extok_rag.evaluation.qa_data import answer_contained, load_qa_set
from extok_rag.indexing import open_index
from extok_rag.models.embedder import Embedder
from extok_rag.models.llm import FrozenLLM
from extok_rag.spans import SCORERS
from extok_rag.training.selector import SPAN_PROBE_SEED

PROBE_SEED = SPAN_PROBE_SEED  # not an eval draw seed; held out of the learned scorer's training


def cache_minilm_scores() -> None:
    """The spans' MiniLM and attention scores depend on the question and the chunks only:
    compute them once per question, not once per (mode, scorer, share)."""
    real = expansion.minilm_scores
    cache: dict = {}

    def cached(embedder, question, spans):
        key = (question, tuple(s.text for s in spans))
        if key not in cache:
            cache.clear()
            cache[key] = real(embedder, question, spans)
        return cache[key]

    expansion.minilm_scores = cached
    real_attention = query_budget.attention_scores
    seen: dict = {}

    def cached_attention(llm, question, chunks, spans, headers, stride):
        key = (question, tuple(s.text for s in spans))
        if key not in seen:
            seen.clear()
            seen[key] = real_attention(llm, question, chunks, spans, headers, stride)
        return seen[key]

    query_budget.attention_scores = cached_attention


def probe_items(name: str, draw: int, n: int):
    """Questions of another draw, minus every question of every eval draw."""
    held = {item.qid for d in EVAL_DRAWS for item in load_qa_set(name, d[1], d[0]).items}
    items = [i for i in load_qa_set(name, draw, PROBE_SEED).items if i.qid not in held]
    return items[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=300)
    parser.add_argument("--shares", default="0.25,0.35,0.5")
    parser.add_argument("--set", default="squad", choices=("squad", "hotpotqa"))
    parser.add_argument("--index", type=Path, help="Default: the eval qa index of the set.")
    parser.add_argument(
        "--draw", type=int, default=5928, help="Questions drawn before the eval ones go out."
    )
    args = parser.parse_args()
    shares = [float(x) for x in args.shares.split(",")]
    quiet_transformers()
    cache_minilm_scores()
    runtime = RuntimeConfig(device="cpu")
    llm = FrozenLLM.load(None, runtime)
    embedder = Embedder.load(None, runtime)
    snapshot = open_index(args.index or home_dir() / "eval-qa" / args.set / "index")
    stride = snapshot.manifest.stride
    items = probe_items(args.set, args.draw, args.questions)
    hits = {
        key: 0
        for key in [(m, s, sh) for m in ("expand", "spans") for s in SCORERS for sh in shares]
    }
    positions = {key: [] for key in hits}
    ceiling = 0
    for item in items:
        chunks = retrieve(snapshot, embedder, item.question, 4)
        ceiling += answer_contained(" ".join(c.text for c in chunks), item.answers)
        raw = build_prompt(llm, item.question, chunks, AskConfig(mode="raw"), stride, 32)
        for mode, scorer, share in hits:
            cfg = AskConfig(mode=mode, budget=round(share * raw.positions), scorer=scorer)  # type: ignore[arg-type]
            prompt = build_prompt(llm, item.question, chunks, cfg, stride, 32, embedder)
            text = " ".join(s.text for s in prompt.expanded)
            hits[(mode, scorer, share)] += answer_contained(text, item.answers)
            positions[(mode, scorer, share)].append(prompt.positions / raw.positions)
    body = report(args, len(items), ceiling, hits)
    print(body)
    write_section("expand-probe" if args.set == "squad" else f"expand-probe-{args.set}", body)


def report(args, n: int, ceiling: int, hits: dict) -> str:
    shares = [float(x) for x in args.shares.split(",")]
    lines = [
        "| rows read raw | scorer | " + " | ".join(f"share {s}" for s in shares) + " |",
        "|---|---|" + "---:|" * len(shares),
    ]
    for mode in ("expand", "spans"):
        for scorer in SCORERS:
            cells = [f"{100 * hits[(mode, scorer, s)] / n:.1f}%" for s in shares]
            lines.append(f"| {mode} | {scorer} | " + " | ".join(cells) + " |")
    name = {"squad": "SQuAD", "hotpotqa": "HotpotQA"}[args.set]
    where = "the eval qa SQuAD index" if args.set == "squad" else "the probe draw's own index"
    options = f"--set {args.set} --draw {args.draw} " if args.set != "squad" else ""
    return "\n\n".join(
        [
            f"## Expansion probe: is the answer in the spans read raw? ({name})",
            f"`benchmarks/expand_probe.py {options}--questions {args.questions} "
            f"--shares {args.shares}` — {machine_line()}.",
            f"{n} {name} dev questions of draw seed {PROBE_SEED}, none of them in an eval qa "
            f"draw (seeds 0-4, up to 1,000 questions); top-4 retrieval over {where}. The "
            f"answer is somewhere in the top-4 chunks for {100 * ceiling / n:.1f}% of them (the "
            "ceiling). Share = the budget as a share of the question's raw top-4 prompt positions.",
            "\n".join(lines),
        ]
    )


if __name__ == "__main__":
    main()
