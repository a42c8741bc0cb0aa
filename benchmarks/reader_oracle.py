"""The reader's ceiling: how much of a paragraph can the frozen LLM read back from n/k input
vectors at all, when those vectors are free parameters fitted to that one paragraph?

    .venv/bin/python benchmarks/reader_oracle.py [--items 8] [--ks 4,8,16,64] [--steps 100]
        [--lr 0.1] [--every 25] [--init shipped] [--section NAME]

The reconstruction probe's rows (`training.answer_probe.ReconstructionProbe`: held-out
HotpotQA paragraphs cut to 64 tokens, in the `ask` frame, "Repeat the context word for word.")
with the compressed paragraph's ceil(64/k) vectors replaced by parameters, started from the
`--init` tokenizer's states at k, and fitted by Adam to that row's reconstruction NLL with the
LLM frozen (the "cramming" experiment of Kuratov et al. 2025, in our frame and our LLM). Every
`--every` steps: the probe's gap closed, (NLL none − NLL fitted) / (NLL none − NLL raw); at the
end, the share of paragraphs repeated whole by greedy decoding (and its token F1), and the
vectors' RMS against the tokenizer's states.

What it says: a tokenizer's states are one point the fitted vectors could reach, so the fitted
gap bounds what any tokenizer can give this LLM in this frame. A ceiling near 100% at ×4 puts
the reconstruction target's miss on the writer (the tokenizer: capacity, steps); a low one on
the reader (the frozen LLM). The reading, written before the full run (after a 30-step lr
scan on 4 items at ×16 only): the reader is not what holds the ×4 reconstruction target
(50% of the gap) back if the fitted vectors close ≥ 50% at ×4 and ×8 within the run's steps;
it is if they stay under 50% at ×4. Writes section `reader-oracle-NAME` of docs/training.md.

`--answers N`: do vectors that let the LLM *repeat* a paragraph also let it *answer* from it?
Each gold paragraph of N answer-probe items gets vectors fitted to repeat it (the question
unseen, as an index would build them), then the answer probe reads them. The reading, written
before the run: repeating carries usable facts if, at ×4, the fitted vectors' answer gap own −
other is at least 20 points above the tokenizer's states' and their greedy accuracy with own
paragraphs is above both none's and other paragraphs'. If so, a writer that reconstructs is on
the way to the answer targets (and fitting at index time is a lever in itself); if not,
reconstruction is not enough and the answer must be trained in the frame. Writes section
`reader-oracle-answers-NAME`.

`--blanks N` adds N "fill in the blank" rows per paragraph to the fit (the trainer's span
objective's examples: questions made from the paragraph alone, so an index could make them
too). The reading, written before the run, on the same 16 items at ×4 and 40 steps as the
repeat-only run (greedy 2 of 16, content +61.1 points): blanks add answerability if greedy own
reaches at least 4 of 16 and the content gap stays within 10 points of repeating's or above.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine_line, write_section

from extok_rag.cli.console import quiet_transformers
from extok_rag.config import RuntimeConfig, fastest_dtype
from extok_rag.datasets.qa_sets import answer_contained, token_f1
from extok_rag.datasets.training_files import read_answer_probe
from extok_rag.models.ask_frame import ask_frame
from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer
from extok_rag.models.generation import generate_batch
from extok_rag.models.llm import FrozenLLM
from extok_rag.training.answer_probe import (
    ReconstructionProbe,
    gap_closed,
    greedy_accuracy,
    probe_examples,
)
from extok_rag.training.frame import (
    answer_rows,
    bare_rows,
    frame_users,
    raw_rows,
    reconstruction_example,
    span_example,
    truncate_text,
)
from extok_rag.training.objective import row_losses
from extok_rag.training.setup import init_path

DOC = Path(__file__).resolve().parent.parent / "docs" / "training.md"


def rms(tensors: list[torch.Tensor]) -> float:
    flat = torch.cat([t.detach().float().reshape(-1) for t in tensors])
    return float(flat.pow(2).mean().sqrt())


@torch.no_grad()
def repeat_baselines(llm, examples, length: int) -> dict[str, float]:
    """Mean NLL per repeated token with no context and with the raw paragraph."""
    return {
        "none": float(row_losses(llm, bare_rows(llm, examples)).mean()),
        "raw": float(row_losses(llm, raw_rows(llm, examples, length)).mean()),
    }


def tokenizer_users(llm, tok, examples, length: int, k: int) -> list[list]:
    """Each example's user turn with its paragraph as the tokenizer's states at k, as fresh
    float32 leaves that `fit` can move."""
    with torch.no_grad():
        users = frame_users(llm, examples, length, tok, [k] * len(examples), tok.config.downscale)
    return [[p.detach().float().clone() if torch.is_tensor(p) else p for p in u] for u in users]


def repeated(llm, examples, users, batch: int = 8) -> tuple[float, float]:
    """Greedy repeats of each example's paragraph (its answer), with room for all of it: the
    share repeated whole (contained, SQuAD normalisation) and the mean token F1."""
    rows = [llm.chat_row(user) for user in users]
    whole, f1 = 0, 0.0
    for i in range(0, len(rows), batch):
        part = examples[i : i + batch]
        room = max(len(llm.tokenize(ex.answer)) for ex in part) + 8
        for ids, ex in zip(generate_batch(llm, rows[i : i + batch], room), part, strict=True):
            text = llm.tokenizer.decode(ids, skip_special_tokens=True)
            whole += answer_contained(text, [ex.answer])
            f1 += token_f1(text, [ex.answer])
    return whole / max(1, len(rows)), f1 / max(1, len(rows))


def fit(
    llm, examples, users, steps: int, lr: float, every: int, baselines, log, extra=((), ())
) -> dict:
    """Adam on the users' tensors (in place: the rows hold them), LLM frozen; the gap closed
    every `every` steps and at the end, the greedy whole-repeat share at the end. `extra`:
    (examples, users) of more rows reading the same tensors, whose mean loss is added."""
    params = [p for user in users for p in user if isinstance(p, torch.Tensor)]
    for p in params:
        p.requires_grad_(True)
    rows = answer_rows(llm, examples, users)
    extra_rows = answer_rows(llm, *extra)
    start_rms = rms(params)
    opt = torch.optim.Adam(params, lr=lr * start_rms)  # a step of ~lr of the states' scale
    curve: dict[int, float] = {}

    def gap() -> float:
        with torch.no_grad():
            nll = float(row_losses(llm, rows).mean())
        return gap_closed(baselines["none"], baselines["raw"], nll)

    t0 = time.perf_counter()
    for step in range(steps + 1):
        if step % every == 0 or step == steps:
            curve[step] = gap()
            log(f"step {step}: gap {curve[step]:.1%} ({time.perf_counter() - t0:.0f} s)")
        if step == steps:
            break
        opt.zero_grad(set_to_none=True)
        loss = row_losses(llm, rows).mean()
        if extra_rows:
            loss = loss + row_losses(llm, extra_rows).mean()
        loss.backward()
        opt.step()
    for p in params:
        p.requires_grad_(False)
    with torch.no_grad():
        whole, f1 = repeated(llm, examples, users)
    return {
        "curve": curve,
        "gap": curve[steps],
        "greedy_whole": whole,
        "greedy_f1": f1,
        "rms_start": start_rms,
        "rms_end": rms(params),
        "seconds": time.perf_counter() - t0,
    }


def blank_rows(paragraphs: list[str], states: list[torch.Tensor], n: int) -> tuple[list, list]:
    """(examples, users): up to n "fill in the blank" rows per paragraph (`span_example`,
    seeded), each reading that paragraph's tensor: questions made from the paragraph alone."""
    rng = random.Random(0)
    examples, users = [], []
    for paragraph, state in zip(paragraphs, states, strict=True):
        for _ in range(n):
            ex = span_example(paragraph, rng)
            if ex is not None:
                examples.append(ex)
                users.append(ask_frame(ex.question, [state]))
    return examples, users


def answers_from_fitted(
    llm, tok, items, k: int, steps: int, lr: float, every: int, length, log, blanks: int = 0
):
    """Do vectors fitted to *repeat* a paragraph carry its facts to a question? Each item's
    gold paragraphs (cut to `length` tokens) get vectors fitted alone for reconstruction (and
    `blanks` fill-in-the-blank rows made from it), question unseen (as an index would build
    them); then the answer probe's rows read them:
    answer gap closed and greedy accuracy, own paragraphs against the next item's (format
    cannot fake the difference), beside the tokenizer's own states at k."""
    paragraphs = [truncate_text(llm, p, length) for item in items for p in item.gold]
    repeats = [reconstruction_example([p]) for p in paragraphs]
    users = tokenizer_users(llm, tok, repeats, length, k)
    baselines = repeat_baselines(llm, repeats, length)
    states = [next(p for p in u if torch.is_tensor(p)) for u in users]  # one per paragraph
    initial = [s.clone() for s in states]
    extra = blank_rows(paragraphs, states, blanks)
    fitted = fit(llm, repeats, users, steps, lr, every, baselines, log, extra)

    questions = probe_examples(items)
    sizes = [len(item.gold) for item in items]

    def per_item(tensors: list[torch.Tensor], shift: int) -> list[list]:
        groups, at = [], 0
        for n in sizes:
            groups.append(tensors[at : at + n])
            at += n
        groups = groups[shift:] + groups[:shift]  # shift 1: the next item's paragraphs
        return [ask_frame(q.question, g) for q, g in zip(questions, groups, strict=True)]

    def nll(users) -> float:
        return float(row_losses(llm, answer_rows(llm, questions, users)).mean())

    with torch.no_grad():
        bare_users = frame_users(llm, questions, 0)
        none = nll(bare_users)
        raw_users = frame_users(llm, questions, length)
        raw = nll(raw_users)
        rows = {
            "tokenizer": (per_item(initial, 0), per_item(initial, 1)),
            "fitted": (per_item(states, 0), per_item(states, 1)),
        }
        out = {
            "recon": fitted,
            "nll_none": none,
            "nll_raw": raw,
            "greedy_none": greedy_accuracy(llm, questions, bare_users),
            "greedy_raw": greedy_accuracy(llm, questions, raw_users),
        }
        for name, (own, other) in rows.items():
            out[f"gap_{name}_own"] = gap_closed(none, raw, nll(own))
            out[f"gap_{name}_other"] = gap_closed(none, raw, nll(other))
            out[f"greedy_{name}_own"] = greedy_accuracy(llm, questions, own)
            out[f"greedy_{name}_other"] = greedy_accuracy(llm, questions, other)
    return out


def answers_table(out: dict, k: int, init: str, fitted: str = "fitted to repeat") -> list[str]:
    lines = [
        f"| ×{k} | reconstruction gap closed | answer gap: own / other (own − other) | "
        "greedy answers: own / other |",
        "|---|---:|---:|---:|",
        f"| none / raw text | — | — | {out['greedy_none']:.0%} / {out['greedy_raw']:.0%} |",
    ]
    for name, label in (("tokenizer", f"`{init}`'s states"), ("fitted", fitted)):
        own, other = out[f"gap_{name}_own"], out[f"gap_{name}_other"]
        recon = out["recon"]["curve"][0 if name == "tokenizer" else max(out["recon"]["curve"])]
        lines.append(
            f"| {label} | {recon:.1%} | {own:.1%} / {other:.1%} ({own - other:+.1%}) | "
            f"{out[f'greedy_{name}_own']:.0%} / {out[f'greedy_{name}_other']:.0%} |"
        )
    return lines


def table(results: dict[int, dict], init: str) -> list[str]:
    steps = list(next(iter(results.values()))["curve"])
    lines = [
        "| k | vectors | "
        + " | ".join(f"step {s}" if s else f"step 0 ({init})" for s in steps)
        + " | greedy repeat: whole / token F1 | RMS start → end |",
        "|---|---:|" + "---:|" * (len(steps) + 2),
    ]
    for k, r in results.items():
        curve = " | ".join(f"{r['curve'][s]:.1%}" for s in steps)
        lines.append(
            f"| ×{k} | {r['vectors']} | {curve} | {r['greedy_whole']:.0%} / {r['greedy_f1']:.2f} | "
            f"{r['rms_start']:.3f} → {r['rms_end']:.3f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=8)
    parser.add_argument("--ks", default="4,8,16,64")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--recon-len", type=int, default=64)
    parser.add_argument("--init", default="shipped", help="a tokenizer checkpoint or 'shipped'")
    parser.add_argument("--section", default="v1-init")
    parser.add_argument(
        "--answers",
        type=int,
        default=0,
        help="instead: this many answer-probe items, their gold paragraphs fitted to repeat at "
        "the first of --ks, then read by the answer probe (own against other paragraphs)",
    )
    parser.add_argument("--context-len", type=int, default=128, help="with --answers")
    parser.add_argument(
        "--blanks",
        type=int,
        default=0,
        help="with --answers: also fit to this many fill-in-the-blank rows per paragraph",
    )
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    quiet_transformers()
    torch.manual_seed(0)
    ks = [int(k) for k in args.ks.split(",")]
    llm = FrozenLLM.load(None, RuntimeConfig(device="auto", dtype=fastest_dtype("cpu")))
    tok = ExtensibleTokenizer.from_pretrained(init_path(args.init), llm).eval()
    if args.answers:
        answers_main(args, llm, tok, ks[0])
        return
    probe = ReconstructionProbe.sample(read_answer_probe(), args.items, recon_len=args.recon_len)
    examples = probe.examples(llm)
    baselines = repeat_baselines(llm, examples, args.recon_len)
    print(json.dumps(baselines), flush=True)
    results: dict[int, dict] = {}
    for k in ks:
        users = tokenizer_users(llm, tok, examples, args.recon_len, k)
        vectors = sum(p.shape[0] for u in users for p in u if isinstance(p, torch.Tensor))
        r = fit(
            llm,
            examples,
            users,
            args.steps,
            args.lr,
            args.every,
            baselines,
            lambda m, k=k: print(f"×{k} {m}", flush=True),
        )
        results[k] = {"vectors": f"{vectors / len(examples):.0f}", **r}
        print(f"×{k}", json.dumps({n: v for n, v in r.items() if n != "curve"}), flush=True)
    publish(
        args,
        f"reader-oracle-{args.section}",
        f"Reader oracle: {args.section}",
        f"`benchmarks/reader_oracle.py` — {machine_line()}; {len(examples)} held-out HotpotQA "
        f"paragraphs, {args.recon_len} tokens each, repeated back (the reconstruction probe's "
        f"rows); each paragraph's vectors fitted alone, Adam lr {args.lr} × their RMS, "
        f"{args.steps} steps, from `{args.init}`'s states. NLL per token: none "
        f"{baselines['none']:.3f}, raw {baselines['raw']:.3f}. Cells: gap closed.",
        table(results, args.init),
    )


def publish(args, section: str, title: str, intro: str, rows: list[str]) -> None:
    """Print the section and write it into docs/training.md (unless --no-write)."""
    body = "\n".join([f"## {title}", "", intro, "", *rows])
    print(body)
    if not args.no_write:
        write_section(section, body, DOC)


def answers_main(args, llm, tok, k: int) -> None:
    items = ReconstructionProbe.sample(read_answer_probe(), args.answers).items
    out = answers_from_fitted(
        llm,
        tok,
        items,
        k,
        args.steps,
        args.lr,
        args.every,
        args.context_len,
        lambda m: print(f"×{k} {m}", flush=True),
        args.blanks,
    )
    print(json.dumps(out), flush=True)
    publish(
        args,
        f"reader-oracle-answers-{args.section}",
        f"Reader oracle, answers: {args.section}",
        f"`benchmarks/reader_oracle.py --answers` — {machine_line()}; {len(items)} held-out "
        f"HotpotQA answer-probe items, gold paragraphs cut to {args.context_len} tokens; each "
        f"paragraph's vectors fitted alone to repeat it"
        + (f" and fill {args.blanks} blanks in its sentences" if args.blanks else "")
        + f" (question unseen), Adam lr {args.lr} × "
        f"their RMS, {args.steps} steps, from `{args.init}`'s states; then read in the answer "
        f"probe's rows. Answer NLL per token: none {out['nll_none']:.3f}, raw "
        f"{out['nll_raw']:.3f}. Other: the next item's paragraphs.",
        answers_table(
            out, k, args.init, "fitted to repeat" + (" and fill blanks" if args.blanks else "")
        ),
    )


if __name__ == "__main__":
    main()
