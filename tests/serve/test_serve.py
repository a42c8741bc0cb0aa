"""`extok-rag serve` as a real process on loopback, spoken to over HTTP (httpx).

One server for the module (`server.py`), on a tiny random Llama whose end-of-sequence logit is
always 0 (its embedding row zeroed, weights tied), so greedy answers run to `max_new_tokens`: a
long answer holds its place in the batch as long as a test needs it. Four answers decode
together (`--max-batch 4`) and one request waits beyond them (`--max-queue 1`). Answers are
compared with `query.ask` run in this process on the same models and snapshot: the server must
be glue, nothing more, and batching must not change an answer.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest

from extok_rag.ask.budget import describe_spans
from extok_rag.ask.conversation import Turn
from extok_rag.config import AskConfig
from extok_rag.indexes.manifest import manifest_path

from .server import API_KEY, AUTH, MAX_BATCH, Served, cli, free_port, sse_events, write_docs

QUESTION = "What does the frozen model read in place of the raw tokens?"
LONG_ANSWER = {"question": QUESTION, "stream": True, "max_new_tokens": 3000}


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
    assert (health["max_queue"], health["max_batch"]) == (1, MAX_BATCH)
    assert (health["waiting"], health["running"]) == (0, 0)
    info = served.client.get("/info").json()
    from extok_rag.cli.index_cmd import index_facts

    extra = info.pop("served")
    assert info == index_facts(served.index, served.snapshot)  # `info --json`, unchanged
    assert extra["llm"] == served.llm.identity.to_dict()
    assert extra["limits"]["max_top_n"] == 4 and extra["max_queue"] == 1
    assert extra["max_batch"] == MAX_BATCH
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


def test_retrieval_options_reach_ask(served):
    """`retrieval` (/ask) and `extok_retrieval` (chat) choose the retriever, as `ask` does."""
    for method in ("text", "hybrid"):
        body = {"question": QUESTION, "top_n": 2, "retrieval": method, "max_new_tokens": 4}
        got = served.client.post("/ask", json=body).json()
        chunks, _, answer = served.local_ask(QUESTION, AskConfig(top_n=2, retrieval=method), 4)
        assert got["answer"] == answer
        assert [s["row_id"] for s in got["sources"]] == [c.row_id for c in chunks]
    chat = {"messages": [{"role": "user", "content": QUESTION}], "extok_retrieval": "bm25"}
    assert "extok_retrieval" in assert_error(
        served.client.post("/v1/chat/completions", json=chat), 422, "invalid_request"
    )


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
    turns = [Turn(m["role"], m["content"]) for m in messages]
    answer = served.local_converse(turns, AskConfig(top_n=3), 5)[2]
    assert got["object"] == "chat.completion" and got["id"].startswith("chatcmpl-")
    choice = got["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": answer}
    assert choice["finish_reason"] == "length"  # the endless model never stops by itself
    usage = got["usage"]
    assert usage["prompt_tokens"] == got["extok"]["positions"] and usage["completion_tokens"] > 0
    assert len(got["extok"]["sources"]) == 3
    unknown = served.client.post("/v1/chat/completions", json={**body, "model": "gpt-4o"})
    assert "does not exist" in assert_error(unknown, 404, "model_not_found")


def test_a_chat_is_read_whole_and_its_oldest_turns_condensed(served):
    """Every message reaches the prompt (a system prompt and earlier turns change the answer);
    a conversation longer than the 4096-position window has its oldest turns condensed, and
    `usage` and `extok.conversation` say how many tokens, at which k."""
    post = served.client.post
    opening = [
        {"role": "developer", "content": "You answer in one line."},
        {"role": "user", "content": "My name is Zorblax and my locker code is 4417."},
        {"role": "assistant", "content": "Noted, Zorblax."},
    ]
    chat = [*opening, {"role": "user", "content": QUESTION}]
    got = post("/v1/chat/completions", json={"messages": chat, "max_tokens": 5}).json()
    turns = [Turn("system" if m["role"] == "developer" else m["role"], m["content"]) for m in chat]
    _, prompt, answer = served.local_converse(turns, AskConfig(), 5)
    assert got["choices"][0]["message"]["content"] == answer
    alone = served.local_ask(QUESTION, AskConfig(), 5)[1]
    assert got["usage"]["prompt_tokens"] == prompt.positions > alone.positions
    assert got["extok"]["conversation"]["turns"] == 2
    assert got["extok"]["conversation"]["condensed_turns"] == 0
    assert got["usage"]["condensed_tokens"] == 0 and got["usage"]["condensed_k"] is None

    filler = [
        {"role": role, "content": f"Turn {i}: " + "the weather was mild and grey. " * 6}
        for i in range(40)
        for role in ("user", "assistant")
    ]  # ~16K characters, one token each: four windows
    long = [*opening, *filler, {"role": "user", "content": "What is my locker code?"}]
    got = post("/v1/chat/completions", json={"messages": long, "max_tokens": 5}).json()
    history, usage = got["extok"]["conversation"], got["usage"]
    assert history["turns"] == 82 and 0 < history["condensed_turns"] < 82
    assert usage["condensed_tokens"] == history["condensed_tokens"] > 4096
    assert usage["condensed_k"] == history["k"] in (2, 4, 8, 16, 32)
    assert usage["prompt_tokens"] + 5 <= 4096 and usage["completion_tokens"] == 5

    assistant_last = [*opening, {"role": "assistant", "content": "And?"}]
    assert "last message" in assert_error(
        post("/v1/chat/completions", json={"messages": assistant_last}), 422, "limit_exceeded"
    )
    tool = [{"role": "tool", "content": "{}"}, {"role": "user", "content": QUESTION}]
    assert "unknown role" in assert_error(
        post("/v1/chat/completions", json={"messages": tool}), 400, "invalid_request"
    )


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


def long_answers(served: Served, stack: ExitStack, n: int) -> list:
    """`n` long streamed answers, each decoding (its first token read); closed with `stack`
    or when the caller drops the event iterators returned."""
    streams = []
    for _ in range(n):
        response = stack.enter_context(served.client.stream("POST", "/ask", json=LONG_ANSWER))
        assert response.status_code == 200
        streams.append(sse_events(response))  # kept: closing it would close the response
        assert next(streams[-1])[0] == "token"
    return streams


def test_full_queue_503_and_disconnect_stops_generation(served):
    """Long streamed answers fill the batch, one request waits (queue depth 1), the next is
    refused with 503; closing the streams cancels the long answers, so the waiting request is
    served at once."""
    before = wait_idle(served)
    waiting: dict = {}

    def queued() -> None:
        waiting["response"] = httpx.post(
            f"{served.url}/ask", json={"question": "q"}, timeout=60, headers=AUTH
        )

    with ExitStack() as stack:
        streams = long_answers(served, stack, MAX_BATCH)  # kept: dropping them closes them
        assert served.client.get("/health").json()["running"] == MAX_BATCH
        thread = threading.Thread(target=queued)
        thread.start()
        deadline = time.monotonic() + 10
        while served.client.get("/health").json()["waiting"] < 1:
            assert time.monotonic() < deadline, "the fourth request never queued"
            time.sleep(0.02)
        refused = served.client.post("/ask", json={"question": "q"})
        assert_error(refused, 503, "server_busy")
        assert refused.headers["retry-after"] == "1"
        closed_at = time.monotonic()
        assert len(streams) == MAX_BATCH
    # leaving the block closes the connections mid-stream
    thread.join(30)
    assert waiting["response"].status_code == 200, waiting["response"].text
    assert time.monotonic() - closed_at < 10
    after = wait_idle(served)
    assert after["cancelled"] == before["cancelled"] + MAX_BATCH, after
    assert after["served"] == before["served"] + 1, after


def answer_of(served: Served, path: str, body: dict) -> tuple[str, int | None]:
    """The answer a route gives, streamed or not, and (chat) its completion tokens."""
    if not body.get("stream"):
        got = served.client.post(path, json=body)
        assert got.status_code == 200, got.text
        got = got.json()
        if path == "/ask":
            return got["answer"], None
        assert got["choices"][0]["finish_reason"] == "length"
        return got["choices"][0]["message"]["content"], got["usage"]["completion_tokens"]
    with served.client.stream("POST", path, json=body) as response:
        assert response.status_code == 200
        events = list(sse_events(response))
    if path == "/ask":
        assert events[-1][0] == "done", events[-1]
        text = "".join(json.loads(data)["text"] for _, data in events[:-1])
        assert json.loads(events[-1][1])["answer"] == text.strip()
        return text.strip(), None
    chunks = [json.loads(data) for _, data in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    return text.strip(), chunks[-1]["usage"]["completion_tokens"]


def test_concurrent_answers_are_the_single_request_answers(served):
    """Requests sent at once, streamed and not, /ask and chat, join a batch that is already
    decoding a long answer (one waits for a place): each gets `ask`'s answer alone."""
    chat = [{"role": "user", "content": "How are chunks stored?"}]
    hybrid = {"question": QUESTION, "top_n": 3, "mode": "hybrid"}  # embeddings in the prompt
    hybrid_cfg = AskConfig(top_n=3, mode="hybrid")
    cases = [  # (route, body, what `ask` reads, answer tokens)
        ("/ask", {"question": QUESTION, "top_n": 2, "max_new_tokens": 9}, AskConfig(top_n=2), 9),
        ("/ask", {**hybrid, "max_new_tokens": 14, "stream": True}, hybrid_cfg, 14),
        ("/v1/chat/completions", {"messages": chat, "max_tokens": 7}, AskConfig(), 7),
        ("/v1/chat/completions", {"messages": chat, "max_tokens": 11, "stream": True}, None, 11),
    ]
    before = wait_idle(served)
    answers: dict[int, tuple[str, int | None]] = {}

    def send(i: int) -> None:
        answers[i] = answer_of(served, cases[i][0], cases[i][1])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(cases))]
    with ExitStack() as stack:
        streams = long_answers(served, stack, 1)  # decoding throughout: the others join it
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert served.client.get("/health").json()["running"] == len(streams)  # still decoding
    assert sorted(answers) == list(range(len(cases)))
    for i, (path, body, cfg, new_tokens) in enumerate(cases):
        question = body.get("question", chat[0]["content"])
        expected = served.local_ask(question, cfg or AskConfig(), new_tokens)[2]
        assert answers[i][0] == expected, (i, answers[i][0], expected)
        assert answers[i][1] == (None if path == "/ask" else new_tokens)
    after = wait_idle(served)
    assert after["served"] == before["served"] + len(cases), after
    assert after["cancelled"] == before["cancelled"] + 1, after


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
