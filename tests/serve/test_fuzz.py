"""Fuzzing the HTTP API from its own OpenAPI schema (schemathesis + Hypothesis): requests
generated from every route's schema, valid ones and ones that break it, thrown at the app in
process (tiny models, a tiny index, an API key). No response may be a 5xx or carry a traceback.

Slow set (EXTOK_SLOW_TESTS=1); EXTOK_FUZZ_EXAMPLES sets the cases per route (default 25).
"""

from __future__ import annotations

import os
from collections import Counter

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402  (after the importorskip)
from hypothesis.errors import Unsatisfiable  # noqa: E402
from indexer.conftest import PROSE  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402

from extok_rag.config import RuntimeConfig  # noqa: E402
from extok_rag.indexes import open_index  # noqa: E402
from extok_rag.indexing import IndexModels, IndexSettings, build_index  # noqa: E402
from extok_rag.models.embedder import Embedder  # noqa: E402
from extok_rag.serve import ServeLimits, ServeState, create_app  # noqa: E402

pytestmark = pytest.mark.slow
EXAMPLES = int(os.environ.get("EXTOK_FUZZ_EXAMPLES", "25"))
KEY = "fuzz-key"
CASES = {"run": 0, "by_status": Counter()}


def fuzzed_app(tmp_path, tiny_llm, tiny_embedder_dir):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("a.md", "b.txt"):
        (corpus / name).write_text("".join(PROSE.format(i=i, j=i + 1) for i in range(3)))
    models = IndexModels(tiny_llm, None, tiny_embedder_dir)
    build_index(corpus, tmp_path / "idx", models, IndexSettings(stride=2))
    embedder = Embedder.load(tiny_embedder_dir, RuntimeConfig(device="cpu", dtype="float32"))
    limits = ServeLimits(max_new_tokens=8, default_new_tokens=4, max_top_n=4)
    state = ServeState.create(
        tiny_llm, embedder, tmp_path / "idx", open_index(tmp_path / "idx"), lambda *_: {}, limits
    )
    return create_app(state, api_key=KEY)


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_llm, tiny_embedder_dir):
    return fuzzed_app(tmp_path_factory.mktemp("fuzz"), tiny_llm, tiny_embedder_dir)


def test_no_generated_request_gets_a_server_error(app):
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers={"X-API-Key": KEY})
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 5
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz(operation, mode)
    counts = dict(sorted(CASES["by_status"].items()))
    print(f"\nfuzzing: {CASES['run']} cases over {len(operations)} routes, statuses {counts}")
    assert CASES["run"] >= 2 * len(operations)


def fuzz(operation, mode) -> None:
    """EXAMPLES generated requests to one route (valid ones, or ones that break its schema),
    each checked."""

    @given(case=operation.as_strategy(mode))
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    def run(case) -> None:
        headers = {"Authorization": f"Bearer {KEY}"}
        response = case.call(headers=headers)
        CASES["run"] += 1
        CASES["by_status"][response.status_code] = (
            CASES["by_status"].get(response.status_code, 0) + 1
        )
        assert response.status_code < 500, (operation.path, case.body, response.text)
        assert "Traceback" not in response.text

    try:
        run()
    except Unsatisfiable:  # a route with no input (GET /health) has no invalid request
        assert mode == GenerationMode.NEGATIVE, operation.path
