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

`--answers N --blanks 0,2` (session 28): both arms on the same items, with a record per item
(which questions each row answers greedily, each answer's NLL), so they pair. Items go in
chunks of `--chunk` (8), fitted together; a journal (`<home>/eval-runs/reader-oracle/`) keeps
each chunk's baselines and each arm as they finish, and a rerun resumes where it stopped.
"Other" is the next item's paragraphs in the chunk, and each paragraph's blanks are seeded by
its text, so the 16-item runs above are not reproduced exactly. The reading, written before
the run, on the probe's first 48 items at ×4, 40 steps, 128 tokens:
(a) self-made questions add answerability if the blanks arm answers greedily (own paragraphs)
more questions than the repeat arm, with sign-test p < 0.05 on the questions only one of them
gets, and its content gap (own − other) is no more than 10 points below repeating's. If (a)
holds, the GPU recipe's first phase becomes reconstruction and span at equal weights (its
share, 0.4, unchanged): the blanks arm in training form. Ahead without p < 0.05: said so, the
recipe stays. Not ahead: the 16-item 4-of-16 against 2 was noise, and the recipe stays.
(b) Fitting at index time reaches the answer targets' bar on these items if an arm's greedy
answers with own paragraphs are at least 40% of raw text's and beat no context with p < 0.05.
A last table, added after 32 items were in (so descriptive, outside the rule): on the items
whose answer-holding paragraph an arm's vectors repeat whole, raw text's greedy answers against
the vectors' own. There the fact is in the vectors, recoverably; what the LLM answers from them
is what a reader makes of it.

`--answers 48 --ks 1 --blanks 0 --against 4` (session 30): the same items at ratio 1, one
fitted vector per token (128 per paragraph), repeat only, paired per question with the ×4
run's journal. The question: the ×4 vectors answer 3 of 48 (raw text 20) though on 30 items
they give the answer's paragraph back whole. Is that because they are dense (four tokens a
vector), or because vectors fitted to repeat are not what the LLM answers from, at any
density? The reading, written before the run:
(c) Density: the ×1 vectors answer more questions (own paragraphs) than the ×4 vectors, with
sign-test p < 0.05 on the questions only one of them gets. Then what is lost on the way to an
answer grows with the ratio even when the content is complete: ×2 runs next to place the
curve, and for the ×4 targets the levers are selective ratios (FlexRAG's: where the answer
lies, a low one) and ×4 trained in the answer frame.
(d) The fitted shape: otherwise, if the ×1 vectors answer fewer questions than raw text with
p < 0.05, then even one vector per token, fitted to repeat, is not read as text when
answering: what the vectors are fitted to, not how dense they are, keeps the answer out.
Answering has to be trained in the frame (as the recipe's mixture does), and ×2 is not run.
Neither: said so, and nothing changes. Beside it, descriptive: at ×1 the fitted vectors'
cosine to their own tokens' input embeddings, at the start (the tokenizer's states) and the
end.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paired_runs import paired_cell
from report import machine_line, write_section

from extok_rag.cli.console import quiet_transformers
from extok_rag.config import RuntimeConfig, fastest_dtype
from extok_rag.datasets.qa_sets import answer_contained, token_f1
from extok_rag.datasets.training_files import read_answer_probe
from extok_rag.evaluation.journal import Journal
from extok_rag.models.ask_frame import ask_frame
from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer
from extok_rag.models.llm import FrozenLLM
from extok_rag.training.answer_probe import (
    ReconstructionProbe,
    gap_closed,
    greedy_hits,
    greedy_texts,
    probe_examples,
)
from extok_rag.training.frame import (
    answer_rows,
    bare_rows,
    frame_users,
    raw_rows,
    reconstruction_example,
    span_example,
    text_tokens,
    truncate_text,
)
from extok_rag.training.objective import row_losses
from extok_rag.training.setup import init_path

DOC = Path(__file__).resolve().parent.parent / "docs" / "training.md"


def rms(tensors: list[torch.Tensor]) -> float:
    flat = torch.cat([t.detach().float().reshape(-1) for t in tensors])
    return float(flat.pow(2).mean().sqrt())


def mean(values) -> float:
    return sum(values) / max(1, len(values))


def row_nll(llm, rows) -> tuple[list[float], list[int]]:
    """Each row's summed NLL over its scored tokens, and how many it scores."""
    losses = row_losses(llm, rows)
    return losses.nll.tolist(), losses.count.tolist()


def per_token(nll: list[float], tokens: list[int]) -> float:
    """NLL per scored token over rows (as `ChunkLosses.mean`)."""
    return sum(nll) / max(1, sum(tokens))


@torch.no_grad()
def repeat_baselines(llm, examples, length: int) -> dict[str, list]:
    """Each repeat row's summed NLL with no context and with the raw paragraph, and its
    scored tokens (the paragraph's, the same in every row of that example)."""
    none, tokens = row_nll(llm, bare_rows(llm, examples))
    raw, _ = row_nll(llm, raw_rows(llm, examples, length))
    return {"none": none, "raw": raw, "tokens": tokens}


def tokenizer_users(llm, tok, examples, length: int, k: int) -> list[list]:
    """Each example's user turn with its paragraph as the tokenizer's states at k, as fresh
    float32 leaves that `fit` can move."""
    with torch.no_grad():
        users = frame_users(llm, examples, length, tok, [k] * len(examples), tok.config.downscale)
    return [[p.detach().float().clone() if torch.is_tensor(p) else p for p in u] for u in users]


def repeated(llm, examples, users) -> tuple[list[bool], list[float]]:
    """Greedy repeats of each example's paragraph (its answer), with room for the longest: per
    example, repeated whole (contained, SQuAD normalisation) and its token F1."""
    room = max(len(llm.tokenize(ex.answer)) for ex in examples) + 8
    texts = greedy_texts(llm, users, room)
    answers = [[ex.answer] for ex in examples]
    return (
        [answer_contained(t, a) for t, a in zip(texts, answers, strict=True)],
        [token_f1(t, a) for t, a in zip(texts, answers, strict=True)],
    )


def fit(
    llm,
    examples,
    users,
    steps: int,
    lr: float,
    every: int,
    baselines,
    log,
    extra=((), ()),
    checks: tuple[int, ...] = (),
    at=None,
) -> dict:
    """Adam on the users' tensors (in place: the rows hold them), LLM frozen; the gap closed
    every `every` steps and at the end, each row's NLL at the start and the end, the greedy
    repeats at the end. `extra`: (examples, users) of more rows reading the same tensors, whose
    mean loss is added. `checks`: more steps to measure at; there `at()` (if given) reads the
    tensors as they are, and "reads" holds, per check, the rows' NLLs and what it returned."""
    params = [p for user in users for p in user if isinstance(p, torch.Tensor)]
    for p in params:
        p.requires_grad_(True)
    rows = answer_rows(llm, examples, users)
    extra_rows = answer_rows(llm, *extra)
    start_rms = rms(params)
    opt = torch.optim.Adam(params, lr=lr * start_rms)  # a step of ~lr of the states' scale
    tokens = baselines["tokens"]
    none, raw = per_token(baselines["none"], tokens), per_token(baselines["raw"], tokens)
    curve: dict[int, float] = {}
    nll: dict[int, list[float]] = {}
    reads: list[dict] = []

    t0 = time.perf_counter()
    for step in range(steps + 1):
        if step % every == 0 or step == steps or step in checks:
            with torch.no_grad():
                nll[step] = row_nll(llm, rows)[0]
            curve[step] = gap_closed(none, raw, per_token(nll[step], tokens))
            log(f"step {step}: gap {curve[step]:.1%} ({time.perf_counter() - t0:.0f} s)")
        if step in checks and at is not None:
            with torch.no_grad():
                reads.append({"step": step, "nll": nll[step], **at()})
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
        "nll_start": nll[0],
        "nll_end": nll[steps],
        "whole": whole,
        "f1": f1,
        "greedy_whole": mean(whole),
        "greedy_f1": mean(f1),
        "rms_start": start_rms,
        "rms_end": rms(params),
        "seconds": time.perf_counter() - t0,
        **({"reads": reads} if at is not None else {}),
    }


def blank_rows(paragraphs: list[str], states: list[torch.Tensor], n: int) -> tuple[list, list]:
    """(examples, users): up to n "fill in the blank" rows per paragraph (`span_example`,
    seeded by the paragraph's text, so a paragraph gets the same blanks in any company), each
    reading that paragraph's tensor: questions made from the paragraph alone."""
    examples, users = [], []
    for paragraph, state in zip(paragraphs, states, strict=True):
        rng = random.Random(paragraph)
        for _ in range(n):
            ex = span_example(paragraph, rng)
            if ex is not None:
                examples.append(ex)
                users.append(ask_frame(ex.question, [state]))
    return examples, users


def by_item(flat: list, sizes: list[int]) -> list[list]:
    """A per-paragraph list cut into its items' groups (`sizes`: paragraphs per item)."""
    groups, at = [], 0
    for n in sizes:
        groups.append(flat[at : at + n])
        at += n
    return groups


@dataclass
class AnswerChunk:
    """A few answer-probe items, their gold paragraphs cut to `length` tokens: the rows an
    index would fit (each paragraph repeated, question unseen) and the questions that read
    them, with each item's own paragraphs or the next item's in the chunk ("other")."""

    questions: list  # a FrameExample per item
    paragraphs: list[str]
    repeats: list  # a FrameExample per paragraph
    sizes: list[int]  # paragraphs per item
    length: int

    @classmethod
    def build(cls, llm, items, length: int) -> AnswerChunk:
        paragraphs = [truncate_text(llm, p, length) for item in items for p in item.gold]
        return cls(
            probe_examples(items),
            paragraphs,
            [reconstruction_example([p]) for p in paragraphs],
            [len(item.gold) for item in items],
            length,
        )

    def bearing(self) -> list[list[bool]]:
        """Per item: whether each of its paragraphs, as cut, holds the answer."""
        return [
            [answer_contained(p, [q.answer]) for p in group]
            for q, group in zip(self.questions, by_item(self.paragraphs, self.sizes), strict=True)
        ]

    @torch.no_grad()
    def token_cosine(self, llm, states: list[torch.Tensor]) -> list[float]:
        """Per paragraph at ratio 1 (a vector per token): the mean cosine of each vector with
        its own token's input embedding."""
        out = []
        for paragraph, state in zip(self.paragraphs, states, strict=True):
            ids = text_tokens(llm, paragraph, self.length).ids
            if len(ids) != state.shape[0]:
                raise ValueError("token_cosine needs one vector per token (ratio 1)")
            embeds = llm.embed_tokens(ids).float()
            out.append(float(torch.cosine_similarity(state.float(), embeds, dim=-1).mean()))
        return out

    def users(self, states: list[torch.Tensor], shift: int) -> list[list]:
        """Each question's user turn reading item (i + shift)'s paragraph states."""
        groups = by_item(states, self.sizes)
        groups = groups[shift:] + groups[:shift]
        return [ask_frame(q.question, g) for q, g in zip(self.questions, groups, strict=True)]

    @torch.no_grad()
    def read(self, llm, users) -> dict[str, list]:
        """Per question: the answer's summed NLL and its tokens, and whether greedy decoding
        contains the answer."""
        nll, tokens = row_nll(llm, answer_rows(llm, self.questions, users))
        return {"nll": nll, "tokens": tokens, "hit": greedy_hits(llm, self.questions, users)}

    def read_states(self, llm, states: list[torch.Tensor]) -> dict[str, list]:
        """`read` with each item's own paragraph states and with the next item's."""
        own, other = self.read(llm, self.users(states, 0)), self.read(llm, self.users(states, 1))
        return {
            **{f"{n}_own": v for n, v in own.items()},
            **{f"{n}_other": v for n, v in other.items()},
        }


def paragraph_states(users) -> list[torch.Tensor]:
    return [next(p for p in u if torch.is_tensor(p)) for u in users]  # one per paragraph


def chunk_base(llm, tok, chunk: AnswerChunk, k: int) -> dict:
    """A chunk's rows without fitting: none, raw text, the tokenizer's states at k, and the
    repeat rows' NLLs with no context and with the raw paragraph."""
    none = chunk.read(llm, frame_users(llm, chunk.questions, 0))
    raw = chunk.read(llm, frame_users(llm, chunk.questions, chunk.length))
    states = paragraph_states(tokenizer_users(llm, tok, chunk.repeats, chunk.length, k))
    return {
        **{f"{n}_none": v for n, v in none.items()},
        **{f"{n}_raw": v for n, v in raw.items()},
        **{f"{n}_tokenizer": v for n, v in chunk.read_states(llm, states).items()},
        **{f"recon_{n}": v for n, v in repeat_baselines(llm, chunk.repeats, chunk.length).items()},
    }


def recon_baselines(base: dict) -> dict[str, list]:
    """The repeat rows' NLLs with no context and raw text, and their scored tokens, from a
    chunk's baselines (`chunk_base`), as `fit` takes them."""
    return {n: base[f"recon_{n}"] for n in ("none", "raw", "tokens")}


def chunk_arm(llm, tok, chunk: AnswerChunk, k: int, blanks: int, base: dict, steps, lr, log):
    """Each paragraph's vectors, from the tokenizer's states at k, fitted alone to repeat it
    (and fill `blanks` blanks in it), the question unseen; then read by the questions."""
    users = tokenizer_users(llm, tok, chunk.repeats, chunk.length, k)
    states = paragraph_states(users)
    baselines = recon_baselines(base)
    extra = blank_rows(chunk.paragraphs, states, blanks)
    cosine = {"token_cos_start": chunk.token_cosine(llm, states)} if k == 1 else {}
    fitted = fit(llm, chunk.repeats, users, steps, lr, steps, baselines, log, extra)
    if k == 1:
        cosine["token_cos_end"] = chunk.token_cosine(llm, states)
    return {"blank_rows": len(extra[0]), **fitted, **cosine, **chunk.read_states(llm, states)}


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
        default="0",
        help="with --answers: comma-separated arms, each fitting this many fill-in-the-blank "
        "rows per paragraph beside the repeat row, on the same items (paired)",
    )
    parser.add_argument("--chunk", type=int, default=8, help="with --answers: items per fit")
    parser.add_argument(
        "--against",
        default="",
        help="with --answers: comma-separated ks; pair each arm per question with the same "
        "run's journal at each (on the chunks all of them finished)",
    )
    parser.add_argument(
        "--report-only", action="store_true", help="with --answers: publish the journal's chunks"
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
    none, raw = (per_token(baselines[n], baselines["tokens"]) for n in ("none", "raw"))
    print(json.dumps({"none": none, "raw": raw}), flush=True)
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
        print(f"×{k}", json.dumps({n: v for n, v in r.items() if not isinstance(v, (dict, list))}))
    publish(
        args,
        f"reader-oracle-{args.section}",
        f"Reader oracle: {args.section}",
        f"`benchmarks/reader_oracle.py` — {machine_line()}; {len(examples)} held-out HotpotQA "
        f"paragraphs, {args.recon_len} tokens each, repeated back (the reconstruction probe's "
        f"rows); each paragraph's vectors fitted alone, Adam lr {args.lr} × their RMS, "
        f"{args.steps} steps, from `{args.init}`'s states. NLL per token: none "
        f"{none:.3f}, raw {raw:.3f}. Cells: gap closed.",
        table(results, args.init),
    )


def publish(args, section: str, title: str, intro: str, rows: list[str]) -> None:
    """Print the section and write it into docs/training.md (unless --no-write)."""
    body = "\n".join([f"## {title}", "", intro, "", *rows])
    print(body)
    if not args.no_write:
        write_section(section, body, DOC)


def arm_label(blanks: int) -> str:
    return f"fitted to repeat and fill {blanks} blanks" if blanks else "fitted to repeat"


def recon_gap(base: dict[str, list], nll: list[float]) -> float:
    """The reconstruction gap a chunk's repeat rows close at these NLLs (`base`: `chunk_base`'s
    lists, gathered)."""
    none, raw = (per_token(base[f"recon_{r}"], base["recon_tokens"]) for r in ("none", "raw"))
    return gap_closed(none, raw, per_token(nll, base["recon_tokens"]))


def answer_gaps(base: dict[str, list], cells: dict[str, list], suffix: str = ""):
    """The answer gap closed with own and with other paragraphs by `cells`' NLLs (`nll_own`,
    `nll_other`, + suffix); every row of a question scores the same answer."""

    def gap(nll: list[float]) -> float:
        none, raw = (per_token(base[f"nll_{r}"], base["tokens_none"]) for r in ("none", "raw"))
        return gap_closed(none, raw, per_token(nll, base["tokens_none"]))

    return gap(cells[f"nll_own{suffix}"]), gap(cells[f"nll_other{suffix}"])


def answers_table(base: dict[str, list], arms: dict[int, dict[str, list]], k: int, init: str):
    """Totals over the items done (gaps from mean NLLs, greedy counts), then each arm's greedy
    answers paired against none, the tokenizer's states and the first arm."""
    n = len(base["hit_none"])
    first = next(iter(arms.values()))
    rows = [(f"`{init}`'s states", "tokenizer", recon_gap(base, first["nll_start"]))] + [
        (arm_label(b), b, recon_gap(base, arm["nll_end"])) for b, arm in arms.items()
    ]
    lines = [
        f"| ×{k}, {n} items | reconstruction gap | answer gap own / other (own − other) | "
        "greedy answers own / other |",
        "|---|---:|---:|---:|",
        f"| no context / raw text | — | — | {sum(base['hit_none'])} / {sum(base['hit_raw'])} |",
    ]
    for label, key, rec in rows:
        cells = base if key == "tokenizer" else arms[key]
        suffix = "_tokenizer" if key == "tokenizer" else ""
        own, other = answer_gaps(base, cells, suffix)
        lines.append(
            f"| {label} | {rec:.1%} | {own:.1%} / {other:.1%} ({own - other:+.1%}) | "
            f"{sum(cells[f'hit_own{suffix}'])} / {sum(cells[f'hit_other{suffix}'])} |"
        )
    lines += [
        "",
        "| greedy, own paragraphs: right only with the row / only with … (sign-test p) | "
        "no context | the tokenizer's states | "
        + arm_label(next(iter(arms)))
        + " | share of raw's |",
        "|---|---:|---:|---:|---:|",
    ]
    first_hits = first["hit_own"]
    for b, arm in arms.items():
        hits = arm["hit_own"]
        lines.append(
            f"| {arm_label(b)} | {paired_cell(hits, base['hit_none'])} | "
            f"{paired_cell(hits, base['hit_own_tokenizer'])} | "
            + ("—" if arm is first else paired_cell(hits, first_hits))
            + f" | {sum(hits) / max(1, sum(base['hit_raw'])):.2f} |"
        )
    return lines


def repeat_answer_table(base: dict[str, list], arms: dict[int, dict[str, list]], bearing):
    """Repeating against answering, per item: on the items where a paragraph holding the
    answer comes back whole from an arm's vectors (the fact is recoverable from them exactly),
    the raw text's greedy answers against the vectors' own. `bearing`: per item, whether each
    of its paragraphs (in order) holds the answer."""
    lines = [
        "| repeating against answering | items whose answer's paragraph is repeated whole | "
        "of these, answered greedily: raw text / the vectors; right only raw / only vectors |",
        "|---|---:|---:|",
    ]
    held = sum(any(b) for b in bearing)
    for b, arm in arms.items():
        wholes = by_item(arm["whole"], [len(flags) for flags in bearing])
        keep = [
            any(w and f for w, f in zip(whole, flags, strict=True))
            for whole, flags in zip(wholes, bearing, strict=True)
        ]
        raw = [h for h, w in zip(base["hit_raw"], keep, strict=True) if w]
        own = [h for h, w in zip(arm["hit_own"], keep, strict=True) if w]
        lines.append(
            f"| {arm_label(b)} | {sum(keep)} of {held} | {sum(raw)} / {sum(own)}; "
            f"{paired_cell(raw, own)} |"
        )
    return lines


def done_chunks(journal: Journal, n_chunks: int, pieces: list[str]) -> list[int]:
    """The chunks whose every piece (an arm's journal name) is in the journal."""
    return [c for c in range(n_chunks) if all(f"{c}/{p}" in journal.done for p in pieces)]


def gathered(journal: Journal, done: list[int], key: str) -> dict[str, list]:
    """The per-question (or per-paragraph) lists of piece `key` over the `done` chunks."""
    out: dict[str, list] = {}
    for c in done:
        for name, value in journal.done[f"{c}/{key}"].items():
            if isinstance(value, list):
                out.setdefault(name, []).extend(value)
    return out


def against_table(base, fitted, k: int, other_fitted, other_k: int) -> list[str]:
    """Each arm at ×k paired per question with the same arm at ×other_k (another journal, the
    same items), and with raw text."""
    lines = [
        f"| greedy, own paragraphs, {len(base['hit_raw'])} items | ×{k} / ×{other_k} / raw "
        f"text | right only ×{k} / only ×{other_k} (p) | right only ×{k} / only raw text (p) |",
        "|---|---:|---:|---:|",
    ]
    for b, arm in fitted.items():
        hits, others = arm["hit_own"], other_fitted[b]["hit_own"]
        lines.append(
            f"| {arm_label(b)} | {sum(hits)} / {sum(others)} / {sum(base['hit_raw'])} | "
            f"{paired_cell(hits, others)} | {paired_cell(hits, base['hit_raw'])} |"
        )
    return lines


def cosine_lines(fitted, k: int) -> list[str]:
    """Where the arms ran at ratio 1: their vectors' cosine to their own tokens' embeddings."""
    return [
        f"\n{arm_label(b)} at ×{k}: cosine of each vector to its own token's input embedding, "
        f"mean over paragraphs, {mean(arm['token_cos_start']):.3f} (the tokenizer's states) → "
        f"{mean(arm['token_cos_end']):.3f} (fitted)."
        for b, arm in fitted.items()
        if "token_cos_start" in arm
    ]


def answers_main(args, llm, tok, k: int) -> None:
    """Chunks of `--chunk` items, each journalled as it finishes (its baselines, then each
    arm), so a killed run resumes at the chunk and arm in flight; the section covers the items
    done and says so when they are fewer than asked."""
    arms = [int(b) for b in args.blanks.split(",")]
    items = ReconstructionProbe.sample(read_answer_probe(), args.answers).items
    settings = {
        "k": k,
        "steps": args.steps,
        "lr": args.lr,
        "context_len": args.context_len,
        "chunk": args.chunk,
        "init": args.init,
        "dtype": str(llm.dtype),
        "version": 2,
    }
    journal = Journal.open("reader-oracle", settings)
    print(f"journal {journal.path} ({len(journal.done)} pieces done)", flush=True)
    chunks = [
        AnswerChunk.build(llm, items[i : i + args.chunk], args.context_len)
        for i in range(0, len(items), args.chunk)
    ]  # tokenising the cut paragraphs: seconds; the report needs the done ones too
    for c, chunk in enumerate(chunks):
        if args.report_only:
            break
        if f"{c}/base" not in journal.done:
            journal.record(f"{c}/base", chunk_base(llm, tok, chunk, k))
        for b in arms:
            if f"{c}/blanks{b}" in journal.done:
                continue
            log = lambda m, c=c, b=b: print(f"chunk {c} blanks {b}: {m}", flush=True)  # noqa: E731
            base = journal.done[f"{c}/base"]
            journal.record(
                f"{c}/blanks{b}", chunk_arm(llm, tok, chunk, k, b, base, args.steps, args.lr, log)
            )
    pieces = [f"blanks{b}" for b in arms]
    done = done_chunks(journal, len(chunks), pieces)
    if not done:
        print("no chunk finished yet")
        return
    others = {
        kk: Journal.open("reader-oracle", {**settings, "k": kk})
        for kk in (int(x) for x in args.against.split(",") if x)
    }
    for other in others.values():
        finished = set(done_chunks(other, len(chunks), pieces))
        done = [c for c in done if c in finished]  # paired: the chunks every ratio finished
    if not done:
        print(f"no chunk finished at ×{k} and at every ×k of --against")
        return
    base = gathered(journal, done, "base")
    bearing = [flags for c in done for flags in chunks[c].bearing()]
    fitted = {b: gathered(journal, done, f"blanks{b}") for b in arms}
    none, raw = (per_token(base[f"nll_{r}"], base["tokens_none"]) for r in ("none", "raw"))
    n = len(base["hit_none"])
    partial = f" **Partial: {n} of {len(items)} items.**" if n < len(items) else ""
    rows = [
        *answers_table(base, fitted, k, args.init),
        "",
        *repeat_answer_table(base, fitted, bearing),
    ]
    for kk, other in others.items():
        pairs = {b: gathered(other, done, f"blanks{b}") for b in arms}
        rows += ["", *against_table(base, fitted, k, pairs, kk)]
    rows += cosine_lines(fitted, k)
    publish(
        args,
        f"reader-oracle-answers-{args.section}",
        f"Reader oracle, answers: {args.section}",
        f"`benchmarks/reader_oracle.py --answers {args.answers} --ks {k} --blanks {args.blanks}"
        + (f" --against {args.against}" if args.against else "")
        + f"` — "
        f"{machine_line()}; held-out HotpotQA answer-probe items (the first {n} of the probe's "
        f"seeded order), gold paragraphs cut to {args.context_len} tokens; in chunks of "
        f"{args.chunk} items, each paragraph's vectors fitted alone (the question unseen) from "
        f"`{args.init}`'s states at ×{k}, Adam lr {args.lr} × their RMS, {args.steps} steps; "
        f"then read in the answer probe's rows. "
        f"Answer NLL per token: none {none:.3f}, raw {raw:.3f}. Other: the next item's "
        f"paragraphs in its chunk. Greedy: answers contained in 32 tokens, counts of {n}.{partial}",
        rows,
    )


if __name__ == "__main__":
    main()
