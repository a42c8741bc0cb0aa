"""Decoding speed against the memory-bandwidth floor: milliseconds per decoding step at batch 1,
8 and 16 over a ~400-token context, the Hugging Face forward on a `DynamicCache` ("before",
`decode_steps(fast=False)`) against the fast step on a pre-allocated cache (`LlamaStep` over
`StaticKV`) on the model's bf16 weights ("bf16 step", `q4=False`) and on the layers' 4-bit
GGUF weights ("4-bit step": `models/q4.py`), each in its Python loop and in C++ (`models/
native_step.cpp`; "4-bit C++" is the default), in the dtype `RuntimeConfig().resolve_dtype()`
picks here.

    .venv/bin/python benchmarks/decode_speed.py [--steps 16] [--prompts 8] [--tokens 32]

The floor: one step must read every weight once; its time is the weights' bytes over the
bandwidth of a 256 MB tensor copy (bytes read plus written), measured in the same run. Step
times are medians over `--steps` steps after the first; the batch rows are prompts
of 400 to 400 - 7 (B - 1) tokens of the project's example corpus. "Tokens identical" compares
the greedy tokens of each step against before: every row of the timed batches, then
`--prompts` batch-1 answers of `--tokens` tokens each. Also timed: the one-time weight packing
of the fast step, building the 4-bit cache (it is deleted first) and loading it, building
the C++ step (in a fresh home) and loading it, and the prefill. Writes section `decode-speed`
of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import itertools
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
from extok_rag.config import RuntimeConfig
from extok_rag.models import native
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


def decode(llm, batch_rows, steps: int, fast: bool, q4: bool = False, native: bool = True):
    """Prefill seconds, median step seconds, greedy tokens (steps, B)."""
    stamps, tokens = [time.perf_counter()], []
    pick = lambda logits: logits.argmax(-1)  # noqa: E731
    for t in decode_steps(llm, batch_rows, steps, pick, fast=fast, q4=q4, native=native):
        stamps.append(time.perf_counter())
        tokens.append(t)
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    return gaps[0], statistics.median(gaps[2:]), torch.stack(tokens)


def native_build_seconds() -> tuple[float, float]:
    """Seconds to build the C++ step in a fresh home (a child process), then to load it."""
    code = (
        "import time; from extok_rag.models import native; t = time.perf_counter(); "
        "m = native.load(build={}); print(m is not None, time.perf_counter() - t)"
    )
    out = []
    with tempfile.TemporaryDirectory(prefix="native-home-") as home:
        for build in (True, False):
            run = subprocess.run(
                [sys.executable, "-c", code.format(build)],
                env={**os.environ, "EXTOK_RAG_HOME": home},
                capture_output=True,
                text=True,
                check=True,
            )
            ok, seconds = run.stdout.split()
            assert ok == "True", run.stderr
            out.append(float(seconds))
    native.load(build=True)  # this process's (the home's) build
    return out[0], out[1]


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
    build_s, native_load_s = native_build_seconds()
    assert native.load() is not None, f"no C++ step here: {native.failure()}"
    weight_bytes = sum(p.numel() * p.element_size() for p in llm.model.parameters())
    bandwidth = copy_bandwidth()
    floor_ms = weight_bytes / bandwidth * 1e3
    q4_floor_ms = q4_bytes(llm) / bandwidth * 1e3
    # rows: (fast, q4, native); "before" is the Hugging Face forward
    paths = {
        "before": (False, False, False),
        "bf16": (True, False, False),
        "bf16 C++": (True, False, True),
        "4-bit": (True, True, False),
        "4-bit C++": (True, True, True),
    }
    table, total = [], 0
    same = dict.fromkeys([*paths, "C++ = Python"], 0)
    for b in BATCHES:
        batch_rows = rows(llm, b)
        for fast, q4, nat in paths.values():  # warm-up
            if fast:
                decode(llm, batch_rows, 3, fast, q4, nat)
        ms, toks, prefill_s = {}, {}, 0.0
        for name, (fast, q4, nat) in paths.items():
            pre, ms[name], toks[name] = decode(llm, batch_rows, args.steps, fast, q4, nat)
            prefill_s = pre if name == "4-bit C++" else prefill_s
        for name in paths:
            same[name] += int((toks["before"] == toks[name]).all(dim=0).sum())
        same["C++ = Python"] += int(
            (toks["bf16"] == toks["bf16 C++"]).all(dim=0).sum()
            + (toks["4-bit"] == toks["4-bit C++"]).all(dim=0).sum()
        )
        total += b
        table.append((b, prefill_s, ms))
        print(b, f"prefill {prefill_s * 1e3:.0f} ms", {k: f"{v * 1e3:.1f}" for k, v in ms.items()})
    answers = dict.fromkeys(paths, 0)
    for i in range(args.prompts):
        row = rows(llm, 1, shift=97 * (i + 1))
        toks = {n: decode(llm, row, args.tokens, *p)[2] for n, p in paths.items()}
        for name in paths:
            answers[name] += bool(torch.equal(toks["before"], toks[name]))
    lines = [
        "## Decoding speed against the memory-bandwidth floor",
        "",
        f"`benchmarks/decode_speed.py` — {machine_line()}. CPU flags: {cpu_flags()}. "
        f"SmolLM2-135M-Instruct in {runtime.resolve_dtype()}, ~{CONTEXT}-token context "
        f"(rows of {CONTEXT} down to {CONTEXT} − 7 (B − 1) tokens), median of "
        f"{args.steps} steps after the first. Before: the Hugging Face forward on a growing "
        "`DynamicCache` (`decode_steps(fast=False)`); bf16: `LlamaStep` on a pre-allocated "
        "`StaticKV` cache, oneDNN-packed bf16 weights, fused q|k|v and gate|up "
        "(`q4=False`); 4-bit: the same step reading the layers' Q4_1 weights from the GGUF "
        "the model was dequantised from, through torch's int4 kernel (`models/q4.py`; the "
        "vocabulary head stays bf16). Each in its Python loop (`native=False`) and in C++ "
        "(`models/native_step.cpp`: the same ATen matmuls, SDPA and SiLU, the small ops "
        "fused into loops that round as ATen's do). **4-bit C++ is the default.**",
        "",
        f"- Floor: {weight_bytes / 1e6:.0f} MB of weights read per step at "
        f"{bandwidth / 1e9:.1f} GB/s (256 MB copy, bytes read + written) = **{floor_ms:.1f} ms**; "
        f"target ≤ 2× floor = {2 * floor_ms:.1f} ms at batch 1. The 4-bit step reads "
        f"{q4_bytes(llm) / 1e6:.0f} MB: its own floor is {q4_floor_ms:.1f} ms.",
        f"- One-time costs: packing the bf16 weights {pack_s:.2f} s; the 4-bit weights "
        f"{q4_build_s:.1f} s to read from the GGUF, check against the model and pack (once, "
        f"then kept beside the model: {CACHE_FILE}), {q4_load_s:.2f} s to load on later runs; "
        f"building the C++ step {build_s:.0f} s (once per machine and torch version, "
        f"`models/native.py`; serve, chat, read and eval build it on a thread, `ask` never "
        f"waits for it), {native_load_s * 1e3:.0f} ms to load on later runs.",
        f"- C++ against Python, the same weights: greedy tokens identical in "
        f"{same['C++ = Python']}/{2 * total} rows of the timed batches (bf16 and 4-bit; the "
        "logits are the same bits: tests/models/test_native_step.py).",
        f"- Greedy tokens identical to before, rows of the timed batches ({args.steps} tokens "
        f"each) / batch-1 answers of {args.tokens} tokens: "
        + "; ".join(
            f"{name} {same[name]}/{total} / {answers[name]}/{args.prompts}"
            for name in paths
            if name != "before"
        )
        + ". Before is the forward as transformers calls SDPA (3 queries per key head); the "
        "step pads each group to 4 queries, so that a row's bits do not depend on its batch "
        "(`LlamaStep._attend`): a batch-1 answer can part from before's where one attention "
        "sum rounds otherwise.",
        "",
        "| batch | prefill | before | bf16 | bf16 C++ | 4-bit | **4-bit C++** | speed-up "
        "| 4-bit C++ / bf16 floor | tokens/s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for b, pre, ms in table:
        best = ms["4-bit C++"]
        cells = " | ".join(f"{ms[n] * 1e3:.1f} ms" for n in paths)
        lines.append(
            f"| {b} | {pre * 1e3:.0f} ms | {cells} | {ms['before'] / best:.2f}× | "
            f"{best * 1e3 / floor_ms:.1f}× | {b / best:.0f} |"
        )
    write_section("decode-speed", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
