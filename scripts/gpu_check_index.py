"""GPU check of the indexer: index a small corpus on CUDA and on CPU, compare what is stored.

    .venv/bin/python scripts/gpu_check_index.py [--corpus examples/corpus]

Both builds use the default models (SmolLM2-135M-Instruct, untrained 8-layer extensible
tokenizer, all-MiniLM-L6-v2) in bf16. Stated tolerance, bf16 on two devices: per chunk the
states' cosine similarity >= 0.99 and relative L2 error <= 0.08; retrieval vectors' cosine
>= 0.995; the same chunk ids. Also searches with FAISS (the GPU build if installed: flat search
on the GPU). Exit 0 = pass, 1 = fail, 2 = no CUDA.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

STATE_COS, STATE_REL, VECTOR_COS = 0.99, 0.08, 0.995


def build(corpus: Path, index_dir: Path, device: str) -> float:
    from extok_rag.config import RuntimeConfig
    from extok_rag.indexing import IndexModels, build_index
    from extok_rag.models.llm import FrozenLLM

    llm = FrozenLLM.load(None, RuntimeConfig(device=device))
    start = time.perf_counter()
    report = build_index(corpus, index_dir, IndexModels(llm))
    seconds = time.perf_counter() - start
    print(f"{device}: {report.tokens_written:,} tokens in {seconds:.1f} s", flush=True)
    return seconds


def main() -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", type=Path, default=Path("examples/corpus"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 2
    from extok_rag.indexing import open_index

    work = Path(tempfile.mkdtemp(prefix="extok-gpu-check-"))
    build(args.corpus, work / "cuda", "cuda")
    build(args.corpus, work / "cpu", "cpu")
    gpu, cpu = open_index(work / "cuda"), open_index(work / "cpu")
    a = {c.chunk_id: c for c in gpu.table.fetch(gpu.table.vectors()[0])}
    b = {c.chunk_id: c for c in cpu.table.fetch(cpu.table.vectors()[0])}
    ok = a.keys() == b.keys()
    worst_cos, worst_rel, worst_vec = 1.0, 0.0, 1.0
    for key in a.keys() & b.keys():
        x, y = a[key].states.astype(np.float32), b[key].states.astype(np.float32)
        cos = (x * y).sum(-1) / (np.linalg.norm(x, axis=-1) * np.linalg.norm(y, axis=-1) + 1e-9)
        worst_cos = min(worst_cos, float(cos.min()))
        worst_rel = max(worst_rel, float(np.linalg.norm(x - y) / (np.linalg.norm(y) + 1e-9)))
        worst_vec = min(worst_vec, float(a[key].vector @ b[key].vector))
    import faiss

    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    row_ids, vectors = gpu.table.vectors()
    found, _ = gpu.vectors.search(vectors[:4], 1)  # flat search on the GPU where faiss can
    self_hit = bool((found[:, 0] == row_ids[:4]).all())
    ok = ok and worst_cos >= STATE_COS and worst_rel <= STATE_REL and worst_vec >= VECTOR_COS
    ok = ok and self_hit
    print(
        f"chunks {len(a)} vs {len(b)}; states min cos {worst_cos:.4f} (>= {STATE_COS}), "
        f"max rel err {worst_rel:.4f} (<= {STATE_REL}); vectors min cos {worst_vec:.4f} "
        f"(>= {VECTOR_COS}); faiss GPUs {gpus}, self-search {'ok' if self_hit else 'FAILED'}"
    )
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
