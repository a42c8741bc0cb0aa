"""Indexing benchmark: tokens/s of a full `build_index` run against the bare model forwards on
the same chunks, disk bytes per token, peak RSS, and the chunk-length measurement.

    .venv/bin/python benchmarks/indexing.py [--mb 2.0] [--batch-tokens 16384]

Corpus: the reStructuredText help pages that the Debian `cmake` package installs under
/usr/share/cmake-*/Help (technical prose, ~10 MB), the first --mb MB in path order; the
stdlib's pydoc_data topics (Python's own reference text) when cmake is absent. Writes the
`indexing` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine_line, write_section

from extok_rag.chunking import Chunker, ChunkingConfig
from extok_rag.cli.console import quiet_transformers
from extok_rag.config import RuntimeConfig
from extok_rag.indexing import IndexModels, IndexSettings, build_index, disk_bytes
from extok_rag.indexing.reading import list_corpus, read_text
from extok_rag.models.embedder import length_batches
from extok_rag.models.llm import FrozenLLM


def make_corpus(target: Path, megabytes: float) -> str:
    """Copy about `megabytes` of package-provided text into `target`; returns its source."""
    helps = sorted(Path("/usr/share").glob("cmake-*/Help"))
    budget = int(megabytes * 1e6)
    target.mkdir(parents=True)
    if helps:
        for path in sorted(helps[0].rglob("*.rst")):
            if budget <= 0:
                break
            dest = target / path.relative_to(helps[0])
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
            budget -= path.stat().st_size
        return f"{helps[0]} (*.rst, Debian cmake package)"
    import pydoc_data.topics as topics

    for name, text in sorted(topics.topics.items()):
        if budget <= 0:
            break
        (target / f"{name}.txt").write_text(text)
        budget -= len(text.encode())
    return "Python stdlib pydoc_data.topics"


def chunk_length_rows(corpus: Path, llm, embedder) -> list[str]:
    """For each chunk length: how much of a chunk all-MiniLM-L6-v2 (256 word pieces) reads."""
    texts = [read_text(f) for f in list_corpus(corpus)[0]]
    rows = []
    for n in (128, 192, 256, 384, 512):
        chunker = Chunker(llm.tokenizer, ChunkingConfig(chunk_tokens=n))
        chunks = [c for i, t in enumerate(texts) for c in chunker.split(str(i), t)]
        pieces = embedder.count_tokens([c.text for c in chunks])
        whole = sum(p <= embedder.max_seq_length for p in pieces) / len(pieces)
        seen = sum(min(p, embedder.max_seq_length) for p in pieces) / sum(pieces)
        ratio = sum(pieces) / sum(c.n_tokens for c in chunks)
        rows.append(f"| {n} | {len(chunks):,} | {ratio:.2f} | {whole:.1%} | {seen:.1%} |")
    return rows


@torch.inference_mode()
def bare_forward_seconds(models: IndexModels, chunks, batch_tokens: int) -> tuple[float, float]:
    """Seconds of the two models' forwards alone, on the same sorted batches as the indexer."""
    order = sorted(range(len(chunks)), key=lambda i: chunks[i].n_tokens)
    start = time.perf_counter()
    for batch in length_batches([chunks[i].n_tokens for i in order], batch_tokens):
        models.tokenizer.encode([torch.from_numpy(chunks[order[j]].token_ids) for j in batch])
    tokenizer_s = time.perf_counter() - start
    start = time.perf_counter()
    models.embedder.embed([c.text for c in chunks], batch_tokens)
    return tokenizer_s, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=float, default=2.0, help="corpus size in MB")
    parser.add_argument("--batch-tokens", type=int, default=16_384)
    args = parser.parse_args()
    quiet_transformers()
    work = Path(tempfile.mkdtemp(prefix="extok-bench-"))
    source = make_corpus(work / "corpus", args.mb)
    corpus_bytes = sum(p.stat().st_size for p in (work / "corpus").rglob("*") if p.is_file())
    llm = FrozenLLM.load(None, RuntimeConfig(device="cpu"))
    models = IndexModels(llm)
    settings = IndexSettings(batch_tokens=args.batch_tokens)
    models.tokenizer, models.embedder  # load both before timing  # noqa: B018

    start = time.perf_counter()
    report = build_index(work / "corpus", work / "index", models, settings)
    index_s = time.perf_counter() - start
    tokens = report.tokens_written
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    chunker = Chunker(llm.tokenizer, ChunkingConfig())
    chunks = [
        c for f in list_corpus(work / "corpus")[0] for c in chunker.split(f.rel, read_text(f))
    ]
    tok_s, emb_s = bare_forward_seconds(models, chunks, args.batch_tokens)
    bare_tps = tokens / (tok_s + emb_s)
    index_tps = tokens / index_s
    on_disk = disk_bytes(work / "index")
    d = llm.hidden_size
    states_per_token = 2 * d / 2  # float16, stride 2
    overhead = on_disk / tokens - states_per_token
    stride_rows = [
        f"| {s} | {2 * d / s + overhead:,.0f} | {'every k' if s == 1 else f'k multiple of {s}'} |"
        for s in (1, 2, 4, 8)
    ]
    lengths = chunk_length_rows(work / "corpus", llm, models.embedder)
    body = "\n".join(
        [
            "## Indexing",
            "",
            f"`benchmarks/indexing.py --mb {args.mb}` — {machine_line()}.",
            "",
            f"Corpus: {corpus_bytes / 1e6:.2f} MB from {source}; {report.counts.documents} "
            f"documents, {report.counts.chunks:,} chunks, {tokens:,} SmolLM2 tokens. Defaults: "
            "chunks of 256 tokens, stride 2, bf16, untrained 8-layer extensible tokenizer.",
            "",
            "| measure | value |",
            "|---|---|",
            f"| full `build_index` (read, chunk, encode, store, FAISS, manifest) | "
            f"{index_s:.1f} s, **{index_tps:,.0f} tokens/s** |",
            f"| bare forwards on the same chunks (tokenizer {tok_s:.1f} s + embedder "
            f"{emb_s:.1f} s) | {bare_tps:,.0f} tokens/s |",
            f"| indexing / bare forwards | **{index_tps / bare_tps:.0%}** (goal ≥ 80%) |",
            f"| indexing / extensible-tokenizer forward alone | {tok_s / index_s:.0%} |",
            f"| disk | {on_disk / 1e6:.1f} MB, **{on_disk / tokens:,.0f} bytes/token** |",
            f"| peak RSS | {rss_mb:,.0f} MB |",
            "",
            f"Disk bytes per token by base stride (states: 2·d/s = {2 * d}/s bytes, d = {d}; "
            f"the rest — text, vectors, FAISS, Lance metadata — measured: {overhead:.0f}):",
            "",
            "| stride s | bytes/token | k possible at query time |",
            "|---|---|---|",
            *stride_rows,
            "",
            "Chunk length (LLM tokens) against what all-MiniLM-L6-v2 (256 word pieces) reads:",
            "",
            "| chunk tokens | chunks | word pieces per LLM token | chunks read whole | text read |",
            "|---|---|---|---|---|",
            *lengths,
        ]
    )
    print(body)
    write_section("indexing", body)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
