"""`extok-rag serve` as a real process on loopback, spoken to over HTTP (httpx).

One server for the module, on a tiny random Llama whose end-of-sequence logit is always 0
(its embedding row zeroed, weights tied), so greedy answers run to `max_new_tokens`: a long
answer holds the one worker thread as long as a test needs it. The queue holds one waiting
request (`--max-queue 1`). Answers are compared with `query.ask` run in this process on the
same models and snapshot: the server must be glue, nothing more.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from conftest import tiny_llama, tiny_tokenizer
from indexer.conftest import PROSE, SETTINGS

from extok_rag.ask.answer import ask
from extok_rag.ask.budget import describe_spans
from extok_rag.config import AskConfig, GenerationConfig, RuntimeConfig
from extok_rag.indexes.manifest import manifest_path
from extok_rag.indexing import IndexModels, build_index, open_index
from extok_rag.models.embedder import Embedder
from extok_rag.models.llm import FrozenLLM

CPU = RuntimeConfig(device="cpu", dtype="float32")
API_KEY = "test-key-0123"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
QUESTION = "What does the frozen model read in place of the raw tokens?"
LIMITS = ["--max-new-tokens", "6", "--max-new-tokens-limit", "3000"]
LIMITS += ["--max-question-chars", "200", "--max-top-n", "4", "--max-queue", "1"]


def endless_llama(path: Path) -> Path:
    """The tiny Llama with zero rows for its special tokens and unprintable bytes (weights
    tied: their logits are 0 among random ones, never the argmax in practice), so an answer is
    printable text that runs to max_new_tokens; a 4096-position window."""
    model, tokenizer = tiny_llama(seed=3), tiny_tokenizer()
    unprintable = [
        i
        for i in range(model.config.vocab_size)
        if not tokenizer.decode([i]).isprintable()
        or not tokenizer.decode([i]).isascii()
        or i in tokenizer.all_special_ids
    ]
    with torch.no_grad():
        model.model.embed_tokens.weight[unprintable] = 0.0
    model.config.max_position_embeddings = 4096
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def write_docs(root: Path, names: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for n, name in enumerate(names):
        (root / name).write_text("".join(PROSE.format(i=i + 10 * n, j=i + n) for i in range(3)))
    return root


def cli() -> list[str]:
    script = Path(sys.executable).with_name("extok-rag")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from extok_rag.cli.app import main; main()"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sse_events(response: httpx.Response) -> Iterator[tuple[str, str]]:
    """(event name, data) per server-sent event; unnamed events are 'message'."""
    name, data = "message", []
    for line in response.iter_lines():
        if not line:
            if data:
                yield name, "\n".join(data)
            name, data = "message", []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


# `extok-rag serve` as its console script runs it, its imports done while the test process
# builds the index (they take most of a start on a busy 2-core machine); argv on stdin.
PREIMPORTED_CLI = r"""
import json, sys
import faiss, fastapi, lancedb, sse_starlette, torch, transformers, uvicorn
import transformers.models.bert.modeling_bert, transformers.models.llama.modeling_llama
import extok_rag.indexing, extok_rag.models.embedder, extok_rag.serve
from extok_rag.cli.app import main
sys.argv = ["extok-rag", *json.loads(sys.stdin.readline())]
main()
"""


class Served:
    """The server process, its URL, and the models/index it serves (for comparisons)."""

    def __init__(self, tmp: Path, request: pytest.FixtureRequest):
        self.log = (tmp / "server.log").open("w+")
        env = os.environ | {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        env["EXTOK_RAG_API_KEY"] = API_KEY  # every test request carries it (AUTH)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", PREIMPORTED_CLI],
            stdin=subprocess.PIPE,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
        )
        self.embedder_dir = request.getfixturevalue("tiny_embedder_dir")
        self.llm_dir = endless_llama(tmp / "endless-llama")
        self.corpus = write_docs(tmp / "corpus", ["a.md", "b.txt"])
        self.index = tmp / "idx"
        self.llm = FrozenLLM.load(self.llm_dir, CPU)
        self.build()
        self.snapshot = open_index(self.index)
        self.embedder = Embedder.load(self.embedder_dir, CPU)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        args = ["serve", "--index", str(self.index), "--llm", str(self.llm_dir)]
        args += ["--embedder", str(self.embedder_dir), "--device", "cpu", "--dtype", "float32"]
        args += ["--repeat-stop", "0"]  # the endless model loops: the tests need it endless
        args += ["--port", str(port), "--log-level", "warning", *LIMITS]
        self.proc.stdin.write(json.dumps(args) + "\n")
        self.proc.stdin.close()
        self.client = httpx.Client(base_url=self.url, timeout=60, headers=AUTH)
        self.wait_ready()

    def build(self) -> None:
        models = IndexModels(self.llm, None, self.embedder_dir)
        build_index(self.corpus, self.index, models, SETTINGS)

    def wait_ready(self, limit: float = 90.0) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited {self.proc.returncode}: {self.output()}")
            try:
                if self.client.get("/health").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        pytest.fail(f"server not ready after {limit} s: {self.output()}")

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def local_ask(self, question: str, cfg: AskConfig, new_tokens: int):
        """`ask` in this process: what the server must answer."""
        chunks, prompt, pieces = ask(
            self.llm,
            self.embedder,
            self.snapshot,
            question,
            cfg,
            GenerationConfig(new_tokens, repeat_stop=0),
        )
        return chunks, prompt, "".join(pieces).strip()

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def served(tmp_path_factory, request) -> Iterator[Served]:
    server = Served(tmp_path_factory.mktemp("serve"), request)
    yield server
    server.stop()
    output = server.output()
    server.log.close()
    assert "Traceback" not in output, output


def assert_error(response: httpx.Response, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == kind and error["code"] == status and error["message"]
    assert "Traceback" not in response.text
    return error["message"]


def test_health_and_info(served):
    health = served.client.get("/health").json()
    assert health["status"] == "ok" and health["reload_error"] is None
    assert health["table_version"] == served.snapshot.manifest.table_version
    assert (health["max_queue"], health["waiting"], health["running"]) == (1, 0, False)
    info = served.client.get("/info").json()
    from extok_rag.cli.index_cmd import index_facts

    extra = info.pop("served")
    assert info == index_facts(served.index, served.snapshot)  # `info --json`, unchanged
    assert extra["llm"] == served.llm.identity.to_dict()
    assert extra["limits"]["max_top_n"] == 4 and extra["max_queue"] == 1
    models = served.client.get("/v1/models").json()
    assert models["data"][0]["id"] == served.llm.identity.name


def test_ask_json_is_query_ask(served):
    body = {"question": QUESTION, "top_n": 2, "mode": "hybrid"}
    got = served.client.post("/ask", json=body).json()
    chunks, prompt, answer = served.local_ask(QUESTION, AskConfig(top_n=2, mode="hybrid"), 6)
    assert got["answer"] == answer and answer
    assert (got["k"], got["positions"], got["mode"]) == (prompt.k, prompt.positions, "hybrid")
    assert [(s["doc_path"], s["row_id"]) for s in got["sources"]] == [
        (c.doc_path, c.row_id) for c in chunks
    ]
    assert [s["score"] for s in got["sources"]] == pytest.approx([c.score for c in chunks])
    for source, chunk in zip(got["sources"], chunks, strict=True):
        assert chunk.text.startswith(source["text"].removesuffix("…"))
        assert len(source["text"]) <= 301


def test_ask_expand_reports_spans(served):
    body = {"question": QUESTION, "top_n": 2, "mode": "expand", "budget": 260, "k": 4}
    got = served.client.post("/ask", json=body).json()
    cfg = AskConfig(top_n=2, mode="expand", budget=260, k=4)
    chunks, prompt, answer = served.local_ask(QUESTION, cfg, 6)
    assert got["expanded"] == json.loads(json.dumps(describe_spans(chunks, prompt.expanded)))
    assert got["expanded"] and got["positions"] <= 260 and got["answer"] == answer


def test_ask_stream_tokens_then_done(served):
    body = {"question": QUESTION, "top_n": 2, "stream": True, "max_new_tokens": 10}
    with served.client.stream("POST", "/ask", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = list(sse_events(response))
    names = [name for name, _ in events]
    assert names[-1] == "done" and set(names[:-1]) == {"token"} and len(names) > 2
    text = "".join(json.loads(data)["text"] for _, data in events[:-1])
    done = json.loads(events[-1][1])
    assert done["answer"] == text.strip() == served.local_ask(QUESTION, AskConfig(top_n=2), 10)[2]
    assert len(done["sources"]) == 2 and done["mode"] == "raw" and done["k"] is None  # auto


def test_openai_chat_completion(served):
    messages = [
        {"role": "system", "content": "You answer from the documents."},
        {"role": "user", "content": QUESTION},
    ]
    model = served.llm.identity.name
    body = {"model": model, "messages": messages, "max_tokens": 5, "extok_top_n": 3}
    got = served.client.post("/v1/chat/completions", json=body).json()
    answer = served.local_ask(QUESTION, AskConfig(top_n=3), 5)[2]
    assert got["object"] == "chat.completion" and got["id"].startswith("chatcmpl-")
    choice = got["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": answer}
    assert choice["finish_reason"] == "length"  # the endless model never stops by itself
    usage = got["usage"]
    assert usage["prompt_tokens"] == got["extok"]["positions"] and usage["completion_tokens"] > 0
    assert len(got["extok"]["sources"]) == 3
    unknown = served.client.post("/v1/chat/completions", json={**body, "model": "gpt-4o"})
    assert "does not exist" in assert_error(unknown, 404, "model_not_found")


def test_openai_chat_stream(served):
    parts = [{"type": "text", "text": QUESTION}]
    body = {"messages": [{"role": "user", "content": parts}], "max_tokens": 5, "stream": True}
    with served.client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        events = [data for _, data in sse_events(response)]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text.strip() == served.local_ask(QUESTION, AskConfig(), 5)[2]
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] == "length" and last["usage"]["total_tokens"] > 0
    assert last["extok"]["mode"] == "raw"  # auto: the top-n chunks fit the window
    assert last["usage"]["completion_tokens"] == 5


def test_limits_and_bad_requests_answer_json_errors(served):
    post = served.client.post
    assert "200" in assert_error(post("/ask", json={"question": "x" * 201}), 413, "limit_exceeded")
    assert_error(post("/ask", json={"question": "q", "top_n": 5}), 422, "limit_exceeded")
    assert_error(post("/ask", json={"question": "q", "top_n": 0}), 422, "invalid_request")
    assert_error(
        post("/ask", json={"question": "q", "max_new_tokens": 3001}), 422, "limit_exceeded"
    )
    assert "mode" in assert_error(
        post("/ask", json={"question": "q", "mode": "bogus"}), 422, "invalid_request"
    )
    assert_error(post("/ask", json={"question": "q", "k": 3}), 400, "invalid_request")  # auto
    odd = {"question": "q", "mode": "compressed", "k": 3}
    assert "stride" in assert_error(post("/ask", json=odd), 400, "invalid_request")
    assert_error(
        post("/ask", content=b"{not json", headers={"content-type": "application/json"}),
        422,
        "invalid_request",
    )
    system_only = {"messages": [{"role": "system", "content": "hi"}]}
    assert_error(post("/v1/chat/completions", json=system_only), 422, "limit_exceeded")
    assert_error(
        post("/v1/chat/completions", json={"messages": [], "n": 1}), 422, "invalid_request"
    )
    assert_error(served.client.get("/nothing"), 404, "not_found")
    too_big = {"question": "q", "pad": "x" * 1_100_000}
    assert_error(post("/ask", json=too_big), 413, "limit_exceeded")
    chunked = iter([b'{"question": "q", "pad": "', b"x" * 600_000, b"x" * 600_000, b'"}'])
    json_type = {"content-type": "application/json"}
    assert "over 1000000 bytes" in assert_error(
        post("/ask", content=chunked, headers=json_type), 413, "limit_exceeded"
    )


def test_every_route_but_health_needs_the_api_key(served):
    """EXTOK_RAG_API_KEY (as --api-key): 401 in the OpenAI error shape without it."""
    bare = httpx.Client(base_url=served.url, timeout=60)
    assert bare.get("/health").status_code == 200
    for wrong in ({}, {"Authorization": "Bearer nope"}, {"X-API-Key": "nope"}):
        got = bare.post("/ask", json={"question": "q"}, headers=wrong)
        assert "API key" in assert_error(got, 401, "invalid_api_key")
        assert got.headers["www-authenticate"] == "Bearer"
    assert_error(bare.get("/v1/models"), 401, "invalid_api_key")
    assert bare.get("/v1/models", headers={"X-API-Key": API_KEY}).status_code == 200
    assert "an API key required" in served.output() and "this machine only" in served.output()


def test_full_queue_503_and_disconnect_stops_generation(served):
    """One long streamed answer holds the worker, one request waits (queue depth 1), the
    next is refused with 503; closing the stream cancels the long answer, so the waiting
    request is served at once."""
    long_answer = {"question": QUESTION, "stream": True, "max_new_tokens": 3000}
    before = served.client.get("/health").json()
    waiting: dict = {}

    def queued() -> None:
        started = time.monotonic()
        waiting["response"] = httpx.post(
            f"{served.url}/ask", json={"question": "q"}, timeout=60, headers=AUTH
        )
        waiting["seconds"] = time.monotonic() - started

    with served.client.stream("POST", "/ask", json=long_answer) as response:
        stream = sse_events(response)  # kept: closing it would close the response
        assert next(stream)[0] == "token"
        thread = threading.Thread(target=queued)
        thread.start()
        deadline = time.monotonic() + 10
        while served.client.get("/health").json()["waiting"] < 1:
            assert time.monotonic() < deadline, "second request never queued"
            time.sleep(0.02)
        refused = served.client.post("/ask", json={"question": "q"})
        assert_error(refused, 503, "server_busy")
        assert refused.headers["retry-after"] == "1"
        closed_at = time.monotonic()
    # leaving the block closes the connection mid-stream
    thread.join(30)
    assert waiting["response"].status_code == 200, waiting["response"].text
    assert time.monotonic() - closed_at < 10
    after = wait_idle(served)
    assert after["cancelled"] == before["cancelled"] + 1, after
    assert after["served"] == before["served"] + 1, after


def test_disconnect_stops_a_non_streamed_answer(served):
    """A client that gives up on a JSON answer (read timeout: the connection closes) cancels
    its job: the worker is idle again long before 3000 tokens could have been generated."""
    before = wait_idle(served)
    body = {"question": QUESTION, "max_new_tokens": 3000}
    with pytest.raises(httpx.ReadTimeout):
        timeout = httpx.Timeout(60, read=1.0)
        httpx.post(f"{served.url}/ask", json=body, timeout=timeout, headers=AUTH)
    gave_up = time.monotonic()
    after = wait_idle(served)
    assert time.monotonic() - gave_up < 5
    assert after["cancelled"] == before["cancelled"] + 1, after


def wait_idle(served: Served, limit: float = 10.0) -> dict:
    """/health once the worker is idle (it finishes a job just after the job's last event)."""
    deadline = time.monotonic() + limit
    while (health := served.client.get("/health").json())["running"] or health["waiting"]:
        assert time.monotonic() < deadline, health
        time.sleep(0.02)
    return health


def test_reload_on_commit_and_old_snapshot_kept_when_broken(served):
    old_version = served.snapshot.manifest.table_version
    write_docs(served.corpus / "more", ["c.md"])
    served.build()  # a second index run commits a new table version
    info = served.client.get("/info").json()
    assert info["table_version"] > old_version and info["documents"] == 3
    health = served.client.get("/health").json()
    assert health["reloads"] == 1 and health["table_version"] == info["table_version"]
    got = served.client.post("/ask", json={"question": QUESTION, "top_n": 4}).json()
    assert len(got["sources"]) == 4

    path = manifest_path(served.index)
    good = path.read_text()
    shutil.copy(path, path.with_name("manifest.good"))
    broken = json.loads(good) | {"table_version": 999, "updated": "2099-01-01T00:00:00+00:00"}
    path.write_text(json.dumps(broken))
    try:
        assert served.client.post("/ask", json={"question": QUESTION}).status_code == 200
        health = served.client.get("/health").json()
        assert health["table_version"] == info["table_version"]  # the old snapshot, served
        assert "999" in health["reload_error"]
    finally:
        path.write_text(good)


def test_missing_index_is_one_line_error(tmp_path):
    missing = tmp_path / "no-index"
    env = os.environ | {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(
        [*cli(), "serve", "--index", str(missing), "--port", str(free_port())],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no index manifest"), run.stderr
