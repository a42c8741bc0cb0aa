"""An index of a tokenizer that pools queries (stride 1, its states before the held-back layer)
against a mean index (stride 2): disk, read-time pooling, int8 against exact states, answers.

    H=~/.cache/extok-rag; R=$H/runs; O=$H/query-pool-index
    for s in float32 int8; do extok-rag eval lm --lengths 2048 --ks 4 --windows 8 \
        --chunk-len 256 --no-untrained --states $s --tokenizer $R/v3s-d8-full-query-pool/export \
        --out $O/lm-2k-$s.json; done
    for n in query-pool again; do extok-rag eval qa --sets squad --questions 100 --ks 4 \
        --budget-ks '' --expand-budgets 0.35 --latency-questions 10 --batch-size 16 \
        --rows compressed,expand --states int8 --tokenizer $R/v3s-d8-full-$n/export \
        --work-dir $O/work-$n --out $O/qa-$n.json --no-write-docs; done
    .venv/bin/python benchmarks/query_pool_index.py [--reads 40]

The two checkpoints are the study's paired 20-CPU-minute runs (same batches): pooled queries
(`d8-full-query-pool`) and mean pooling (`d8-full-again`). Disk: `extok-rag info` of the two
SQuAD indexes. Read-time pooling: `--reads` draws of 4 rows (an `ask` at top-4), each read at
×4 from both indexes alternately (`chunk_embeddings`, the pooling `ask` does; the query-pool
index runs the held-back layer and the adapter), median ms per draw. int8 against exact: (d)
×4 at 2K on the same 8 windows, states as encoded (float32) and round-tripped through int8.
Answers: `eval qa` on the same 100 SQuAD questions, paired. Writes section `query-pool-index`
of docs/benchmarks.md (`--no-write`: print only).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paired_runs import lm_rows, qa_rows
from report import machine_line, write_section

from extok_rag.config import home_dir

HOME = home_dir() / "query-pool-index"
RUNS = {"mean": "again", "query_pool": "query-pool"}  # label -> work-dir / run suffix


def index_dir(label: str) -> Path:
    return HOME / f"work-{RUNS[label]}" / "squad" / "index-int8"


def disk_rows() -> list[str]:
    from extok_rag.cli.index_cmd import index_facts
    from extok_rag.indexes import open_index

    lines = []
    for label in RUNS:
        facts = index_facts(index_dir(label), open_index(index_dir(label)))
        lines.append(
            f"| {label} | {facts['stride']} | {facts['state_encoding']} | "
            f"{facts['state_bytes_per_token']:.0f} | {facts['bytes_per_token']:.0f} | "
            f"{facts['bytes_on_disk'] / 2**20:.0f} MiB |"
        )
    return lines


def read_times(reads: int) -> dict[str, float]:
    """Median ms to pool 4 random rows at ×4, per index, the two alternating."""
    import numpy as np
    import torch

    from extok_rag.ask.pooling import snapshot_pooling
    from extok_rag.ask.retrieval import Retrieved, chunk_embeddings
    from extok_rag.config import RuntimeConfig
    from extok_rag.indexes import open_index
    from extok_rag.models.llm import FrozenLLM

    llm = FrozenLLM.load(None, RuntimeConfig())
    opened = {}
    for label in RUNS:
        snapshot = open_index(index_dir(label))
        opened[label] = (snapshot, snapshot_pooling(snapshot, llm))
    ids = opened["mean"][0].table.vectors()[0]
    rng = np.random.default_rng(0)
    times: dict[str, list[float]] = {label: [] for label in RUNS}
    for i in range(reads + 1):  # the first draw warms up
        draw = [int(x) for x in rng.choice(ids, 4, replace=False)]
        for label in RUNS if i % 2 else reversed(RUNS):
            snapshot, pooling = opened[label]
            rows = snapshot.table.fetch(draw)
            chunks = [
                Retrieved(r.row_id, 0.0, r.doc_path, r.text, r.n_tokens, r.states, pooling)
                for r in rows
            ]
            start = time.perf_counter()
            with torch.inference_mode():
                for c in chunks:
                    chunk_embeddings(c, 4, snapshot.manifest.stride)
            if i:
                times[label].append(1000 * (time.perf_counter() - start))
    return {label: statistics.median(t) for label, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reads", type=int, default=40)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    load = lambda name: json.loads((HOME / name).read_text())  # noqa: E731
    ms = read_times(args.reads)
    body = [
        "## An index of pooled queries (stride 1) against a mean index (stride 2)",
        "",
        f"`.venv/bin/python benchmarks/query_pool_index.py --reads {args.reads}` — "
        f"{machine_line()}.",
        "",
        "The study's paired 20-CPU-minute checkpoints (same batches): pooled queries "
        "(`d8-full-query-pool`) and mean pooling (`d8-full-again`); SQuAD's 1,204 paragraphs "
        "indexed by each (int8). Pooling: 4 random rows read at ×4 from both indexes "
        f"alternately, {args.reads} draws, median.",
        "",
        "| index | stride | states | state bytes / token | bytes / token | on disk |",
        "|---|---:|---|---:|---:|---:|",
        *disk_rows(),
        "",
        "| read-time pooling of 4 rows at ×4 | mean | query_pool |",
        "|---|---:|---:|",
        f"| median ms | {ms['mean']:.1f} | {ms['query_pool']:.1f} |",
        "",
        "(d) ×4 at 2K, pooled-query checkpoint, states as encoded against int8 "
        "(float16 gives float32's perplexity exactly):",
        "",
        "| T | row | windows | ppl float32 | ppl int8 | change | int8's NLL higher |",
        "|---:|---|---:|---:|---:|---:|---:|",
        *lm_rows(load("lm-2k-float32.json"), load("lm-2k-int8.json")),
        "",
        "`eval qa`, 100 SQuAD questions, int8 indexes, paired (20-CPU-minute checkpoints: "
        "neither carries answers; this checks the read path end to end):",
        "",
        "| set | row | questions | none / raw | mean | query_pool | right only mean / only "
        "query_pool | sign test p | same answer |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        *qa_rows(load("qa-again.json"), load("qa-query-pool.json"), ("extok", "expand")),
    ]
    text = "\n".join(body)
    print(text)
    if not args.no_write:
        write_section("query-pool-index", text)


if __name__ == "__main__":
    main()
