"""Probe for query-aware expansion, no generation: how often the spans read raw hold a gold
answer, by scorer and budget share, on SQuAD questions that are NOT in any `eval qa` draw of
300 (so the scorer is picked without looking at the evaluation questions).

    .venv/bin/python benchmarks/expand_probe.py [--questions 300] [--shares 0.25,0.35,0.5]

Uses the `eval qa` SQuAD index (run `extok-rag eval qa --sets squad` once to build it): top-4
retrieval, then for each share of the question's raw top-4 positions, the spans `expand` and
`spans` would read raw. "answer in raw spans" = a normalised gold answer occurs in them (the
same containment as eval qa's accuracy); "in top-4" is the ceiling (the answer is somewhere in
the retrieved chunks). Writes section `expand-probe` of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine_line, write_section

from extok_rag import expansion, query_budget
from extok_rag.cli.console import quiet_transformers
from extok_rag.config import AskConfig, RuntimeConfig, home_dir
from extok_rag.datasets.qa_splits import EVAL_DRAWS
from extok_rag.evaluation.qa_data import answer_contained, load_qa_set
from extok_rag.expansion import SCORERS
from extok_rag.indexing import open_index
from extok_rag.models.embedder import Embedder
from extok_rag.models.llm import FrozenLLM
from extok_rag.query import build_prompt, retrieve

PROBE_SEED = 97  # not an eval draw seed


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


def probe_items(n: int):
    """SQuAD questions of another draw, minus every question of every eval draw."""
    held = {item.qid for d in EVAL_DRAWS for item in load_qa_set("squad", d[1], d[0]).items}
    items = [i for i in load_qa_set("squad", 5928, PROBE_SEED).items if i.qid not in held]
    return items[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=300)
    parser.add_argument("--shares", default="0.25,0.35,0.5")
    args = parser.parse_args()
    shares = [float(x) for x in args.shares.split(",")]
    quiet_transformers()
    cache_minilm_scores()
    runtime = RuntimeConfig(device="cpu")
    llm = FrozenLLM.load(None, runtime)
    embedder = Embedder.load(None, runtime)
    snapshot = open_index(home_dir() / "eval-qa" / "squad" / "index")
    stride = snapshot.manifest.stride
    items = probe_items(args.questions)
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
    n = len(items)
    lines = [
        "| rows read raw | scorer | " + " | ".join(f"share {s}" for s in shares) + " |",
        "|---|---|" + "---:|" * len(shares),
    ]
    for mode in ("expand", "spans"):
        for scorer in SCORERS:
            cells = [f"{100 * hits[(mode, scorer, s)] / n:.1f}%" for s in shares]
            lines.append(f"| {mode} | {scorer} | " + " | ".join(cells) + " |")
    body = "\n\n".join(
        [
            "## Expansion probe: is the answer in the spans read raw?",
            f"`benchmarks/expand_probe.py --questions {args.questions} --shares {args.shares}` — "
            f"{machine_line()}.",
            f"{n} SQuAD dev questions of draw seed {PROBE_SEED}, none of them in an eval qa draw "
            "(seeds 0-4, up to 1,000 questions); "
            "top-4 retrieval over the eval qa SQuAD index. The answer is somewhere in the top-4 "
            f"chunks for {100 * ceiling / n:.1f}% of them (the ceiling). Share = the budget as a "
            "share of the question's raw top-4 prompt positions.",
            "\n".join(lines),
        ]
    )
    print(body)
    write_section("expand-probe", body)


if __name__ == "__main__":
    main()
