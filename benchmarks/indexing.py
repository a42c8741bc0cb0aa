"""Indexing benchmark: tokens/s of a full `build_index` run against the bare model forwards on
the same chunks, on two corpora of the same text — a few larger files, and many one-paragraph
files (FAQ entries, tickets: the common case) — plus disk bytes per token, peak RSS, and the
chunk-length measurement.

    .venv/bin/python benchmarks/indexing.py [--mb 1.0] [--batch-tokens 16384]

Corpus: the reStructuredText help pages that the Debian `cmake` package installs under
/usr/share/cmake-*/Help (technical prose, ~10 MB), the first --mb MB in path order; the
stdlib's pydoc_data topics (Python's own reference text) when cmake is absent. The small-file
corpus writes each paragraph of at least 200 characters of the same text to its own file.
Writes the `indexing` section of docs/benchmarks.md.
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
from extok_rag.indexes import bytes_per_state, read_manifest
from extok_rag.indexing import IndexModels, IndexSettings, build_index, disk_bytes
from extok_rag.indexing.reading import list_corpus, read_text
from extok_rag.models.defaults import resolve_tokenizer
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


def split_paragraphs(corpus: Path, target: Path, min_chars: int = 200) -> int:
    """One file per paragraph (>= min_chars) of every file of `corpus`; returns the count."""
    target.mkdir(parents=True)
    count = 0
    for f in list_corpus(corpus)[0]:
        for para in read_text(f).split("\n\n"):
            if len(para.strip()) >= min_chars:
                (target / f"p{count:05d}.txt").write_text(para.strip() + "\n")
                count += 1
    return count


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


def run_corpus(corpus: Path, index_dir: Path, models: IndexModels, batch_tokens: int) -> dict:
    """One full `build_index`, then the bare forwards on the same chunks."""
    start = time.perf_counter()
    report = build_index(corpus, index_dir, models, IndexSettings(batch_tokens=batch_tokens))
    index_s = time.perf_counter() - start
    chunker = Chunker(models.llm.tokenizer, ChunkingConfig())
    chunks = [c for f in list_corpus(corpus)[0] for c in chunker.split(f.rel, read_text(f))]
    tok_s, emb_s = bare_forward_seconds(models, chunks, batch_tokens)
    return {
        "report": report,
        "index_s": index_s,
        "tok_s": tok_s,
        "emb_s": emb_s,
        "bytes": sum(p.stat().st_size for p in corpus.rglob("*") if p.is_file()),
        "disk": disk_bytes(index_dir),
    }


def corpus_rows(name: str, r: dict) -> list[str]:
    tokens = r["report"].tokens_written
    bare_tps = tokens / (r["tok_s"] + r["emb_s"])
    index_tps = tokens / r["index_s"]
    counts = r["report"].counts
    return [
        f"| {name}: {counts.documents:,} files, {r['bytes'] / 1e6:.2f} MB, {counts.chunks:,} "
        f"chunks, {tokens:,} tokens | {r['index_s']:.1f} s, **{index_tps:,.0f} tokens/s** | "
        f"{bare_tps:,.0f} tokens/s (tokenizer {r['tok_s']:.1f} s + embedder {r['emb_s']:.1f} s) "
        f"| **{index_tps / bare_tps:.0%}** | {r['disk'] / tokens:,.0f} |"
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=float, default=1.0, help="corpus size in MB")
    parser.add_argument("--batch-tokens", type=int, default=16_384)
    args = parser.parse_args()
    quiet_transformers()
    work = Path(tempfile.mkdtemp(prefix="extok-bench-"))
    source = make_corpus(work / "corpus", args.mb)
    n_small = split_paragraphs(work / "corpus", work / "small")
    llm = FrozenLLM.load(None, RuntimeConfig(device="cpu"))
    # what `extok-rag index` uses by default: the shipped checkpoint (untrained from_llm only
    # where there is none for this LLM)
    models = IndexModels(llm, resolve_tokenizer(None, llm.identity))
    models.tokenizer, models.embedder  # load both before timing  # noqa: B018

    large = run_corpus(work / "corpus", work / "index", models, args.batch_tokens)
    small = run_corpus(work / "small", work / "index-small", models, args.batch_tokens)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tokens = large["report"].tokens_written
    d = llm.hidden_size
    manifest = read_manifest(work / "index")  # the default state encoding (int8 today)
    state_bytes = bytes_per_state(d, manifest.state_encoding)  # one stored state
    overhead = large["disk"] / tokens - state_bytes / manifest.stride
    stride_rows = [
        f"| {s} | {state_bytes / s + overhead:,.0f} | "
        f"{'every k' if s == 1 else f'k multiple of {s}'} |"
        for s in (1, 2, 4, 8)
    ]
    lengths = chunk_length_rows(work / "corpus", llm, models.embedder)
    tok = models.tokenizer
    body = "\n".join(
        [
            "## Indexing",
            "",
            f"`benchmarks/indexing.py --mb {args.mb}` — {machine_line()}.",
            "",
            f"Corpora: {args.mb} MB from {source}, as its files and split into {n_small:,} "
            "one-paragraph files (paragraphs of ≥ 200 characters). Defaults: chunks of 256 "
            f"tokens, stride 2, {str(llm.dtype).removeprefix('torch.')} (`--dtype auto`), the "
            f"{'shipped' if models.tokenizer_path else 'untrained'} "
            f"{tok.config.num_layers}-layer extensible tokenizer. Bare forwards: the "
            "extensible tokenizer and MiniLM on the same chunks in the same sorted batches, "
            "nothing else.",
            "",
            "| corpus | full `build_index` (read, chunk, encode, store, FAISS, manifest) | bare "
            "forwards | indexing / bare (goal ≥ 80%) | disk bytes/token |",
            "|---|---|---|---|---|",
            *corpus_rows("a few files", large),
            *corpus_rows("one paragraph per file", small),
            "",
            f"Peak RSS over both runs: {rss_mb:,.0f} MB.",
            "",
            f"Disk bytes per token by base stride (states: {state_bytes}/s bytes, "
            f"{manifest.state_encoding}, d = {d}; "
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
