"""Decoding speed against the memory-bandwidth floor: milliseconds per decoding step at batch 1,
8 and 16 over a ~400-token context, the Hugging Face forward on a `DynamicCache` ("before",
`decode_steps(fast=False)`) against the fast step on a pre-allocated cache (`LlamaStep` over
`StaticKV`) on the model's bf16 weights ("bf16 step", `q4=False`) and on the layers' 4-bit
GGUF weights ("4-bit step", the default: `models/q4.py`), in the dtype
`RuntimeConfig().resolve_dtype()` picks here.

    .venv/bin/python benchmarks/decode_speed.py [--steps 16] [--prompts 8] [--tokens 32]

The floor: one step must read every weight once; its time is the weights' bytes over the
bandwidth of a 256 MB tensor copy (bytes read plus written), measured in the same run. Step
times are medians over `--steps` steps after the first; the batch rows are prompts
of 400 to 400 - 7 (B - 1) tokens of the project's example corpus. "Tokens identical" compares
the greedy tokens of each step against before: every row of the timed batches, then
`--prompts` batch-1 answers of `--tokens` tokens each. Also timed: the one-time weight packing
of the fast step, building the 4-bit cache (it is deleted first) and loading it, and the
prefill. Writes section `decode-speed` of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine_line, write_section

from extok_rag.cli.console import quiet_transformers
from extok_rag.config import RuntimeConfig
from extok_rag.models.decode_step import LlamaStep, decode_step
from extok_rag.models.generation import decode_steps
from extok_rag.models.llm import FrozenLLM
from extok_rag.models.mixed_input import TokenSegment
from extok_rag.models.q4 import CACHE_FILE

CONTEXT = 400
BATCHES = (1, 8, 16)
TEXT = (Path(__file__).resolve().parent.parent / "examples/corpus/extok-rag.md").read_text()
FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "amx_int8")


def cpu_flags() -> str:
    """The lscpu flags that decide the matmul kernels (the others are not listed)."""
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    flags = next(
        (line.split(":", 1)[1].split() for line in out.splitlines() if "Flags" in line), []
    )
    model = next(
        (line.split(":", 1)[1].strip() for line in out.splitlines() if "Model name" in line), "?"
    )
    present = [f for f in FLAGS if f in flags]
    return f"{model}; {' '.join(present) or 'none of ' + ' '.join(FLAGS)}"


def copy_bandwidth() -> float:
    """Bytes read plus written per second copying a 256 MB tensor (best of 5)."""
    src = torch.ones(256 * 2**20, dtype=torch.uint8)
    dst = torch.empty_like(src)
    times = []
    for _ in range(6):
        start = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - start)
    return 2 * src.numel() / min(times[1:])


def rows(llm: FrozenLLM, batch: int, shift: int = 0) -> list:
    ids = llm.tokenize(TEXT * 8)
    return [
        [TokenSegment(ids[shift + 50 * i : shift + 50 * i + CONTEXT - 7 * i])] for i in range(batch)
    ]


def decode(llm, batch_rows, steps: int, fast: bool, q4: bool = False):
    """Prefill seconds, median step seconds, greedy tokens (steps, B)."""
    stamps, tokens = [time.perf_counter()], []
    pick = lambda logits: logits.argmax(-1)  # noqa: E731
    for t in decode_steps(llm, batch_rows, steps, pick, fast=fast, q4=q4):
        stamps.append(time.perf_counter())
        tokens.append(t)
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    return gaps[0], statistics.median(gaps[2:]), torch.stack(tokens)


def q4_bytes(llm: FrozenLLM) -> int:
    """Bytes a 4-bit step reads: the layers' packed weights and scales, and every parameter
    it still reads in the model's dtype (the vocabulary head, the norms)."""
    weights = llm.q4_weights() or {}
    packed = sum(t.numel() * t.element_size() for w in weights.values() for t in vars(w).values())
    rest = sum(
        p.numel() * p.element_size()
        for name, p in llm.model.named_parameters()
        if name not in weights
    )
    return packed + rest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()
    quiet_transformers()
    runtime = RuntimeConfig(device="cpu")
    llm = FrozenLLM.load(None, runtime)
    start = time.perf_counter()
    step = decode_step(llm.model)
    pack_s = time.perf_counter() - start
    assert isinstance(step, LlamaStep), "the default LLM should take the fast step"
    (llm.weights_dir / CACHE_FILE).unlink(missing_ok=True)  # time building the 4-bit cache
    start = time.perf_counter()
    assert llm.q4_weights() is not None, "the default LLM should have its 4-bit weights here"
    q4_build_s = time.perf_counter() - start
    again = FrozenLLM.load(None, runtime)
    start = time.perf_counter()
    again.q4_weights()
    q4_load_s = time.perf_counter() - start
    del again
    weight_bytes = sum(p.numel() * p.element_size() for p in llm.model.parameters())
    bandwidth = copy_bandwidth()
    floor_ms = weight_bytes / bandwidth * 1e3
    q4_floor_ms = q4_bytes(llm) / bandwidth * 1e3
    table, same, same_q4, total = [], 0, 0, 0
    for b in BATCHES:
        batch_rows = rows(llm, b)
        decode(llm, batch_rows, 3, True)  # warm-up
        decode(llm, batch_rows, 3, True, q4=True)
        _, old, tok_old = decode(llm, batch_rows, args.steps, False)
        pre_new, new, tok_new = decode(llm, batch_rows, args.steps, True)
        _, four, tok_four = decode(llm, batch_rows, args.steps, True, q4=True)
        same += int((tok_old == tok_new).all(dim=0).sum())
        same_q4 += int((tok_old == tok_four).all(dim=0).sum())
        total += b
        table.append((b, pre_new, old, new, four))
        print(
            b,
            f"prefill {pre_new * 1e3:.0f} ms, step {old * 1e3:.1f} -> {new * 1e3:.1f} ms, "
            f"4-bit {four * 1e3:.1f} ms",
        )
    one_same, one_same_q4 = 0, 0
    for i in range(args.prompts):
        row = rows(llm, 1, shift=97 * (i + 1))
        _, _, a = decode(llm, row, args.tokens, False)
        _, _, c = decode(llm, row, args.tokens, True)
        _, _, f = decode(llm, row, args.tokens, True, q4=True)
        one_same += bool(torch.equal(a, c))
        one_same_q4 += bool(torch.equal(a, f))
    lines = [
        "## Decoding speed against the memory-bandwidth floor",
        "",
        f"`benchmarks/decode_speed.py` — {machine_line()}. CPU flags: {cpu_flags()}. "
        f"SmolLM2-135M-Instruct in {runtime.resolve_dtype()}, ~{CONTEXT}-token context "
        f"(rows of {CONTEXT} down to {CONTEXT} − 7 (B − 1) tokens), median of "
        f"{args.steps} steps after the first. Before: the Hugging Face forward on a growing "
        "`DynamicCache` (`decode_steps(fast=False)`); bf16 step: `LlamaStep` on a pre-allocated "
        "`StaticKV` cache, oneDNN-packed bf16 weights, fused q|k|v and gate|up "
        "(`q4=False`); 4-bit step, the default: the same step reading the layers' Q4_1 "
        "weights from the GGUF the model was dequantised from, through torch's int4 kernel "
        "(`models/q4.py`; the vocabulary head stays bf16).",
        "",
        f"- Floor: {weight_bytes / 1e6:.0f} MB of weights read per step at "
        f"{bandwidth / 1e9:.1f} GB/s (256 MB copy, bytes read + written) = **{floor_ms:.1f} ms**; "
        f"target ≤ 2× floor = {2 * floor_ms:.1f} ms at batch 1. The 4-bit step reads "
        f"{q4_bytes(llm) / 1e6:.0f} MB: its own floor is {q4_floor_ms:.1f} ms.",
        f"- One-time costs: packing the bf16 weights {pack_s:.2f} s; the 4-bit weights "
        f"{q4_build_s:.1f} s to read from the GGUF, check against the model and pack (once, "
        f"then kept beside the model: {CACHE_FILE}), {q4_load_s:.2f} s to load on later runs.",
        f"- Greedy tokens identical to before: bf16 step {same}/{total} rows of the timed "
        f"batches ({args.steps} tokens each) and {one_same}/{args.prompts} batch-1 answers of "
        f"{args.tokens} tokens; 4-bit step {same_q4}/{total} rows and "
        f"{one_same_q4}/{args.prompts} answers. Before is the forward as transformers calls "
        "SDPA (3 queries per key head); the step pads each group to 4 queries, so that a "
        "row's bits do not depend on its batch (`LlamaStep._attend`): a batch-1 answer can part "
        "from before's where one attention sum rounds otherwise.",
        "",
        "| batch | prefill | step before | bf16 step | 4-bit step | speed-up | 4-bit / floor "
        "| tokens/s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for b, pre, old, new, four in table:
        best = min(new, four)
        lines.append(
            f"| {b} | {pre * 1e3:.0f} ms | {old * 1e3:.1f} ms | {new * 1e3:.1f} ms | "
            f"{four * 1e3:.1f} ms | {old / best:.2f}× | {four * 1e3 / floor_ms:.1f}× | "
            f"{b / four:.0f} |"
        )
    write_section("decode-speed", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
