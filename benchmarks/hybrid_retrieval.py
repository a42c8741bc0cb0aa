"""Retrieval alone, no generation: MiniLM vectors (FAISS, what `ask` uses), LanceDB's own
full-text index (BM25), and the two fused by reciprocal rank, on the `eval qa` questions of
SQuAD and HotpotQA over their indexes (issue 29, item 4).

    .venv/bin/python benchmarks/hybrid_retrieval.py --work-dir W [--states float16]

W is an `eval qa` work folder (<W>/<set>/index or index-int8, built by `eval qa`). The chunk
texts are copied (row id + text) into a scratch LanceDB table with a full-text index, so the
evaluated index is never written. recall@n: the share of a question's gold paragraphs among
the top-n chunks' files (as `eval qa` counts it); "answer in top-n": a normalised gold answer
occurs in the top-n chunks' texts, the ceiling of any mode that reads them. Writes section
`hybrid-retrieval` of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine_line, write_section

from extok_rag.config import RuntimeConfig
from extok_rag.evaluation.qa_data import answer_contained, load_qa_set
from extok_rag.indexes import open_index
from extok_rag.models.embedder import Embedder

DEPTH = 20  # candidates each retriever gives the fusion
RRF_K = 60  # reciprocal rank fusion: score = sum over lists of 1 / (RRF_K + rank)
TOPS = (4, 8)


def text_table(snapshot, scratch: Path):
    """A LanceDB table of the index's (row_id, text) with a BM25 full-text index."""
    import lancedb

    rows = snapshot.table._scan(["row_id", "text", "doc_path"])
    table = lancedb.connect(scratch).create_table("chunks", rows)
    table.create_fts_index("text")
    return table, dict(zip(rows.column("row_id").to_pylist(), rows.to_pylist(), strict=True))


def fts_ids(table, question: str, n: int) -> list[int]:
    try:
        hits = table.search(question, query_type="fts").select(["row_id", "_score"]).limit(n)
        hits = hits.to_list()
    except Exception:  # a question of stop words only: no hit
        return []
    return [int(h["row_id"]) for h in hits]


def fused(lists: list[list[int]], n: int) -> list[int]:
    score: dict[int, float] = {}
    for ranked in lists:
        for rank, row_id in enumerate(ranked):
            score[row_id] = score.get(row_id, 0.0) + 1.0 / (RRF_K + rank + 1)
    return sorted(score, key=lambda r: -score[r])[:n]


def measure(name: str, index_dir: Path, embedder: Embedder, questions: int) -> dict:
    qa = load_qa_set(name, questions, 0)
    snapshot = open_index(index_dir)
    with tempfile.TemporaryDirectory() as scratch:
        table, rows = text_table(snapshot, Path(scratch))
        vectors = embedder.embed([item.question for item in qa.items])
        vec_ids, _ = snapshot.vectors.search(vectors, DEPTH)
        ranked = {"vector": [], "text (BM25)": [], "hybrid (RRF)": []}
        for item, vec in zip(qa.items, vec_ids, strict=True):
            v = [int(i) for i in vec if i >= 0]
            t = fts_ids(table, item.question, DEPTH)
            ranked["vector"].append(v)
            ranked["text (BM25)"].append(t)
            ranked["hybrid (RRF)"].append(fused([v, t], DEPTH))
    out = {}
    for method, lists in ranked.items():
        for n in TOPS:
            recall, ceiling = [], []
            for item, ids in zip(qa.items, lists, strict=True):
                top = [rows[i] for i in ids[:n]]
                found = {r["doc_path"] for r in top}
                recall.append(sum(d in found for d in item.gold_docs) / len(item.gold_docs))
                ceiling.append(answer_contained(" ".join(r["text"] for r in top), item.answers))
            out[(method, n)] = (float(np.mean(recall)), float(np.mean(ceiling)))
    return {"questions": len(qa.items), "chunks": len(rows), "rows": out}


def table_md(name: str, result: dict) -> str:
    lines = [
        f"### {name} ({result['questions']} questions, {result['chunks']:,} chunks)",
        "",
        "| retrieval | " + " | ".join(f"recall@{n} | answer in top-{n}" for n in TOPS) + " |",
        "|---|" + "---:|---:|" * len(TOPS),
    ]
    for method in ("vector", "text (BM25)", "hybrid (RRF)"):
        cells = []
        for n in TOPS:
            recall, ceiling = result["rows"][(method, n)]
            cells += [f"{recall:.1%}", f"{ceiling:.1%}"]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--states", default="float16", choices=("float16", "int8"))
    parser.add_argument("--questions", type=int, default=300)
    args = parser.parse_args()
    embedder = Embedder.load(None, RuntimeConfig(device="cpu"))
    folder = "index" if args.states == "float16" else f"index-{args.states}"
    parts = [
        "## Hybrid retrieval: MiniLM vectors, LanceDB full-text (BM25), fused "
        "(`benchmarks/hybrid_retrieval.py`)",
        f"`.venv/bin/python benchmarks/hybrid_retrieval.py --work-dir {args.work_dir} "
        f"--states {args.states}` — {machine_line()}. The `eval qa` questions (seed 0) over "
        f"each set's `eval qa` index; fusion: reciprocal rank (k = {RRF_K}) over each "
        f"retriever's top {DEPTH}; LanceDB's native FTS with its defaults (English stemming, "
        "stop words removed).",
    ]
    for name in ("squad", "hotpotqa"):
        result = measure(name, args.work_dir / name / folder, embedder, args.questions)
        parts.append(table_md(name, result))
    body = "\n\n".join(parts)
    print(body)
    write_section("hybrid-retrieval", body)


if __name__ == "__main__":
    main()
