"""`extok-rag serve` as a Ray Serve deployment (`integrations/ray_serve.py`).

Fast: the deployment's options, the replica header, and `serve --replicas` handing the CLI's
options to the package (Ray not started). Slow (EXTOK_SLOW_TESTS=1): a local Ray instance,
2 replicas over a tiny index (the endless tiny Llama of `server.py`), answered through the
OpenAI client path (what the `openai` package sends: POST /v1/chat/completions with a Bearer
key, JSON or SSE), both replicas answering; then an index commit that both replicas reload.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from indexer.conftest import SETTINGS
from typer.testing import CliRunner

from extok_rag.config import RuntimeConfig
from extok_rag.errors import ExtokError
from extok_rag.indexing import IndexModels, build_index
from extok_rag.models.llm import FrozenLLM
from extok_rag.serve import ServeLimits, ServeOptions

from .server import API_KEY, endless_llama, free_port, sse_events, write_docs

ray = pytest.importorskip("ray")
pytest.importorskip("ray.serve")  # the `ray` extra's Serve dependencies
from ray import serve  # noqa: E402

from extok_rag.integrations import ray_serve  # noqa: E402

CPU = RuntimeConfig(device="cpu", dtype="float32")
QUESTION = "What does the frozen model read in place of the raw tokens?"
# what the openai package sends (`client.chat.completions.create`) besides its own x-stainless-*
OPENAI_HEADERS = {
    "Authorization": f"Bearer {API_KEY}",
    "Content-Type": "application/json",
    "Accept": "application/json",
    "User-Agent": "OpenAI/Python 1.0",
}
slow = pytest.mark.skipif(not os.environ.get("EXTOK_SLOW_TESTS"), reason="set EXTOK_SLOW_TESTS=1")


def served_index(tmp: Path, embedder_dir: Path) -> tuple[Path, Path, Path]:
    """(LLM dir, corpus, index) for the endless tiny Llama: answers run to max_tokens."""
    llm_dir = endless_llama(tmp / "endless-llama")
    corpus = write_docs(tmp / "corpus", ["a.md", "b.txt"])
    models = IndexModels(FrozenLLM.load(llm_dir, CPU), None, embedder_dir)
    build_index(corpus, tmp / "idx", models, SETTINGS)
    return llm_dir, corpus, tmp / "idx"


def options_for(index: Path, llm_dir: Path, embedder_dir: Path) -> ServeOptions:
    limits = ServeLimits(max_new_tokens=64, default_new_tokens=6, max_top_n=4, repeat_stop=0)
    return ServeOptions(
        index,
        llm=str(llm_dir),
        embedder=embedder_dir,
        runtime=CPU,
        limits=limits,
        max_queue=4,
        max_batch=4,
        api_key=API_KEY,
    )


# -- fast --------------------------------------------------------------------------------------
def test_deployment_options_size_each_replica_to_its_batch_and_queue(tmp_path):
    options = ServeOptions(tmp_path, max_batch=6, max_queue=10)
    got = ray_serve.deployment_options(options, 3)
    assert got == {"name": "extok-rag", "num_replicas": 3, "max_ongoing_requests": 16}
    gpu = {"ray_actor_options": {"num_gpus": 1}, "max_queued_requests": 64}
    assert ray_serve.deployment_options(options, 2, **gpu) == {**got, "num_replicas": 2, **gpu}
    with pytest.raises(ValueError, match="at least 1"):
        ray_serve.deployment_options(options, 0)


def test_every_response_names_its_replica():
    app = FastAPI()

    @app.get("/ping")
    def ping() -> dict:
        return {"ok": True}

    app.add_middleware(ray_serve.ReplicaHeader, replica="r-1")
    with TestClient(app) as client:
        assert client.get("/ping").headers[ray_serve.REPLICA_HEADER] == "r-1"
        assert client.get("/missing").headers[ray_serve.REPLICA_HEADER] == "r-1"


def test_serve_replicas_hands_the_cli_options_to_the_package(
    tmp_path, tiny_llm, tiny_embedder_dir, monkeypatch
):
    """`serve --replicas 2` parses, opens the index on the driver (fail fast), and calls
    `ray_serve.run` with the options the single server would build its app from."""
    from extok_rag.cli import app
    from extok_rag.cli.index_cmd import index_facts

    corpus = write_docs(tmp_path / "corpus", ["a.md"])
    build_index(corpus, tmp_path / "idx", IndexModels(tiny_llm, None, tiny_embedder_dir), SETTINGS)
    calls = []

    def run(options, replicas, host, port, facts, ready, log_level):
        calls.append((options, replicas, host, port, facts, log_level))
        ready()

    monkeypatch.setattr(ray_serve, "run", run)
    args = ["serve", "--index", str(tmp_path / "idx"), "--replicas", "2", "--port", "8123"]
    args += ["--max-batch", "3", "--max-queue", "5", "--max-top-n", "6", "--api-key", "k"]
    args += ["--dtype", "float32", "--device", "cpu", "--llm", "some/dir"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    [(options, replicas, host, port, facts, log_level)] = calls
    assert (replicas, host, port, facts, log_level) == (2, "127.0.0.1", 8123, index_facts, "info")
    assert (options.max_batch, options.max_queue, options.api_key) == (3, 5, "k")
    assert options.index_dir == tmp_path / "idx" and options.llm == "some/dir"
    assert options.limits.max_top_n == 6 and options.runtime == CPU
    assert "2 Ray Serve replicas on http://127.0.0.1:8123" in result.output
    refused = CliRunner().invoke(app, [*args, "--replicas", "0"])
    assert refused.exit_code != 0


# -- slow: 2 replicas on a local Ray instance --------------------------------------------------
class Deployed:
    """A local Ray instance serving 2 replicas on loopback, and an OpenAI-style client."""

    def __init__(self, tmp: Path, embedder_dir: Path):
        self.llm_dir, self.corpus, self.index = served_index(tmp, embedder_dir)
        self.embedder_dir = embedder_dir
        options = options_for(self.index, self.llm_dir, embedder_dir)
        port = free_port()
        ray.init(
            num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR
        )
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(ray_serve.deployment(options, replicas=2), name="extok-rag", route_prefix="/")
        self.root = f"http://127.0.0.1:{port}"
        # an OpenAI client's base_url is .../v1; it lists the models, then asks one of them
        self.client = httpx.Client(base_url=f"{self.root}/v1", timeout=120)
        self.model = self.client.get("/models", headers=OPENAI_HEADERS).json()["data"][0]["id"]

    def chat(self, content: str, **extra) -> httpx.Response:
        """What `client.chat.completions.create(model=..., messages=[...], ...)` sends."""
        body = {"messages": [{"role": "user", "content": content}], "model": self.model}
        return self.client.post("/chat/completions", json=body | extra, headers=OPENAI_HEADERS)

    def info(self) -> tuple[str, dict]:
        """(the replica that answered, its /info)."""
        response = self.client.get(f"{self.root}/info", headers=OPENAI_HEADERS)
        assert response.status_code == 200, response.text
        return response.headers[ray_serve.REPLICA_HEADER], response.json()

    def close(self) -> None:
        self.client.close()
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, tiny_embedder_dir) -> Iterator[Deployed]:
    served = Deployed(tmp_path_factory.mktemp("ray-serve"), tiny_embedder_dir)
    try:
        yield served
    finally:
        served.close()


def assert_extok_answer(body: dict) -> None:
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"]
    assert choice["finish_reason"] == "length"  # the endless model runs to max_tokens
    extok = body["extok"]
    assert extok["mode"] == "raw" and extok["sources"] and extok["positions"] > 0
    assert body["usage"]["prompt_tokens"] == extok["positions"]


@pytest.mark.slow
@slow
def test_two_replicas_answer_through_the_openai_client_path(deployed):
    status = serve.status().applications["extok-rag"].deployments["extok-rag"]
    assert status.replica_states == {"RUNNING": 2}

    def ask(_: int) -> tuple[str, dict]:
        response = deployed.chat(QUESTION, max_tokens=5)
        assert response.status_code == 200, response.text
        return response.headers[ray_serve.REPLICA_HEADER], response.json()

    answers: dict[str, set[str]] = {}  # replica: its answers
    with ThreadPoolExecutor(8) as pool:
        for _ in range(4):  # 8 at once, up to 4 rounds, until both replicas have answered
            for replica, body in pool.map(ask, range(8)):
                assert_extok_answer(body)
                answers.setdefault(replica, set()).add(body["choices"][0]["message"]["content"])
            if len(answers) == 2:
                break
    assert len(answers) == 2, answers
    [first, second] = answers.values()
    assert first == second and len(first) == 1  # greedy: one answer, whichever replica gives it

    body = {"messages": [{"role": "user", "content": QUESTION}], "model": deployed.model}
    body |= {"max_tokens": 5, "stream": True}
    with deployed.client.stream(
        "POST", "/chat/completions", json=body, headers=OPENAI_HEADERS
    ) as response:
        assert response.status_code == 200
        events = [data for _, data in sse_events(response)]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text.strip() == first.pop()
    assert chunks[-1]["extok"]["sources"] and chunks[-1]["usage"]["completion_tokens"] == 5

    # the single server's API key and limits, unchanged
    bare = deployed.client.post("/chat/completions", json={"messages": body["messages"]})
    assert bare.status_code == 401 and bare.json()["error"]["type"] == "invalid_api_key"
    over = deployed.chat(QUESTION, max_tokens=65)
    assert over.status_code == 422 and over.json()["error"]["type"] == "limit_exceeded"


@pytest.mark.slow
@slow
def test_every_replica_reloads_the_index_on_commit(deployed):
    _, before = deployed.info()
    write_docs(deployed.corpus, ["a.md", "b.txt", "c.md"])
    models = IndexModels(FrozenLLM.load(deployed.llm_dir, CPU), None, deployed.embedder_dir)
    build_index(deployed.corpus, deployed.index, models, SETTINGS)
    served: dict[str, dict] = {}
    deadline = time.monotonic() + 60
    while len(served) < 2 and time.monotonic() < deadline:
        replica, info = deployed.info()  # /info serves the newest committed snapshot
        served[replica] = info
    assert len(served) == 2
    for info in served.values():
        assert info["table_version"] > before["table_version"]
        assert info["counts"]["documents"] == before["counts"]["documents"] + 1
    # BM25 on numbers only the new document holds: every replica answers from it
    question = "Which section says 20, 21 or 22?"
    replicas: set[str] = set()
    for _ in range(12):
        response = deployed.chat(question, max_tokens=2, extok_top_n=2, extok_retrieval="text")
        assert response.json()["extok"]["sources"][0]["doc_path"] == "c.md"
        replicas.add(response.headers[ray_serve.REPLICA_HEADER])
    assert len(replicas) == 2


@pytest.mark.slow
@slow
def test_replicas_that_cannot_start_fail_in_one_line(deployed, other_llm_dir):
    """An LLM the index was not built with: each replica refuses at start, as `serve` does,
    and `deploy` says why in one line (a second app, beside the served one)."""
    options = options_for(deployed.index, other_llm_dir, deployed.embedder_dir)
    app = ray_serve.deployment(options, 1, ray_actor_options={"num_cpus": 0})
    with pytest.raises(ExtokError) as raised:
        ray_serve.deploy(app, name="refused", route_prefix="/refused")
    message = str(raised.value)
    assert message.startswith("the Ray Serve replicas did not start: IncompatibleModelError")
    assert "index was built for LLM 'endless-llama'" in message and "\n" not in message
    serve.delete("refused")
    assert deployed.chat(QUESTION, max_tokens=2).status_code == 200  # the served app carries on
