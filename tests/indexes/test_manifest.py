"""Manifest: round trip, atomic write, clear errors for corrupt files and other models."""

from __future__ import annotations

import json

import pytest

from extok_rag.errors import IncompatibleModelError, IndexStoreError
from extok_rag.indexes.manifest import (
    FORMAT_VERSION,
    IndexCounts,
    Manifest,
    ModelIdentity,
    check_compatible,
    format_for,
    manifest_path,
    read_manifest,
    write_manifest,
)

LLM = ModelIdentity("SmolLM2-135M-Instruct", "aaaa1111")
TOKENIZER = ModelIdentity("checkpoints/extok-8L", "bbbb2222")
EMBEDDER = "all-MiniLM-L6-v2"


def make_manifest() -> Manifest:
    return Manifest(
        llm=LLM,
        tokenizer=TOKENIZER,
        embedder=EMBEDDER,
        stride=4,
        chunking={"max_tokens": 256, "overlap": 0},
        counts=IndexCounts(documents=3, chunks=10, tokens=2000),
    )


def test_round_trip(tmp_path):
    manifest = make_manifest()
    write_manifest(tmp_path, manifest)
    assert read_manifest(tmp_path) == manifest
    assert not list(tmp_path.glob("*.tmp"))  # the temp file was renamed away


def test_with_counts_stamps_update(tmp_path):
    manifest = make_manifest()
    updated = manifest.with_counts(IndexCounts(documents=4, chunks=12, tokens=2400))
    assert updated.counts.chunks == 12
    assert updated.created == manifest.created
    assert updated.llm == manifest.llm


def test_missing_manifest(tmp_path):
    with pytest.raises(IndexStoreError, match="no index manifest"):
        read_manifest(tmp_path)


@pytest.mark.parametrize(
    "content",
    ['{"llm": ', "[]", '{"llm": {"name": "x"}}', "\xff\xfe"],
    ids=["truncated", "not-a-dict", "missing-keys", "binary"],
)
def test_corrupt_manifest_is_one_line_index_store_error(tmp_path, content):
    manifest_path(tmp_path).write_text(content, encoding="latin-1")
    with pytest.raises(IndexStoreError) as info:
        read_manifest(tmp_path)
    assert "\n" not in str(info.value)
    assert str(manifest_path(tmp_path)) in str(info.value)


def test_newer_format_version_refused(tmp_path):
    data = make_manifest().to_dict() | {"format_version": FORMAT_VERSION + 1}
    manifest_path(tmp_path).write_text(json.dumps(data))
    with pytest.raises(IndexStoreError, match=f"format version {FORMAT_VERSION + 1}"):
        read_manifest(tmp_path)


def test_each_kind_of_states_is_written_with_the_oldest_format_that_reads_it_right():
    assert format_for("float16") == 1 and format_for("int8") == 2
    assert format_for("int8", "mean") == 3 and format_for("float16", "query_pool") == 4
    assert FORMAT_VERSION == 4


def test_a_version_1_manifest_reads_as_float16_states(tmp_path):
    data = make_manifest().to_dict()
    del data["state_encoding"]  # written before encodings existed
    manifest_path(tmp_path).write_text(json.dumps(data | {"format_version": 1}))
    manifest = read_manifest(tmp_path)
    assert manifest.state_encoding == "float16" and manifest.format_version == 1


def test_compatible_models_pass():
    check_compatible(make_manifest(), llm=LLM, tokenizer=TOKENIZER, embedder=EMBEDDER)


def test_other_llm_names_both_sides():
    other = ModelIdentity("Qwen2.5-0.5B", "cccc3333")
    with pytest.raises(IncompatibleModelError) as info:
        check_compatible(make_manifest(), llm=other, tokenizer=TOKENIZER, embedder=EMBEDDER)
    message = str(info.value)
    assert "aaaa1111" in message and "cccc3333" in message
    assert "--rebuild" in message and "\n" not in message


def test_other_tokenizer_and_embedder_both_reported():
    other_tok = ModelIdentity("checkpoints/other", "dddd4444")
    with pytest.raises(IncompatibleModelError) as info:
        check_compatible(make_manifest(), llm=LLM, tokenizer=other_tok, embedder="bge-small")
    message = str(info.value)
    assert "bbbb2222" in message and "dddd4444" in message
    assert EMBEDDER in message and "bge-small" in message
