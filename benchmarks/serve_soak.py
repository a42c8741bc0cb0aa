"""Soak of `extok-rag serve` while its index changes: a real server process on loopback for
`--duration` seconds (default 600) with 4 clients streaming /ask answers back to back, 2
`extok-rag index` commits of new documents while they run, and 1 client that disconnects
mid-stream every minute.

    .venv/bin/python benchmarks/serve_soak.py                        # 10 minutes, writes the doc
    .venv/bin/python benchmarks/serve_soak.py --duration 60 --no-write   # a smoke run

Set-up (not timed): a work folder holding a corpus copied from the repository
(`examples/corpus/` and three of `docs/*.md`), indexed with the default models, then the server
on it (default models, `--max-batch 16`). Each commit writes one new document carrying a fact
found nowhere else, runs `extok-rag index` on the corpus (a process of its own, beside the
running server), waits for the server to serve the new table version (it reloads on commit),
then asks about the fact through /v1/chat/completions: the new document must be among
`extok.sources`, and every earlier new document too. Reported: errors by kind (the deliberate
disconnects apart), latency p50/p95 (whole answer and first token), the server's RSS at start
(ready, and after a warm-up of one answer then `--clients` at once), every minute, and at the
end, with the second half's trend (MB/min), and what each reload made visible. Writes
section `serve-soak` of docs/reliability.md unless `--no-write`.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine_line, write_section
from serve_load import QUESTIONS, Outcome, Server, one_answer, percentile, rss_mb

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "reliability.md"
CORPUS = [
    REPO / "examples" / "corpus" / "extensible-tokenization.md",
    REPO / "examples" / "corpus" / "extok-rag.md",
    REPO / "docs" / "design.md",
    REPO / "docs" / "scaling.md",
    REPO / "docs" / "indexing.md",
]


@dataclass(frozen=True)
class Fact:
    """A new document's one fact, the question that asks for it, and the word an answer that
    read it would contain."""

    name: str
    text: str
    question: str
    answer: str


FACTS = [
    Fact(
        "harbour-lighthouse.md",
        "# The Quillon lighthouse\n\nThe Quillon lighthouse on Vessmark island was built in "
        "1887 by the engineer Agnes Morrow. Its lamp is green, and its keeper's cat is called "
        "Tobiah.\n",
        "Who built the Quillon lighthouse on Vessmark island?",
        "Morrow",
    ),
    Fact(
        "orchard-festival.md",
        "# The Brenwick orchard festival\n\nThe Brenwick orchard festival is held every "
        "October in the village of Tallowmere. Its prize apple variety is the Saffron Pippin, "
        "first grown there by Osric Hale.\n",
        "Which apple variety wins the prize at the Brenwick orchard festival?",
        "Saffron",
    ),
]


@dataclass
class Commit:
    fact: Fact
    started: float  # seconds into the soak
    index_s: float = 0.0  # the `extok-rag index` run
    visible_s: float = 0.0  # from the run's end to the server serving the new version
    version: int | None = None
    sources: list[str] = field(default_factory=list)
    answer: str = ""
    earlier_visible: bool = True  # every earlier new document still retrieved
    error: str | None = None

    @property
    def retrieved(self) -> bool:
        return self.fact.name in self.sources

    @property
    def mentioned(self) -> bool:
        return self.fact.answer.lower() in self.answer.lower()


@dataclass
class Disconnect:
    at: float
    tokens_read: int
    error: str | None = None


@dataclass
class Soak:
    outcomes: list[Outcome] = field(default_factory=list)
    commits: list[Commit] = field(default_factory=list)
    disconnects: list[Disconnect] = field(default_factory=list)
    rss: list[tuple[float, float]] = field(default_factory=list)  # (seconds, MB)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def errors(self) -> collections.Counter:
        return collections.Counter(o.error for o in self.outcomes if o.error is not None)


def index_command(corpus: Path, index: Path, args: argparse.Namespace) -> list[str]:
    command = [str(Path(sys.executable).with_name("extok-rag")), "index", str(corpus)]
    command += ["--index", str(index)]
    for option in ("llm", "embedder"):
        if getattr(args, option) is not None:
            command += [f"--{option}", str(getattr(args, option))]
    if args.device is not None:
        command += ["--device", args.device]
    return command


def build_corpus(work: Path) -> Path:
    corpus = work / "corpus"
    corpus.mkdir(parents=True)
    for path in CORPUS:
        shutil.copy(path, corpus / path.name)
    return corpus


def run_index(corpus: Path, index: Path, args: argparse.Namespace) -> float:
    """`extok-rag index` as a process of its own; its seconds. SystemExit with its output if
    it fails."""
    start = time.perf_counter()
    done = subprocess.run(index_command(corpus, index, args), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"extok-rag index failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def committed_version(index: Path) -> int:
    return int(json.loads((index / "manifest.json").read_text())["table_version"])


def chat_sources(client: httpx.Client, question: str, args: argparse.Namespace) -> tuple:
    """(doc paths of `extok.sources`, answer text) of one /v1/chat/completions answer."""
    body = {
        "messages": [{"role": "user", "content": question}],
        "max_tokens": args.max_new_tokens,
        "extok_mode": args.mode,
        "extok_top_n": args.top_n,
    }
    response = client.post("/v1/chat/completions", json=body)
    response.raise_for_status()
    reply = response.json()
    sources = [s["doc_path"] for s in reply["extok"]["sources"]]
    return sources, reply["choices"][0]["message"]["content"]


def commit_facts(server: Server, corpus: Path, index: Path, soak: Soak, t0: float, args) -> None:
    """At 1/3 and 2/3 of the duration: a new document, an index run, then the check."""
    with httpx.Client(base_url=server.url, timeout=600) as client:
        for n, fact in enumerate(FACTS[: args.commits]):
            at = args.duration * (n + 1) / (args.commits + 1)
            time.sleep(max(0.0, t0 + at - time.monotonic()))
            commit = Commit(fact, time.monotonic() - t0)
            try:
                (corpus / fact.name).write_text(fact.text)
                commit.index_s = run_index(corpus, index, args)
                ran = time.monotonic()
                commit.version = committed_version(index)
                while client.get("/health").json()["table_version"] != commit.version:
                    if time.monotonic() - ran > 300:
                        raise TimeoutError("the server did not serve the new version in 300 s")
                    time.sleep(0.5)  # the clients' next request reloads it
                commit.visible_s = time.monotonic() - ran
                commit.sources, commit.answer = chat_sources(client, fact.question, args)
                for earlier in FACTS[:n]:
                    sources, _ = chat_sources(client, earlier.question, args)
                    commit.earlier_visible &= earlier.name in sources
            except (httpx.HTTPError, TimeoutError, SystemExit) as exc:
                commit.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            with soak.lock:
                soak.commits.append(commit)
            print(
                f"commit {n + 1} at {commit.started:.0f} s: index {commit.index_s:.1f} s, "
                f"served after {commit.visible_s:.1f} s, retrieved {commit.retrieved}, "
                f"answer {commit.answer!r}, error {commit.error}",
                flush=True,
            )


def disconnect_once(client: httpx.Client, body: dict) -> tuple[int, str | None]:
    """A streamed /ask left after its first token: (tokens read, error or None)."""
    tokens, event = 0, None
    try:
        with client.stream("POST", "/ask", json=body) as response:
            if response.status_code != 200:
                return 0, f"HTTP {response.status_code}"
            for line in response.iter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:") and event == "token":
                    tokens += 1
                    break  # leaving the block closes the connection mid-stream
    except httpx.HTTPError as exc:
        return tokens, type(exc).__name__
    return tokens, None


def disconnecting_client(server: Server, soak: Soak, t0: float, stop, args) -> None:
    n = 0
    with httpx.Client(base_url=server.url, timeout=600) as client:
        while True:
            n += 1
            at = t0 + n * args.disconnect_every
            if at > t0 + args.duration or stop.wait(max(0.0, at - time.monotonic())):
                return
            body = ask_body(QUESTIONS[n % len(QUESTIONS)], args) | {"max_new_tokens": 256}
            tokens, error = disconnect_once(client, body)
            with soak.lock:
                soak.disconnects.append(Disconnect(time.monotonic() - t0, tokens, error))


def ask_body(question: str, args: argparse.Namespace) -> dict:
    return {
        "question": question,
        "mode": args.mode,
        "top_n": args.top_n,
        "max_new_tokens": args.max_new_tokens,
        "stream": True,
    }


def streaming_client(server: Server, soak: Soak, offset: int, stop, args) -> None:
    with httpx.Client(base_url=server.url, timeout=600) as client:
        n = offset
        while not stop.is_set():
            outcome = one_answer(client, ask_body(QUESTIONS[n % len(QUESTIONS)], args))
            n += 1
            with soak.lock:
                soak.outcomes.append(outcome)


def sample_rss(server: Server, soak: Soak, t0: float, stop) -> None:
    while not stop.wait(10):
        soak.rss.append((time.monotonic() - t0, rss_mb(server.proc.pid)[0]))


def run_soak(server: Server, corpus: Path, index: Path, args) -> Soak:
    soak = Soak()
    stop = threading.Event()
    t0 = time.monotonic()
    soak.rss.append((0.0, rss_mb(server.proc.pid)[0]))
    threads = [
        threading.Thread(target=streaming_client, args=(server, soak, i, stop, args))
        for i in range(args.clients)
    ]
    threads.append(
        threading.Thread(target=disconnecting_client, args=(server, soak, t0, stop, args))
    )
    threads.append(threading.Thread(target=sample_rss, args=(server, soak, t0, stop)))
    committer = threading.Thread(target=commit_facts, args=(server, corpus, index, soak, t0, args))
    for thread in [*threads, committer]:
        thread.start()
    while time.monotonic() - t0 < args.duration:
        time.sleep(min(5.0, max(0.1, args.duration - (time.monotonic() - t0))))
        with soak.lock:
            done, errors = len(soak.outcomes), sum(soak.errors().values())
        print(f"{time.monotonic() - t0:.0f} s: {done} answers, {errors} errors", flush=True)
    committer.join()  # the commits happen while the clients run, however long they take
    stop.set()
    for thread in threads:
        thread.join()
    soak.rss.append((time.monotonic() - t0, rss_mb(server.proc.pid)[0]))
    return soak


def warm_up(server: Server, args) -> float:
    """Before the soak, so that its start holds what any concurrent batch allocates: one
    answer alone, then `--clients` answers at once (the soak's batch). Seconds, all told."""
    start = time.monotonic()
    with httpx.Client(base_url=server.url, timeout=600) as client:
        outcomes = [one_answer(client, ask_body(QUESTIONS[0], args))]
    together: list[Outcome] = []

    def one(i: int) -> None:
        with httpx.Client(base_url=server.url, timeout=600) as client:
            together.append(one_answer(client, ask_body(QUESTIONS[i % len(QUESTIONS)], args)))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(args.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    failed = [o.error for o in outcomes + together if o.error]
    if failed:
        raise SystemExit(f"warm-up answer failed: {failed[0]}")
    return time.monotonic() - start


def rss_timeline(samples: list[tuple[float, float]]) -> str:
    """The RSS samples, one per minute, and the trend of the second half (a leak keeps
    rising there; allocator retention levels off)."""
    minutes = {}
    for t, mb in samples:
        minutes.setdefault(int(t // 60), mb)
    half = [(t, mb) for t, mb in samples if t >= samples[-1][0] / 2]
    slope = 0.0
    if len(half) > 1:
        tm = sum(t for t, _ in half) / len(half)
        mm = sum(mb for _, mb in half) / len(half)
        var = sum((t - tm) ** 2 for t, _ in half)
        slope = sum((t - tm) * (mb - mm) for t, mb in half) / var * 60 if var else 0.0
    cells = " | ".join(f"{mb:,.0f}" for mb in minutes.values())
    heads = " | ".join(f"{m}" for m in minutes)
    return (
        f"RSS (MB) at the first sample of each minute, and the least-squares trend of the "
        f"second half's 10 s samples: **{slope:+.1f} MB/min**.\n\n| minute | {heads} |\n"
        f"|---|{'---:|' * len(minutes)}\n| RSS MB | {cells} |"
    )


def report(soak: Soak, server: Server, info: dict, health: dict, setup: dict, args) -> str:
    ok = [o for o in soak.outcomes if o.error is None]
    seconds = [o.seconds for o in ok]
    first = [o.first_token for o in ok if o.first_token is not None]
    errors = soak.errors()
    wall = soak.rss[-1][0]
    rss_start, rss_end = setup["rss_warm"], soak.rss[-1][1]
    peak = max(mb for _, mb in soak.rss)
    log = server.output()
    tracebacks = log.count("Traceback")
    error_lines = sum(1 for line in log.splitlines() if "ERROR" in line)
    disconnect_errors = [d.error for d in soak.disconnects if d.error]
    commit_rows = [
        f"| {n + 1} | {c.started:.0f} | {c.index_s:.1f} | {c.visible_s:.1f} | {c.version} | "
        f"{'yes' if c.retrieved else 'no'} ({', '.join(c.sources) or '-'}) | "
        f"{'yes' if c.earlier_visible else 'no'} | "
        f"{'yes' if c.mentioned else 'no'}: {c.answer.strip()[:80]!r} |"
        + (f" error: {c.error}" if c.error else "")
        for n, c in enumerate(soak.commits)
    ]
    command = " ".join([".venv/bin/python benchmarks/serve_soak.py", *sys.argv[1:]])
    error_text = ", ".join(f"{kind}: {count}" for kind, count in errors.items()) or "none"
    return "\n\n".join(
        [
            "## Serving while the index changes (`benchmarks/serve_soak.py`)",
            f"`{command}` — {machine_line()}; server threads: torch's default.",
            f"`extok-rag serve` on loopback (default models: LLM {info['served']['llm']['name']} "
            f"on {info['served']['device']}), `--max-batch {args.max_batch}`, over an index of "
            f"{setup['files']} files from the repository ({setup['chunks']:,} chunks, built in "
            f"{setup['index_s']:.0f} s before the soak). For {wall:.0f} s: {args.clients} clients "
            f"streaming /ask back to back (mode {args.mode}, top-n {args.top_n}, "
            f"{args.max_new_tokens} new tokens at most); 1 client leaving a stream after its "
            f"first token every {args.disconnect_every:.0f} s; {len(soak.commits)} "
            "`extok-rag index` runs (a process each, beside the server), each committing one "
            "new document with a fact found nowhere else, then a /v1/chat/completions question "
            "about that fact.",
            "| answers | errors (by kind) | latency p50 / p95 s | first token p50 / p95 s | "
            "disconnects (errors) | server cancelled | tracebacks / ERROR lines in the log |\n"
            "|---:|---|---|---|---|---:|---|\n"
            f"| {len(ok)} | {sum(errors.values())} ({error_text}) | "
            f"{percentile(seconds, 50):.2f} / {percentile(seconds, 95):.2f} | "
            f"{percentile(first, 50):.2f} / {percentile(first, 95):.2f} | "
            f"{len(soak.disconnects)} ({len(disconnect_errors)}) | {health['cancelled']} | "
            f"{tracebacks} / {error_lines} |",
            f"Server RSS: {setup['rss_ready']:,.0f} MB when ready, {rss_start:,.0f} MB after "
            f"the warm-up (one answer, then {args.clients} at once: the start), "
            f"{rss_end:,.0f} MB at the end ({100 * (rss_end - rss_start) / rss_start:+.1f}%), "
            f"peak of the 10 s samples {peak:,.0f} MB; reloads {health['reloads']}, reload "
            f"errors: {health['reload_error'] or 'none'}.",
            rss_timeline(soak.rss),
            "| commit | at s | `index` s | served after s | table version | new document in "
            "`extok.sources` | earlier new documents still retrieved | answer names the fact |"
            "\n|---:|---:|---:|---:|---:|---|---|---|\n" + "\n".join(commit_rows),
        ]
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of soak")
    parser.add_argument("--clients", type=int, default=4, help="streaming clients")
    parser.add_argument("--commits", type=int, default=2, choices=range(len(FACTS) + 1))
    parser.add_argument("--disconnect-every", type=float, default=60.0, help="seconds")
    parser.add_argument("--mode", default="hybrid")
    parser.add_argument("--top-n", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--max-queue", type=int, default=64, help="the server's --max-queue")
    parser.add_argument("--max-batch", type=int, default=16, help="the server's --max-batch")
    parser.add_argument("--start-timeout", type=float, default=600.0)
    parser.add_argument("--work-dir", type=Path, help="default: a temporary folder")
    parser.add_argument("--llm", help="HF causal-LM directory (default: SmolLM2)")
    parser.add_argument("--embedder", help="retrieval embedder directory (default: MiniLM)")
    parser.add_argument("--device")
    parser.add_argument("--dtype")
    parser.add_argument("--no-write", action="store_true", help="print only")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="extok-soak-"))
    corpus, args.index = build_corpus(work), work / "index"
    setup = {"files": len(CORPUS), "index_s": run_index(corpus, args.index, args)}
    server = Server(args)
    try:
        info = httpx.get(f"{server.url}/info", timeout=60).json()
        setup["chunks"] = info["chunks"]
        setup["rss_ready"] = rss_mb(server.proc.pid)[0]
        warm_up(server, args)
        setup["rss_warm"] = rss_mb(server.proc.pid)[0]
        soak = run_soak(server, corpus, args.index, args)
        health = httpx.get(f"{server.url}/health", timeout=60).json()
        body = report(soak, server, info, health, setup, args)
    finally:
        server.stop()
    print(body)
    if not args.no_write:
        write_section("serve-soak", body, doc=DOC)
    if args.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
