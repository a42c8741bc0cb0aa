"""Ray engine benchmark: tokens/s of `build_index` with the Ray engine (`--engine ray`) on a
local Ray instance with 1 and 2 CPU encoder actors, against the local engine, on the corpus
of benchmarks/indexing.py (`make_corpus`: cmake's .rst help, else pydoc topics).

    .venv/bin/python benchmarks/ray_indexing.py [--mb 0.5] [--workers 1,2] [--no-write]
    .venv/bin/python benchmarks/ray_indexing.py --smoke --no-write   # tiny random models

The Ray instance gets every CPU of the machine; with w actors each actor runs
cpus // w torch threads, so 1 actor uses the cores as the local engine does (run without
OMP_NUM_THREADS, so that the local engine's torch uses them all too) and the rows compare the
engines' overheads; 2 actors trade threads for model copies. Each run builds a
fresh index; its time includes what the run loads (local: the extensible tokenizer and the
embedder, the LLM already loaded by the driver; Ray: each actor loads LLM, tokenizer and
embedder) but not the Ray instance's start-up, reported apart. Each Ray index is compared
with the local one row by row (ids, texts, states and vectors bitwise).

`--smoke` uses tiny random models (the test suite's, from tests/conftest.py) on a 50 KB
corpus: it checks that the benchmark runs, its numbers mean nothing. Writes the
`ray-indexing` section of docs/benchmarks.md unless --no-write (or --smoke).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from indexing import make_corpus
from report import machine_line, write_section

from extok_rag.cli.console import quiet_transformers
from extok_rag.config import RuntimeConfig
from extok_rag.indexing import IndexModels, IndexSettings, build_index, open_index
from extok_rag.integrations.ray_index import RayEngine, WorkerModels, ray_session, require_ray
from extok_rag.models.defaults import resolve_tokenizer
from extok_rag.models.llm import FrozenLLM


def smoke_models(folder: Path) -> tuple[Path, Path]:
    """The test suite's tiny random LLM and embedder, saved under `folder`."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from conftest import save_tiny_embedder, tiny_llama, tiny_tokenizer

    tiny_llama().save_pretrained(folder / "llm")
    tiny_tokenizer().save_pretrained(folder / "llm")
    return folder / "llm", save_tiny_embedder(folder / "embedder")


def rows(index_dir: Path) -> list[tuple]:
    """Every row of the committed table in physical order, states and vectors as bytes."""
    snap = open_index(index_dir)
    stored = snap.table.fetch(snap.table.vectors()[0])
    return [(c.row_id, c.chunk_id, c.text, c.states.tobytes(), c.vector.tobytes()) for c in stored]


def timed_build(corpus: Path, index_dir: Path, models: IndexModels, settings, engine=None):
    start = time.perf_counter()
    report = build_index(corpus, index_dir, models, settings, engine=engine)
    return report, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=float, default=0.5, help="corpus size in MB")
    parser.add_argument("--workers", default="1,2", help="Ray actor counts to run")
    parser.add_argument("--batch-tokens", type=int, default=16_384)
    parser.add_argument("--smoke", action="store_true", help="tiny random models, 50 KB")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    require_ray()
    quiet_transformers()
    work = Path(tempfile.mkdtemp(prefix="extok-ray-bench-"))
    mb = 0.05 if args.smoke else args.mb
    source = make_corpus(work / "corpus", mb)
    if args.smoke:
        llm_dir, embedder_dir = smoke_models(work / "models")
        llm = FrozenLLM.load(llm_dir, RuntimeConfig(device="cpu", dtype="float32"))
        tokenizer_path = None
    else:
        llm_dir, embedder_dir = None, None
        llm = FrozenLLM.load(None, RuntimeConfig(device="cpu"))
        tokenizer_path = resolve_tokenizer(None, llm.identity)
    dtype = str(llm.dtype).removeprefix("torch.")
    settings = IndexSettings(batch_tokens=args.batch_tokens)
    worker_models = WorkerModels(
        str(llm_dir) if llm_dir else None,
        str(tokenizer_path) if tokenizer_path else None,
        str(embedder_dir) if embedder_dir else None,
        dtype=dtype,
    )

    def fresh_models() -> IndexModels:
        return IndexModels(llm, tokenizer_path, embedder_dir)

    local, local_s = timed_build(work / "corpus", work / "local", fresh_models(), settings)
    tokens = local.tokens_written
    baseline = rows(work / "local")
    cpus = os.cpu_count() or 1
    threads = torch.get_num_threads()
    table = [
        f"| local (one process) | 1 × {threads} | {local_s:.1f} | "
        f"**{tokens / local_s:,.0f}** | 100% | — |"
    ]
    starts = []
    for workers in (int(w) for w in args.workers.split(",")):
        with ExitStack() as session:
            start = time.perf_counter()
            session.enter_context(ray_session(None, cpus))  # the engine uses this instance
            starts.append(time.perf_counter() - start)
            engine = RayEngine(worker_models, workers=workers, device="cpu")
            index_dir = work / f"ray-{workers}"
            report, seconds = timed_build(
                work / "corpus", index_dir, fresh_models(), settings, engine=engine
            )
        same = "yes" if rows(index_dir) == baseline else "**no**"
        threads = max(1, cpus // workers)
        table.append(
            f"| ray, {workers} CPU actor{'s' * (workers > 1)} | {workers} × {threads} | "
            f"{seconds:.1f} | **{report.tokens_written / seconds:,.0f}** | "
            f"{local_s / seconds:.0%} | {same} |"
        )
    counts = local.counts
    command = "--smoke --no-write" if args.smoke else f"--mb {args.mb} --workers {args.workers}"
    body = "\n".join(
        [
            "## Indexing with Ray (`--engine ray`)",
            "",
            f"`benchmarks/ray_indexing.py {command}` — {machine_line()}.",
            "",
            f"Corpus: {mb} MB from {source}: {counts.documents:,} files, {counts.chunks:,} "
            f"chunks, {tokens:,} tokens; {dtype}, chunks of 256 tokens, stride 2"
            + (", tiny random models (smoke run: the numbers mean nothing)." if args.smoke else ".")
            + f" A local Ray instance with {cpus} CPUs (start-up "
            f"{', '.join(f'{s:.1f}' for s in starts)} s, not counted); each run includes the "
            "model loading it does (Ray: every actor loads the LLM, tokenizer and embedder).",
            "",
            "| engine | actors × torch threads | seconds | tokens/s | speed vs local | rows "
            "bitwise equal to local |",
            "|---|---|---|---|---|---|",
            *table,
        ]
    )
    print(body)
    if not (args.no_write or args.smoke):
        write_section("ray-indexing", body)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
