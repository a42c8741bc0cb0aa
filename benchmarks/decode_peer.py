"""The peer, side by side in one run: llama.cpp (`llama-cpp-python`) on the very GGUF this
project ships (SmolLM2-135M-Instruct Q4_1) against our path before (`decode_steps(fast=False)`,
the Hugging Face forward at every step) and after (`decode_steps(fast=True)` with its defaults:
whatever fast step `decode_step` gives it, in C++ and in its Python loop), on the same CPU
with the same number of threads.

    .venv/bin/python benchmarks/decode_peer.py [--threads 2] [--repeats 3] [--steps 24]

Both engines read the same raw prompts, as token ids from our tokenizer (the GGUF's own
vocabulary), fed to llama.cpp as ids (`Llama.eval` after `reset()`; greedy from its last
logits). Measured: prefill (time to the first greedy token) at 236 and 720 positions of the
example corpus; decode ms/token at batch 1 after a 400-position prefill (median of `--steps`
tokens' gaps less the first two: the prefill and the first step, as in decode_speed.py); a
32-token greedy answer end to end (prefill + 32 tokens, no stop at end-of-sequence) to a chat
prompt built as `ask` builds one (the chat template, the question, the example corpus as raw
context). Each figure is the median of `--repeats` runs, the engines taking turns. The floor,
in the same run: the weights' bytes read per step (our bf16 parameters; the GGUF's tensors) over
a 256 MB tensor copy's bandwidth (decode_speed.py's `copy_bandwidth`); every decode time is
given against both. Also recorded: how far the greedy answers agree (common prefix, and
llama.cpp's top-2 logit gap where they part), the CPU flags, and llama.cpp's build
(`llama_print_system_info`). Writes section `decode-peer` of docs/benchmarks.md, right after
`decode-speed`.

llama-cpp-python is a benchmark-only dependency (the `peer` extra, never a runtime one), built
from its sdist with the machine's cmake and gcc (INSTALL below; -march=native by default).
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import statistics
import sys
import time
from pathlib import Path

import gguf
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decode_speed import CONTEXT, copy_bandwidth, cpu_flags
from report import DOC, machine_line, write_section

from extok_rag.cli.console import quiet_transformers
from extok_rag.config import RuntimeConfig
from extok_rag.models import native
from extok_rag.models.ask_frame import ask_frame
from extok_rag.models.defaults import gguf_path
from extok_rag.models.generation import decode_steps
from extok_rag.models.llm import FrozenLLM
from extok_rag.models.mixed_input import TokenSegment

INSTALL = (
    "CMAKE_BUILD_PARALLEL_LEVEL=2 .venv/bin/pip install --no-binary llama-cpp-python "
    '"llama-cpp-python==0.3.36"'
)
SECTION, AFTER = "decode-peer", "decode-speed"
PREFILLS = (236, 720)
ANSWER = 32
N_CTX = 1024  # every prompt here, in one llama.cpp batch
CORPUS = Path(__file__).resolve().parent.parent / "examples/corpus"
QUESTION = "What does a chunk of 512 tokens become with k = 8?"


def load_llama_cpp():
    """The `llama_cpp` module, or exit with how to install it."""
    try:
        return importlib.import_module("llama_cpp")
    except ImportError:
        sys.exit(f"decode_peer.py needs llama-cpp-python (benchmark-only): {INSTALL}")


class Peer:
    """llama.cpp on the GGUF, fed token ids, greedy from the last position's logits."""

    def __init__(self, llama_cpp, path: Path, threads: int, flash_attn: bool):
        self.llama = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=N_CTX,
            n_batch=N_CTX,
            n_ubatch=N_CTX,
            n_threads=threads,
            n_threads_batch=threads,
            flash_attn=flash_attn,
            verbose=False,
        )
        self._logits = llama_cpp.llama_get_logits_ith
        self.n_vocab = self.llama.n_vocab()
        self.margins: list[float] = []  # top-1 minus top-2 logit at each token since prefill

    def _greedy(self) -> int:
        ptr = self._logits(self.llama.ctx, -1)
        logits = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
        second, first = np.partition(logits, -2)[-2:]
        self.margins.append(float(first - second))
        return int(np.argmax(logits))

    def prefill(self, ids: list[int]) -> int:
        """A fresh cache, `ids` read; the first greedy token."""
        self.llama.reset()
        self.margins = []
        self.llama.eval(ids)
        return self._greedy()

    def step(self, token: int) -> int:
        self.llama.eval([token])
        return self._greedy()

    def decode(self, ids: list[int], steps: int) -> tuple[float, float, list[int]]:
        """As decode_speed.decode: prefill seconds, median step seconds, greedy tokens."""
        stamps = [time.perf_counter()]
        tokens = [self.prefill(ids)]
        stamps.append(time.perf_counter())
        for _ in range(steps - 1):
            tokens.append(self.step(tokens[-1]))
            stamps.append(time.perf_counter())
        return (*timings(stamps), tokens)


class Ours:
    """Our `decode_steps` over raw token rows, greedy; `fast` picks before / after, `native`
    the fast step's C++ or Python loop (the same bits)."""

    def __init__(self, llm: FrozenLLM, fast: bool, native: bool = True):
        self.llm, self.fast, self.native = llm, fast, native

    def decode(self, ids: list[int], steps: int) -> tuple[float, float, list[int]]:
        row = [TokenSegment(torch.tensor(ids, dtype=torch.long))]
        stamps, tokens = [time.perf_counter()], []
        pick = lambda logits: logits.argmax(-1)  # noqa: E731
        for t in decode_steps(self.llm, [row], steps, pick, fast=self.fast, native=self.native):
            stamps.append(time.perf_counter())
            tokens.append(int(t[0]))
        return (*timings(stamps), tokens)


def timings(stamps: list[float]) -> tuple[float, float]:
    """Prefill seconds (to the first token) and the median step after the first one (nan
    with fewer than three tokens), from the time stamps before and after each token."""
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    return gaps[0], statistics.median(gaps[2:]) if len(gaps) > 2 else float("nan")


def sample(engine, corpus: list[int], chat: list[int], steps: int) -> dict:
    """One run of every measure on one engine: prefill per length, decode step, the answer's
    wall time (prefill + ANSWER greedy tokens) and its tokens."""
    run = {n: engine.decode(corpus[:n], 1)[0] for n in PREFILLS}
    run["step"] = engine.decode(corpus[:CONTEXT], steps)[1]
    start = time.perf_counter()
    run["tokens"] = engine.decode(chat, ANSWER)[2]
    run["answer"] = time.perf_counter() - start
    return run


def measure(engines: dict, corpus: list[int], chat: list[int], args) -> dict:
    """Per engine, the median of `args.repeats` runs of `sample`, the engines taking turns
    within each repeat (so that a noisy moment hits all of them); tokens from the last run;
    "first": the untimed warm-up's seconds (one-time costs: packing, loading, first pages)."""
    first = {}
    for name, engine in engines.items():
        start = time.perf_counter()
        engine.decode(corpus[:CONTEXT], 4)  # warm-up
        first[name] = time.perf_counter() - start
    runs: dict[str, list[dict]] = {name: [] for name in engines}
    for r in range(args.repeats):
        for name, engine in engines.items():
            runs[name].append(sample(engine, corpus, chat, args.steps))
            print(r, name, {k: v for k, v in runs[name][-1].items() if k != "tokens"}, flush=True)
    keys = [*PREFILLS, "step", "answer"]
    return {
        name: {k: statistics.median(run[k] for run in rs) for k in keys}
        | {"tokens": rs[-1]["tokens"], "first": first[name]}
        for name, rs in runs.items()
    }


def common_prefix(a: list[int], b: list[int]) -> int:
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


def gguf_tensor_bytes(path: Path) -> int:
    return sum(int(t.n_bytes) for t in gguf.GGUFReader(path).tensors)


def corpus_ids(llm: FrozenLLM) -> list[int]:
    text = "\n\n".join(p.read_text() for p in sorted(CORPUS.glob("*.md")))
    ids = llm.tokenize("\n\n".join([text] * 4)).tolist()
    assert len(ids) >= max(PREFILLS), f"{len(ids)} corpus tokens < {max(PREFILLS)}"
    return ids


def chat_ids(llm: FrozenLLM) -> list[int]:
    """The raw prompt `ask` builds: chat template, question, the example corpus as context."""
    docs = [p.read_text() for p in sorted(CORPUS.glob("*.md"))]
    (segment,) = llm.chat_row(ask_frame(QUESTION, docs))
    return segment.ids.tolist()


def place_section() -> None:
    """Empty markers for this section right after `decode-speed`'s on the first run, so
    `write_section` fills it there rather than appending it at the end."""
    text = DOC.read_text()
    begin, after = f"<!-- begin {SECTION} -->", f"<!-- end {AFTER} -->"
    if begin not in text and after in text:
        block = f"{after}\n\n{begin}\n<!-- end {SECTION} -->"
        DOC.write_text(text.replace(after, block, 1))


def answer_text(llm: FrozenLLM, tokens: list[int]) -> str:
    stop = next((i for i, t in enumerate(tokens) if t in llm.eos_token_ids), len(tokens))
    text = llm.tokenizer.decode(tokens[:stop], skip_special_tokens=True)
    return text.replace("\n", " ").replace("`", "'").strip()


def agreement(llm: FrozenLLM, rows: dict, margins: list[float]) -> str:
    """Common prefixes of the greedy answers, llama.cpp's top-2 logit gap where ours first
    differs from it, and both answers' text (to the first end-of-sequence)."""
    peer, after, before = (rows[k]["tokens"] for k in ("llama.cpp", "after", "before"))
    n = common_prefix(after, peer)
    where = (
        f"; at token {n + 1}, where they part, llama.cpp's top two logits were "
        f"{margins[n]:.2f} apart"
        if n < len(peer) and n < len(margins)
        else ""
    )
    return (
        f"- Greedy {ANSWER}-token answers, common prefix with llama.cpp's: ours after "
        f"{n}/{ANSWER}, before {common_prefix(before, peer)}/{ANSWER} (ours before/after: "
        f"{common_prefix(before, after)}/{ANSWER}){where}. llama.cpp: "
        f"`{answer_text(llm, peer)}`; ours after: `{answer_text(llm, after)}`."
    )


def section(llm: FrozenLLM, rows: dict, floors: dict, info: dict, args) -> str:
    flash = " --flash-attn" if args.flash_attn else ""
    lines = [
        "## The peer: llama.cpp on the same GGUF, prompts and CPU (issue 30)",
        "",
        f"`benchmarks/decode_peer.py --threads {args.threads} --repeats {args.repeats} "
        f"--steps {args.steps}{flash}` — {machine_line()}. CPU flags: {cpu_flags()}.",
        "",
        f"- llama.cpp: `llama-cpp-python` {info['version']}, built from its sdist on this "
        f"machine; {args.threads} threads, n_ctx = n_batch = n_ubatch = {N_CTX} (each prompt one "
        f"batch), flash attention {'on' if args.flash_attn else 'off (the library default)'}; "
        f"`{info['gguf']}`. Build: `{info['system']}`.",
        f"- Ours: SmolLM2-135M-Instruct loaded from that GGUF (`FrozenLLM.load`), "
        f"{llm.dtype}, {torch.get_num_threads()} torch threads; before: "
        "`decode_steps(fast=False)` (the Hugging Face forward at every step); after: "
        "`decode_steps(fast=True)`, the default fast step (4-bit weights), in C++ "
        "(`models/native_step.cpp`, the default) and in its Python loop (`native=False`; "
        "the same logits bit for bit). Untimed warm-up (one-time costs "
        "included): " + ", ".join(f"{k} {r['first']:.2f} s" for k, r in rows.items()) + ".",
        "- Same raw prompts, as our token ids (llama.cpp's own tokenizer gives the same ids for "
        f"the chat prompt: {info['same_ids']}): prefill = time to the first greedy token at "
        f"{' and '.join(map(str, PREFILLS))} positions of the example corpus; decode = median of "
        f"{args.steps - 2} steps after a {CONTEXT}-position prefill (the first step left out); "
        f"answer = a {info['chat']}-token chat prompt (`ask`'s frame, the example corpus as "
        f"context) + {ANSWER} greedy tokens, wall time. Medians of {args.repeats} runs, the "
        "engines taking turns.",
        f"- Floor, same run: bytes of weights read per decode step / {floors['bw'] / 1e9:.1f} GB/s "
        f"(256 MB copy, bytes read + written): bf16 parameters {floors['bf16_mb']:.0f} MB "
        f"= **{floors['bf16']:.1f} ms**; the GGUF's tensors {floors['gguf_mb']:.0f} MB = "
        f"**{floors['gguf']:.1f} ms**.",
        agreement(llm, rows, info["margins"]),
        "",
        f"| engine | prefill {PREFILLS[0]} | prefill {PREFILLS[1]} | decode / token | tokens/s "
        f"| × bf16 floor | × GGUF floor | {ANSWER}-token answer |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        label = {
            "before": "ours, before",
            "after, Python": "ours, after: its Python loop",
            "after": "**ours, after: C++ (the default)**",
        }.get(name, name)
        step_ms = row["step"] * 1e3
        lines.append(
            f"| {label} | {row[PREFILLS[0]] * 1e3:.0f} ms | {row[PREFILLS[1]] * 1e3:.0f} ms | "
            f"{step_ms:.1f} ms | {1 / row['step']:.0f} | {step_ms / floors['bf16']:.1f}× | "
            f"{step_ms / floors['gguf']:.1f}× | {row['answer']:.2f} s |"
        )
    return "\n".join(lines)


def floors_ms(llm: FrozenLLM, path: Path) -> dict:
    """Bytes read per decode step (bf16 parameters, GGUF tensors), in MB and as ms at the copy
    bandwidth measured now."""
    bandwidth = copy_bandwidth()
    bf16 = sum(p.numel() * p.element_size() for p in llm.model.parameters())
    tensors = gguf_tensor_bytes(path)
    return {
        "bw": bandwidth,
        "bf16_mb": bf16 / 1e6,
        "gguf_mb": tensors / 1e6,
        "bf16": bf16 / bandwidth * 1e3,
        "gguf": tensors / bandwidth * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=24, help="decode steps (≥ 18)")
    parser.add_argument("--flash-attn", action="store_true", help="llama.cpp's flash attention")
    args = parser.parse_args()
    llama_cpp = load_llama_cpp()
    quiet_transformers()
    torch.set_num_threads(args.threads)
    llm = FrozenLLM.load(None, RuntimeConfig(device="cpu"))
    path = gguf_path()
    peer = Peer(llama_cpp, path, args.threads, args.flash_attn)
    chat = chat_ids(llm)
    prompt_text = llm.tokenizer.decode(chat, skip_special_tokens=False)
    same = peer.llama.tokenize(prompt_text.encode(), add_bos=False, special=True) == chat
    floors = floors_ms(llm, path)
    assert native.load(build=True) is not None, f"no C++ step here: {native.failure()}"
    engines = {
        "llama.cpp": peer,
        "before": Ours(llm, False),
        "after, Python": Ours(llm, True, native=False),
        "after": Ours(llm, True),
    }
    rows = measure(engines, corpus_ids(llm), chat, args)
    info = {
        "version": llama_cpp.__version__,
        "gguf": path.name,
        "system": llama_cpp.llama_print_system_info().decode().strip(),
        "chat": len(chat),
        "same_ids": "yes" if same else "no",
        "margins": peer.margins,  # of the last run's answer, whose tokens `rows` holds
    }
    text = section(llm, rows, floors, info, args)
    place_section()
    write_section(SECTION, text)
    print(text)


if __name__ == "__main__":
    main()
