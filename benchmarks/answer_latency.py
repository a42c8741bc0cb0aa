"""Answer latency of the frozen LLM as `ask` and `eval qa` run it: prefill (the prompt's forward
pass to the first token), per-token decoding, and a whole 24-token answer, for prompts the
size of compressed ×4 top-4 and raw top-4 (236 / 720 positions, eval qa's SQuAD medians).

    .venv/bin/python benchmarks/answer_latency.py [--reps 5] [--bf16-reps 1]

Prefill computes the vocabulary head at the last position only (`logits_to_keep=1`). "before"
= the head on that position as Hugging Face slices it out of (B, T, d), a strided 3-D input
(torch's bf16 CPU matmul then copies the whole head weight, pytorch#151934); "after" = the head
on packed rows, as `FrozenLLM` hands it (`models.llm.dense_head_input`). Both dtypes are
timed: `--dtype auto` picks fp32 on a CPU without native bf16, bf16 where it is native.
The batched row times one prefill of 8 prompts at once (eval qa's batch). Medians of `--reps`
runs after one warm-up. Writes section `answer-latency` of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine_line, write_section

from extok_rag.cli.console import quiet_transformers
from extok_rag.config import RuntimeConfig, dtype_choice
from extok_rag.models.generation import decode_steps
from extok_rag.models.llm import FrozenLLM
from extok_rag.models.mixed_input import TokenSegment

POSITIONS = (236, 720)
ANSWER_TOKENS = 24
BATCH = 8
TEXT = (Path(__file__).resolve().parent.parent / "examples/corpus/extok-rag.md").read_text()


def prompt(llm: FrozenLLM, positions: int, shift: int = 0) -> list:
    ids = llm.tokenize(TEXT * 8)[shift : shift + positions]
    return [TokenSegment(ids)]


def timed(*fns, reps: int) -> list[float]:
    """Median ms of each of `fns` over `reps` rounds after one warm-up, the calls interleaved
    (a, b, a, b, …) so that a drifting CPU weighs on every one alike."""
    for fn in fns:
        fn()  # warm-up
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for fn, spent in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
    return [1000 * statistics.median(spent) for spent in times]


@torch.inference_mode()
def prefill(llm: FrozenLLM, rows: list, packed: bool) -> torch.Tensor:
    """The last position's logits (B, V): through the model (its head reads packed rows), or
    through its decoder and then the head on Hugging Face's strided slice, as before."""
    batch = llm.batch(rows, padding_side="left")
    inputs = {
        "inputs_embeds": batch.inputs_embeds,  # (B, T, d)
        "attention_mask": batch.attention_mask,
        "position_ids": batch.position_ids,
        "use_cache": True,
    }
    if packed:
        return llm.model(**inputs, logits_to_keep=1).logits[:, -1]
    hidden = llm.model.model(**inputs).last_hidden_state  # (B, T, d)
    return F.linear(hidden[:, -1:], llm.model.get_output_embeddings().weight)[:, -1]


def answer(llm: FrozenLLM, rows: list) -> None:
    for _ in decode_steps(llm, rows, ANSWER_TOKENS, lambda logits: logits.argmax(-1)):
        pass


def measure(llm: FrozenLLM, positions: int, reps: int, batched: bool) -> dict[str, float]:
    one = [prompt(llm, positions)]
    batch = [prompt(llm, positions, shift=i) for i in range(BATCH)]
    same = torch.equal(prefill(llm, one, False), prefill(llm, one, True))
    assert same, "the packed head changed one row's logits"
    batch_same = torch.equal(prefill(llm, batch, False), prefill(llm, batch, True))
    pre_before, pre_after, whole = timed(
        lambda: prefill(llm, one, False),
        lambda: prefill(llm, one, True),
        lambda: answer(llm, one),
        reps=reps,
    )
    nan = float("nan")
    batch_before, batch_after = (
        timed(
            lambda: prefill(llm, batch, False),
            lambda: prefill(llm, batch, True),
            reps=max(1, reps // 2),
        )
        if batched
        else (nan, nan)
    )
    return {
        "batch_same_bits": float(batch_same),
        "prefill_before": pre_before,
        "prefill_after": pre_after,
        "decode_per_token": (whole - pre_after) / (ANSWER_TOKENS - 1),
        "answer_before": whole - pre_after + pre_before,
        "answer_after": whole,
        "batch_before": batch_before,
        "batch_after": batch_after,
    }


def table(rows: dict[tuple[str, int], dict[str, float]]) -> str:
    lines = [
        "| dtype | prompt positions | prefill ms before → after | decode ms/token | "
        f"{ANSWER_TOKENS}-token answer ms before → after | prefill of {BATCH} prompts ms "
        "before → after | the 8 prompts' logits the same bits |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for (dtype, positions), m in rows.items():
        batch = f"{m['batch_before']:,.0f} → {m['batch_after']:,.0f}"
        lines.append(
            f"| {dtype} | {positions} | {m['prefill_before']:,.0f} → {m['prefill_after']:,.0f} | "
            f"{m['decode_per_token']:,.1f} | {m['answer_before']:,.0f} → "
            f"{m['answer_after']:,.0f} | {batch.replace('nan → nan', 'not run')} | "
            f"{'yes' if m['batch_same_bits'] else 'no'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--bf16-reps", type=int, default=1, help="0 skips bf16")
    args = parser.parse_args()
    quiet_transformers()
    rows = {}
    plan = [("float32", args.reps)] + ([("bfloat16", args.bf16_reps)] if args.bf16_reps else [])
    for dtype, reps in plan:
        llm = FrozenLLM.load(None, RuntimeConfig(device="cpu", dtype=dtype))  # type: ignore[arg-type]
        emulated = dtype == "bfloat16" and dtype_choice("cpu")[0] == "float32"
        for positions in POSITIONS[:1] if emulated else POSITIONS:  # emulated bf16: minutes
            rows[(dtype, positions)] = measure(llm, positions, reps, batched=not emulated)
            print(dtype, positions, rows[(dtype, positions)], flush=True)
    picked, why = dtype_choice("cpu")
    body = "\n\n".join(
        [
            "## Answer latency: prefill and decoding (`benchmarks/answer_latency.py`)",
            f"`.venv/bin/python benchmarks/answer_latency.py --reps {args.reps} --bf16-reps "
            f"{args.bf16_reps}` — {machine_line()}.",
            "SmolLM2-135M, token prompts of eval qa's median sizes (236 positions ≈ compressed "
            "×4 top-4, 720 ≈ raw top-4). Vocabulary logits at the last prompt position only "
            "(`logits_to_keep=1`). Before: the head on Hugging Face's strided slice of the "
            "last position (torch's bf16 CPU matmul copies the whole 49,152 × 576 head weight "
            "for it, pytorch#151934); after: on packed rows (`models.llm.dense_head_input`), "
            "one row's logits the same bits (checked each run). float32 folds the strided "
            "rows itself and is left as it is, so its before and after run the same code: "
            "their difference is this machine's noise. Each before / after pair is timed "
            "interleaved. Decoding "
            "computes one position's logits either way, through the default step (bf16: the "
            "4-bit weights, in C++ where built; float32: its own weights, in C++; section "
            "`decode-speed`). Medians after one warm-up.",
            table(rows),
            f"`--dtype auto` picks **{picked}** here: {why}.",
        ]
    )
    write_section("answer-latency", body)


if __name__ == "__main__":
    main()
