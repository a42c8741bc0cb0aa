"""Load on `extok-rag serve`: a real server process on loopback, 1, 4 and 16 concurrent
clients streaming /ask answers; per level p50/p95 latency (whole answer and first token),
throughput, errors (target 0) and the server's resident memory.

    .venv/bin/python benchmarks/serve_load.py [--index PATH] [--requests 32] [--time-limit 180]
    .venv/bin/python benchmarks/serve_load.py --smoke --no-write   # 4 requests a level, print only

The server runs as a user would start it (default models, the default index or `--index`,
`--max-queue` large enough that no client is refused). Each level stops after `--requests`
answers or `--time-limit` seconds, whichever first (requests in flight then finish and count).
Questions cycle through a fixed list about the example corpus. The server decodes up to
`--max-batch` answers together in one continuous batch (a request joins at the next step), so
throughput grows with the clients while each step costs a little more. Writes section
`serve-load` of docs/benchmarks.md unless `--no-write`.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
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

QUESTIONS = [
    "What does a chunk of 512 tokens become with k = 8?",
    "What is extensible tokenization?",
    "Which model reads the extensible embeddings?",
    "How does the index store retrieved chunks?",
    "What does the down-scaling factor k control?",
    "Which embedder retrieves the chunks?",
    "Does the LLM change during training?",
    "How many positions does a compressed chunk take?",
]


@dataclass
class Outcome:
    seconds: float
    first_token: float | None
    tokens: int
    error: str | None = None


@dataclass
class Level:
    clients: int
    wall: float = 0.0
    outcomes: list[Outcome] = field(default_factory=list)
    rss_mb: float = 0.0

    @property
    def ok(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.error is None]

    @property
    def errors(self) -> list[str]:
        return [o.error for o in self.outcomes if o.error is not None]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> tuple[float, float]:
    """(resident now, peak resident) of `pid` in MB, from /proc (Linux)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields.get("VmRSS", float("nan")), fields.get("VmHWM", float("nan"))


class Server:
    """`extok-rag serve` in a child process; its log goes to a temporary file."""

    def __init__(self, args: argparse.Namespace, env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed in stop)
        command = [str(Path(sys.executable).with_name("extok-rag")), "serve"]
        command += ["--port", str(self.port), "--max-queue", str(args.max_queue)]
        command += ["--max-batch", str(args.max_batch)]
        command += ["--log-level", "warning"]
        for option in ("index", "llm", "embedder", "device", "dtype"):
            if getattr(args, option) is not None:
                command += [f"--{option}", str(getattr(args, option))]
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        self.ready_s = self.wait_ready(args.start_timeout)

    def wait_ready(self, limit: float) -> float:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    return time.perf_counter() - self.started
            except httpx.TransportError:
                time.sleep(0.25)
        output = self.output()
        self.stop()
        raise SystemExit(f"server not ready after {limit} s:\n{output}")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def one_answer(client: httpx.Client, body: dict) -> Outcome:
    """One streamed /ask: latency to the `done` event and to the first token event."""
    start = time.perf_counter()
    first, tokens, event = None, 0, None
    try:
        with client.stream("POST", "/ask", json=body) as response:
            if response.status_code != 200:
                response.read()
                return Outcome(time.perf_counter() - start, None, 0, f"HTTP {response.status_code}")
            for line in response.iter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:") and event == "token":
                    tokens += 1
                    first = first if first is not None else time.perf_counter() - start
                elif line.startswith("data:") and event == "error":
                    return Outcome(time.perf_counter() - start, first, tokens, line[5:].strip())
                elif line.startswith("data:") and event == "done":
                    json.loads(line[5:])
                    return Outcome(time.perf_counter() - start, first, tokens)
    except httpx.HTTPError as exc:
        return Outcome(time.perf_counter() - start, first, tokens, type(exc).__name__)
    return Outcome(time.perf_counter() - start, first, tokens, "stream ended without done")


def run_level(server: Server, clients: int, args: argparse.Namespace) -> Level:
    """`clients` threads sending requests back to back until `--requests` were sent or
    `--time-limit` passed."""
    level = Level(clients)
    lock = threading.Lock()
    sent = [0]
    deadline = time.monotonic() + args.time_limit

    def client_loop() -> None:
        with httpx.Client(base_url=server.url, timeout=args.time_limit + 600) as client:
            while True:
                with lock:
                    if sent[0] >= args.requests or time.monotonic() > deadline:
                        return
                    question = QUESTIONS[sent[0] % len(QUESTIONS)]
                    sent[0] += 1
                body = {"question": question, "mode": args.mode, "top_n": args.top_n}
                body |= {"max_new_tokens": args.max_new_tokens, "stream": True}
                outcome = one_answer(client, body)
                with lock:
                    level.outcomes.append(outcome)

    start = time.perf_counter()
    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    level.wall = time.perf_counter() - start
    level.rss_mb = rss_mb(server.proc.pid)[0]
    return level


def row(level: Level) -> str:
    ok = level.ok
    seconds = [o.seconds for o in ok]
    first = [o.first_token for o in ok if o.first_token is not None]
    tokens = sum(o.tokens for o in ok)
    return (
        f"| {level.clients} | {len(level.outcomes)} | {len(level.errors)} | "
        f"{percentile(seconds, 50):.2f} | {percentile(seconds, 95):.2f} | "
        f"{percentile(first, 50):.2f} | {percentile(first, 95):.2f} | "
        f"{len(ok) / level.wall:.2f} | {tokens / level.wall:.1f} | {level.rss_mb:,.0f} |"
    )


def table(levels: list[Level]) -> str:
    lines = [
        "| clients | requests | errors | latency p50 s | p95 s | first token p50 s | p95 s | "
        "answers/s | tokens/s | server RSS MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    return "\n".join(lines + [row(level) for level in levels])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, help="index folder (default: the CLI's default)")
    parser.add_argument("--concurrency", default="1,4,16", help="client counts, comma-separated")
    parser.add_argument("--requests", type=int, default=32, help="answers per level at most")
    parser.add_argument("--time-limit", type=float, default=180.0, help="seconds per level")
    parser.add_argument(
        "--mode", default="hybrid", help="ask mode (hybrid: the mode of the rows before batching)"
    )
    parser.add_argument("--top-n", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--max-queue", type=int, default=64, help="the server's --max-queue")
    parser.add_argument("--max-batch", type=int, default=16, help="the server's --max-batch")
    parser.add_argument("--start-timeout", type=float, default=600.0)
    parser.add_argument("--llm", help="HF causal-LM directory (default: SmolLM2)")
    parser.add_argument("--embedder", help="retrieval embedder directory (default: MiniLM)")
    parser.add_argument("--device")
    parser.add_argument("--dtype")
    parser.add_argument("--smoke", action="store_true", help="4 requests a level, 4 tokens each")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument(
        "--pair-python",
        action="store_true",
        help="then the same levels on a server decoding in Python (EXTOK_RAG_NATIVE=0)",
    )
    args = parser.parse_args()
    if args.smoke:
        args.requests, args.max_new_tokens = min(args.requests, 4), min(args.max_new_tokens, 4)
    return args


def serve_levels(args: argparse.Namespace, env: dict[str, str] | None = None):
    """One server (`env` added to its environment): its /info, every level, peak RSS MB."""
    server = Server(args, env)
    try:
        info = httpx.get(f"{server.url}/info", timeout=60).json()
        levels = []
        for clients in (int(c) for c in args.concurrency.split(",")):
            levels.append(run_level(server, clients, args))
            print(row(levels[-1]), flush=True)
        return server, info, levels, rss_mb(server.proc.pid)[1]
    finally:
        server.stop()


def main() -> None:
    args = parse_args()
    server, info, levels, peak = serve_levels(args)
    paired = serve_levels(args, {"EXTOK_RAG_NATIVE": "0"})[2] if args.pair_python else None
    threads = os.environ.get("OMP_NUM_THREADS", "torch's default")
    command = " ".join([".venv/bin/python benchmarks/serve_load.py", *sys.argv[1:]])
    body = "\n\n".join(
        [
            "## Serving under load (`benchmarks/serve_load.py`)",
            f"`{command}` — {machine_line()}; server OMP_NUM_THREADS={threads}.",
            f"`extok-rag serve` on loopback: index {info['index']} ({info['chunks']:,} chunks, "
            f"{info['state_encoding']} states), LLM {info['served']['llm']['name']} on "
            f"{info['served']['device']}; streamed /ask, mode {args.mode}, top-n {args.top_n}, "
            f"{args.max_new_tokens} new tokens at most; `--max-batch {args.max_batch}`; each "
            f"level: {args.requests} requests "
            f"or {args.time_limit:.0f} s. Server ready {server.ready_s:.1f} s after start "
            f"(models loaded once); peak RSS {peak:,.0f} MB.",
            "Decoding in the C++ step (`models/native_step.cpp`, built in the cache before the "
            "run), the default:",
            table(levels),
            *(
                [
                    "The same levels right after, on a server decoding in its Python loop "
                    "(`EXTOK_RAG_NATIVE=0`; the same tokens):",
                    table(paired),
                ]
                if paired
                else []
            ),
            "One worker thread decodes the live requests together (continuous batching: an "
            "arrival is prefilled and joins at the next step; each leaves at its own end), so "
            "answers/s grows with the clients while each step costs a little more; first-token "
            "latency includes a new request's retrieval and prefill, which pause the batch.",
        ]
    )
    print(body)
    every = levels + (paired or [])
    errors = sum(len(level.errors) for level in every)
    if errors:
        print(f"{errors} errors: {sorted(set(e for lv in every for e in lv.errors))}")
    if not args.no_write:
        write_section("serve-load", body)


if __name__ == "__main__":
    main()
