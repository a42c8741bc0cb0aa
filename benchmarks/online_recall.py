"""Recall after a long conversation (issue 27, item 7): facts a user states at the start of a
conversation (a name, a code, a number), asked about after 4K, 16K and 32K tokens of filler
conversation, read by the online reader (`extok_rag.ask.online`, frame "ask", k auto) against
truncation to the LLM window, raw full attention where it fits, and closed-book.

    /tmp/testlock.sh .venv/bin/python benchmarks/online_recall.py [--lengths 4096,16384]
        [--rows online,truncation] [--groups 4] [--budget-s 300] [--write-docs]

Facts: `--groups` conversations of five facts each, one of every kind in `FACT_KINDS`, with
invented names and random numbers (`make_facts`, seeded): nothing a model can guess. The
conversation opens with the user stating the five facts and the assistant acknowledging them,
then filler turns, then each question in turn over the same read history (the reader's cache is
cropped back after every answer). Filler: paragraphs of the Shakespeare plays outside the
evaluation set (as `online_table3.py`: never trained on, never an `eval lm` window) as
alternating "User:" / "Assistant:" turns, from a seeded start per conversation, until the
filler reaches the length (`filler_turns`).

Rows (the question always in the online reader's frame: context first, then the question):
    online      every turn read in sessions of 512 tokens, each condensed at k (auto: the
                smallest k that keeps the conversation in the window)
    truncation  the most recent turns' raw tokens that fit the window with the question and
                the answer (the whole conversation when it fits: then the same as raw)
    raw         the whole conversation, raw, where it fits the window
    closed-book the question with no history

`--lengths 0` runs a control: the questions right after the facts, no filler.

Recall: the share of answers that contain the fact's value (case-insensitive). Greedy answers
of at most 24 tokens. Finished (conversation, length, row) pieces are journaled under
<home>/eval-runs/online-recall/; a rerun resumes. `--write-docs` writes section
`online-recall` of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from online_table3 import raw_tail_reader, stream_books

LENGTHS = (4096, 16384, 32768)
CONTROL = 0  # `--lengths 0`: the question right after the facts, no filler
ROWS = ("online", "raw", "truncation", "closed-book")  # raw first: truncation reuses it
ANSWER_TOKENS = 24
VERSION = 1


# -- facts -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fact:
    statement: str  # what the user says, e.g. "My locker code is 4417."
    question: str  # e.g. "What is my locker code?"
    value: str  # what a right answer contains, e.g. "4417"


# (statement, question, value kind): one of each per conversation.
FACT_KINDS = (
    ("My name is {}.", "What is my name?", "name"),
    ("My locker code is {}.", "What is my locker code?", "code"),
    ("My cat is called {}.", "What is my cat called?", "name"),
    ("My flat is number {}.", "What number is my flat?", "number"),
    ("My best friend is {}.", "Who is my best friend?", "name"),
)
_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "gr", "th")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou")
_CODAS = ("", "", "n", "r", "x", "l", "sk", "m")


def invented_name(rng: random.Random) -> str:
    """A pronounceable name no text holds by chance (e.g. "Zorblax"): three syllables."""
    syllables = [rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(3)]
    return "".join(syllables).capitalize()


def fact_value(kind: str, rng: random.Random) -> str:
    if kind == "name":
        return invented_name(rng)
    if kind == "code":
        return str(rng.randint(1000, 9999))
    return str(rng.randint(100, 999))


def make_facts(groups: int, seed: int) -> list[list[Fact]]:
    """`groups` lists of one fact of every kind, with values distinct across all of them."""
    rng, seen, out = random.Random(seed), set(), []
    for _ in range(groups):
        group = []
        for statement, question, kind in FACT_KINDS:
            value = fact_value(kind, rng)
            while value in seen:
                value = fact_value(kind, rng)
            seen.add(value)
            group.append(Fact(statement.format(value), question, value))
        out.append(group)
    return out


# -- the conversation ------------------------------------------------------------------------
def opening_turns(facts: list[Fact]) -> str:
    said = " ".join(f.statement for f in facts)
    return f"User: Please remember a few things about me. {said}\nAssistant: Noted, I will.\n"


def paragraphs(text: str, min_chars: int = 40) -> list[str]:
    """Blank-line paragraphs of a book, whitespace folded, short ones (stage directions,
    headings) left out."""
    out = (" ".join(p.split()) for p in text.split("\n\n"))
    return [p for p in out if len(p) >= min_chars]


def filler_turns(pool: list[str], start: int, n_tokens: int, count) -> str:
    """Paragraphs from `pool[start:]` (wrapping round) as alternating User / Assistant turns,
    until their token counts (`count`) reach `n_tokens`."""
    turns, total, i = [], 0, start
    while total < n_tokens:
        role = "User" if len(turns) % 2 == 0 else "Assistant"
        turns.append(f"{role}: {pool[i % len(pool)]}\n")
        total += count(turns[-1])
        i += 1
    return "".join(turns)


def conversation(facts: list[Fact], pool: list[str], start: int, n_tokens: int, tok) -> list[int]:
    """Token ids of the opening turns and `n_tokens` of filler (cut to exactly that many)."""
    count = lambda t: len(tok(t))  # noqa: E731
    filler = tok(filler_turns(pool, start, n_tokens, count))[:n_tokens] if n_tokens else []
    return tok(opening_turns(facts)) + filler


def recalled(answer: str, fact: Fact) -> bool:
    return fact.value.lower() in answer.lower()


# -- reading ---------------------------------------------------------------------------------
def raw_reader(llm, tokenizer, cfg):
    """A reader that keeps every session raw: the online reader's cache and frame, no
    condensing (`online_table3.raw_tail_reader`)."""
    reader = raw_tail_reader()(llm, tokenizer, 2, cfg)  # k unused: nothing is condensed
    reader.raw = True
    return reader


def answers(row: str, llm, tokenizer, ids, facts: list[Fact]) -> dict:
    """Read `ids` as the row reads them, then answer every fact's question over it."""
    import torch

    from extok_rag.ask.online import OnlineConfig, OnlineReader, frame_ids
    from extok_rag.config import GenerationConfig

    gen = GenerationConfig(max_new_tokens=ANSWER_TOKENS)
    cfg = OnlineConfig(answer_tokens=ANSWER_TOKENS)
    ids = torch.tensor(ids, dtype=torch.long)
    start = time.perf_counter()
    if row == "online":
        reader = OnlineReader.for_tokens(llm, tokenizer, len(ids), cfg)
    else:
        reader = raw_reader(llm, tokenizer, cfg)
        longest_closing = max(len(frame_ids(llm, f.question)[1]) for f in facts)
        room = llm.max_positions - reader.positions - longest_closing - ANSWER_TOKENS
        if row == "closed-book":
            ids = ids[:0]
        elif row == "truncation":
            ids = ids[-room:]
        elif len(ids) > room:
            return {"fits": False, "positions": reader.positions + len(ids)}
    reader.read(ids)
    read_s = time.perf_counter() - start
    said = [reader.answer(f.question, gen) for f in facts]
    return {
        "fits": True,
        "k": reader.k if row == "online" else None,
        "tokens_read": len(ids),
        "history_positions": reader.history_positions,
        "answers": said,
        "recalled": [recalled(a, f) for a, f in zip(said, facts, strict=True)],
        "read_seconds": read_s,
        "answer_seconds": time.perf_counter() - start - read_s,
    }


# -- the run ---------------------------------------------------------------------------------
def settings(args) -> dict:
    from extok_rag.config import RuntimeConfig
    from extok_rag.evaluation.journal import file_digest
    from extok_rag.models.defaults import DEFAULT_TOKENIZER_DIR

    return {
        "version": VERSION,
        "groups": args.groups,
        "seed": args.seed,
        "answer_tokens": ANSWER_TOKENS,
        "dtype": RuntimeConfig().resolve_dtype(),
        "tokenizer": file_digest(DEFAULT_TOKENIZER_DIR / "tokenizer.safetensors")[:16],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default=",".join(map(str, LENGTHS)))
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget-s", type=float, default=300.0)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()

    from extok_rag.ask.context import load_tokenizer
    from extok_rag.cli.console import quiet_transformers
    from extok_rag.config import RuntimeConfig
    from extok_rag.evaluation.journal import Journal, settings_key
    from extok_rag.models.llm import FrozenLLM

    config = settings(args)
    journal = Journal.open("online-recall", config)
    quiet_transformers()
    llm = FrozenLLM.load(None, RuntimeConfig())
    tokenizer = load_tokenizer(llm, None)
    tok = lambda text: llm.tokenize(text).tolist()  # noqa: E731
    pool = [p for book in stream_books() for p in paragraphs(book.text)]
    rng = random.Random(args.seed)
    starts = [rng.randrange(len(pool)) for _ in range(args.groups)]
    groups = make_facts(args.groups, args.seed)
    begun = time.perf_counter()
    for n in map(int, args.lengths.split(",")):
        for row in args.rows.split(","):
            for g, facts in enumerate(groups):
                key = f"{row}@{n}#{g}"
                if key in journal.done:
                    continue
                if row == "closed-book" and n != LENGTHS[0]:  # no history: the same at every n
                    journal.record(key, {"fits": True, "same_as": f"{row}@{LENGTHS[0]}#{g}"})
                    continue
                raw = journal.done.get(f"raw@{n}#{g}")
                if row == "truncation" and raw is not None and raw["fits"]:  # all of it fits
                    journal.record(key, {"fits": True, "same_as": f"raw@{n}#{g}"})
                    continue
                if time.perf_counter() - begun > args.budget_s:
                    print(f"budget spent: rerun to go on from {key}", flush=True)
                    return finish(args, journal, config, settings_key)
                ids = conversation(facts, pool, starts[g], n, tok)
                result = answers(row, llm, tokenizer, ids, facts)
                journal.record(key, result)
                print(key, {k: v for k, v in result.items() if k != "answers"}, flush=True)
    finish(args, journal, config, settings_key)


def finish(args, journal, config, settings_key) -> None:
    if args.write_docs:
        write_docs(journal.done, config)


# -- the report ------------------------------------------------------------------------------
def resolved(done: dict, key: str) -> dict | None:
    result = done.get(key)
    while result is not None and "same_as" in result:
        result = done.get(result["same_as"])
    return result


def pieces(done: dict, row: str, n: int, groups: int) -> list[dict] | None:
    """The row's results at length n for every conversation, or None until all are in."""
    got = [resolved(done, f"{row}@{n}#{g}") for g in range(groups)]
    return None if any(r is None for r in got) else got  # type: ignore[return-value]


def recall_cell(got: list[dict] | None) -> str:
    if got is None:
        return "not run"
    if not all(r["fits"] for r in got):
        return f"does not fit ({max(r.get('positions', 0) for r in got):,} positions)"
    hits = sum(sum(r["recalled"]) for r in got)
    total = sum(len(r["recalled"]) for r in got)
    return f"{hits}/{total} ({hits / total:.0%})"


def recall_table(done: dict, groups: int) -> str:
    lengths = (CONTROL, *LENGTHS)
    lines = [
        "| row | no filler (control) | "
        + " | ".join(f"{n // 1024}K tokens of filler" for n in LENGTHS)
        + " |",
        "|---|" + "---:|" * len(lengths),
    ]
    for row in ROWS:
        cells = [recall_cell(pieces(done, row, n, groups)) for n in lengths]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def reading_table(done: dict, groups: int) -> str:
    """What each row read: tokens, positions, k, seconds (means over the conversations)."""
    lines = [
        "| row | filler tokens | tokens read | history positions | k | read s | answer s "
        "(5 questions) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for n in (CONTROL, *LENGTHS):
        for row in ROWS:
            got = pieces(done, row, n, groups)
            if got is None or not all(r["fits"] for r in got) or "same_as" in done[f"{row}@{n}#0"]:
                continue
            mean = lambda key, got=got: sum(r[key] for r in got) / len(got)  # noqa: E731
            k = ", ".join(sorted({f"×{r['k']}" for r in got if r["k"]})) or "raw"
            lines.append(
                f"| {row} | {n:,} | {mean('tokens_read'):,.0f} | "
                f"{mean('history_positions'):,.0f} | {k} | {mean('read_seconds'):.1f} | "
                f"{mean('answer_seconds'):.1f} |"
            )
    return "\n".join(lines)


def sample_answers(done: dict, n: int, facts: list[Fact]) -> str:
    """The first conversation's questions (`facts`) with each row's answer at length n."""
    lines = ["| question (value) | " + " | ".join(ROWS) + " |", "|---|" + "---|" * len(ROWS)]
    for i, fact in enumerate(facts):
        cells = []
        for row in ROWS:
            got = resolved(done, f"{row}@{n}#0")
            if got is None or not got["fits"]:
                cells.append("—")
                continue
            answer = " ".join(got["answers"][i].split()).replace("|", "\\|")
            cells.append(("✓ " if got["recalled"][i] else "✗ ") + answer[:80])
        lines.append(f"| {fact.question} ({fact.value}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(done: dict, groups: int) -> list[str]:
    def rate(row: str, n: int) -> float | None:
        got = pieces(done, row, n, groups)
        if got is None or not all(r["fits"] for r in got):
            return None
        return sum(sum(r["recalled"]) for r in got) / sum(len(r["recalled"]) for r in got)

    online, truncation, closed = rate("online", 16384), rate("truncation", 16384), None
    closed = rate("closed-book", LENGTHS[0])
    if online is None or truncation is None:
        return ["- not all of the 16K rows have run yet."]
    met = "met" if online > truncation else "missed"
    return [
        f"- Recall after 16K tokens: online {online:.0%} against truncation {truncation:.0%} "
        f"(closed-book {closed:.0%}; target: online above truncation): **{met}**."
    ]


def write_docs(done: dict, config: dict) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from report import machine_line, write_section

    groups = config["groups"]
    body = "\n\n".join(
        [
            "## Recall after a long conversation (`benchmarks/online_recall.py`, issue 27)",
            f"`/tmp/testlock.sh .venv/bin/python benchmarks/online_recall.py --groups {groups} "
            f"--seed {config['seed']}` (run in pieces, resumed from its journal) — "
            f"{machine_line()}; {config['dtype']}.",
            NOTES_TEXT.format(groups=groups, facts=groups * len(FACT_KINDS)),
            "Recall (answers that contain the fact's value):",
            recall_table(done, groups),
            "Targets (issue 27):",
            "\n".join(targets(done, groups)),
            "What each row read (means over the conversations):",
            reading_table(done, groups),
            f"The first conversation's answers after {LENGTHS[1] // 1024}K tokens of filler:",
            sample_answers(done, LENGTHS[1], make_facts(1, config["seed"])[0]),
            FINDINGS_TEXT,
        ]
    )
    write_section("online-recall", body)


NOTES_TEXT = """{groups} conversations of five facts each ({facts} facts): a name, a locker code, \
a cat's name, a flat number and a best friend's name, the names invented (three random syllables, \
e.g. "Voulbrask") and the numbers random, seeded. Each conversation opens with "User: Please \
remember a few things about me. My name is … My locker code is … ." and "Assistant: Noted, I \
will.", then exactly 4K, 16K or 32K tokens of filler, then each of the five questions in turn \
over the same read history. Filler: paragraphs of the Shakespeare plays outside the evaluation \
set (the text of `online_table3.py`) as alternating "User:" / "Assistant:" turns, from a seeded \
start per conversation. Every row asks in the online reader's frame (context, then "Question: q … \
Answer the question: q"); greedy answers of at most 24 tokens. **online**: `OnlineReader` frame \
"ask", k auto, sessions of 512 tokens. **truncation**: the most recent raw tokens that fit with \
the question and the answer. **raw**: the whole conversation raw, where it fits (4K only; there \
truncation is the same). **closed-book**: the question alone."""

FINDINGS_TEXT = """What the numbers say (written after the first run; the tables above are \
regenerated from the journal, this paragraph is not).

**The shipped checkpoint cannot carry the facts.** The no-filler control asks right after the \
five facts: read raw, SmolLM2-135M recalls 19 of 20; read by the online reader, the same 70 \
tokens condensed at ×2 (one session, 35 positions), it recalls none. Invented names and \
four-digit codes do not survive the extensible tokenizer even at its mildest k, so no filler \
length can go better. Past that, the LLM itself does not reach back 4K tokens: raw full attention \
over the whole 4K conversation recalls none of the 20, answering with names from the filler \
("Your name is DON JOHN.", "… CLAUDIO.") as it answers closed-book with made-up ones. Truncation \
drops the facts from 16K on, so its recall there is the closed-book rate, as the issue expects. \
The online reader's answers are often not answers: they continue the transcript ("User: I'm \
sorry, I'm not sure …") or are empty. The target (online above truncation after 16K) is missed; \
the lever is the compressor (names and numbers through ×2 … ×8), which the compressor issue owns, \
and past 4K a larger LLM."""


if __name__ == "__main__":
    main()
