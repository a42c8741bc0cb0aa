"""The `extok-rag serve` process the serve tests talk to: a tiny model that never stops by
itself, a tiny index, the server's options, and SSE parsing for the client side."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from conftest import tiny_llama, tiny_tokenizer
from indexer.conftest import PROSE, SETTINGS

from extok_rag.ask.answer import ask
from extok_rag.ask.conversation import Turn, converse
from extok_rag.config import AskConfig, GenerationConfig, RuntimeConfig
from extok_rag.indexing import IndexModels, build_index, open_index
from extok_rag.models.embedder import Embedder
from extok_rag.models.generation import generate_text
from extok_rag.models.llm import FrozenLLM

CPU = RuntimeConfig(device="cpu", dtype="float32")
API_KEY = "test-key-0123"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
LIMITS = ["--max-new-tokens", "6", "--max-new-tokens-limit", "3000"]
LIMITS += ["--max-question-chars", "200", "--max-top-n", "4", "--max-queue", "1"]
MAX_BATCH = 4
LIMITS += ["--max-batch", str(MAX_BATCH)]


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

    def local_converse(self, turns: list[Turn], cfg: AskConfig, new_tokens: int):
        """A chat read in this process (never condensed: no tokenizer): what the server must
        answer to a conversation that fits."""
        gen = GenerationConfig(new_tokens, repeat_stop=0)
        chunks, prompt, _ = converse(
            self.llm, self.embedder, self.snapshot, turns, cfg, gen, condenser=None
        )
        return chunks, prompt, generate_text(self.llm, prompt.row, gen).strip()

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
