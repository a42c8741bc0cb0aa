"""Storage benchmark: `ChunkTable.fetch` latency and reader memory against table size, with
and without the row-id index and compaction; the cost of compaction itself.

    .venv/bin/python benchmarks/storage.py [--sizes 1000,10000,100000] [--states 8]

Synthetic rows, no models: SmolLM2's state width (d = 576), all-MiniLM-L6-v2's vector width
(384), `--states` float16 states per chunk (real 256-token chunks at stride 2 have 128; fewer
keep the 100K table at ~1 GB), written in commits of 5,000 rows like an index run's. Each
measurement runs in a fresh process that opens the table at one version and fetches 4 random
row ids (an `ask` with --top-n 4) 200 times: median and 95th-percentile latency, and the
process's peak RSS (FAISS is not loaded: its flat index holds 1.5 KB per chunk by design).
Writes the `storage` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from extok_rag.indexes.table import ChunkRecord, ChunkTable

DIM, D = 384, 576
COMMIT_ROWS = 5_000
FETCHES = 200


def records(rng: np.random.Generator, start: int, n: int, n_states: int) -> list[ChunkRecord]:
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    states = rng.standard_normal((n, n_states, D)).astype(np.float16)
    return [
        ChunkRecord(
            chunk_id=f"doc{i // 8}.md#{i % 8}@{i:016x}",
            doc_path=f"doc{i // 8}.md",
            doc_hash=f"{i // 8:064x}",
            content_hash=f"{i:016x}",
            position=i % 8,
            text="synthetic chunk text " * 60,  # ~1.2 KB, like 256 tokens of prose
            n_tokens=2 * n_states,
            vector=vectors[j],
            states=states[j],
        )
        for j, i in enumerate(range(start, start + n))
    ]


def build_table(path: Path, rows: int, n_states: int) -> tuple[int, int, float]:
    """-> (version as written (fragments), version indexed + compacted, optimize seconds)."""
    rng = np.random.default_rng(0)
    table = ChunkTable.create(path, DIM, D)
    for start in range(0, rows, COMMIT_ROWS):
        table.add(records(rng, start, min(COMMIT_ROWS, rows - start), n_states))
    fragmented = table.version
    began = time.perf_counter()
    table.ensure_row_id_index()
    table.optimize(keep_from=fragmented)
    return fragmented, table.version, time.perf_counter() - began


def measure(path: Path, version: int, rows: int) -> dict:
    """Fetch latency and peak RSS, in a fresh process."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(path), str(version), str(rows)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def child(path: Path, version: int, rows: int) -> None:
    rng = np.random.default_rng(1)
    table = ChunkTable.open(path, version)
    table.fetch(rng.integers(0, rows, 4))  # warm: open files, read the index
    times = []
    for _ in range(FETCHES):
        wanted = rng.integers(0, rows, 4)
        began = time.perf_counter()
        got = table.fetch(wanted)
        times.append(time.perf_counter() - began)
        assert [c.row_id for c in got] == wanted.tolist()
    rss = peak_rss_mb()
    ms = np.array(times) * 1e3
    print(
        json.dumps(
            {
                "median_ms": float(np.median(ms)),
                "p95_ms": float(np.percentile(ms, 95)),
                "rss_mb": rss,
                "fragments": table.fragments(),
            }
        )
    )


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited from the parent that
    forked it)."""
    status = Path("/proc/self/status").read_text()
    kb = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(kb) / 1024


def disk_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--states", type=int, default=8, help="states per synthetic chunk")
    parser.add_argument("--note", default="", help="a sentence on the run (e.g. CPU sharing)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), int(args.child[1]), int(args.child[2]))
        return
    work = Path(tempfile.mkdtemp(prefix="extok-storage-"))
    lines = []
    try:
        for rows in (int(s) for s in args.sizes.split(",")):
            path = work / f"t{rows}"
            fragmented, compacted, optimize_s = build_table(path, rows, args.states)
            before = measure(path, fragmented, rows)
            after = measure(path, compacted, rows)
            lines.append(
                f"| {rows:,} | {before['fragments']} | {before['median_ms']:.1f} / "
                f"{before['p95_ms']:.1f} | {before['rss_mb']:.0f} | {after['fragments']} | "
                f"**{after['median_ms']:.1f}** / {after['p95_ms']:.1f} | "
                f"**{after['rss_mb']:.0f}** | {optimize_s:.1f} | {disk_mb(path):,.0f} |"
            )
            print(lines[-1], flush=True)
            shutil.rmtree(path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write(args, lines)


def write(args, lines: list[str]) -> None:
    from report import machine_line, write_section

    body = "\n".join(
        [
            "## Storage: fetch latency and reader memory against table size",
            "",
            f"`benchmarks/storage.py --sizes {args.sizes} --states {args.states}` — "
            f"{machine_line()}.{' ' + args.note if args.note else ''}",
            "",
            f"Synthetic chunks ({args.states} float16 states × {D}, a {DIM}-d vector, ~1.2 KB of "
            f"text), written in commits of {COMMIT_ROWS:,} rows. `fetch` of 4 random row ids "
            f"(an `ask` with --top-n 4), {FETCHES} times in a fresh process: median / p95 ms "
            "and the process's peak RSS (FAISS not loaded). *As written*: the fragments of the "
            "commits, no row-id index (what every index had before). *Indexed + compacted*: "
            "after `ensure_row_id_index` and `optimize` (what an index run does once "
            "fragments pile up); *optimize s* is that step's time; disk after it (the "
            "pre-compaction version is kept, as a run keeps the previous commit's).",
            "",
            "| rows | fragments | fetch ms as written | RSS MB | fragments | fetch ms indexed + "
            "compacted | RSS MB | optimize s | disk MB |",
            "|---|---|---|---|---|---|---|---|---|",
            *lines,
        ]
    )
    print(body)
    write_section("storage", body)


if __name__ == "__main__":
    main()
