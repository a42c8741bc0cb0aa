"""Chunk table: bitwise state round trip, fetch order, deletes, row ids, versions."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from extok_rag.errors import IndexStoreError
from extok_rag.indexes.codec import states_from_arrow, states_to_arrow
from extok_rag.indexes.schema import ChunkRecord, chunk_schema
from extok_rag.indexes.table import ChunkTable

DIM, D = 16, 8  # small vector and state sizes keep these tests fast


def make_records(
    rng: np.random.Generator, doc: str, n_chunks: int, lengths=None, doc_hash: str = "h0"
) -> list[ChunkRecord]:
    lengths = lengths or [int(rng.integers(1, 9)) for _ in range(n_chunks)]
    return [
        ChunkRecord(
            chunk_id=f"{doc}#{i}",
            doc_path=doc,
            doc_hash=f"{doc}:{doc_hash}",
            content_hash=f"c{i}",
            position=i,
            text=f"chunk {i} of {doc}",
            n_tokens=4 * n,
            vector=rng.standard_normal(DIM).astype(np.float32),
            states=rng.standard_normal((n, D)).astype(np.float16),
        )
        for i, n in enumerate(lengths)
    ]


def assert_same_bits(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_schema_is_parameterised():
    schema = chunk_schema(dim=384, d=576)
    assert schema.field("vector").type == pa.list_(pa.float32(), 384)
    assert schema.field("states").type == pa.list_(pa.list_(pa.float16(), 576))
    assert schema.field("row_id").type == pa.int64()
    assert schema.field("text").metadata[b"lance-encoding:compression"] == b"zstd"
    int8 = chunk_schema(dim=384, d=576, encoding="int8")
    assert int8.field("vector").type == pa.list_(pa.float16(), 384)  # unit vectors
    assert int8.field("state_scales").type == pa.list_(pa.float16())


def test_int8_table_keeps_vectors_at_float16(tmp_path, rng):
    table = ChunkTable.create(tmp_path, dim=DIM, d=D, encoding="int8")
    records = make_records(rng, "a.md", 4)
    table.add(records)
    assert table.vector_dtype == np.float16
    row_ids, vectors = table.vectors()
    want = np.stack([records[i].vector for i in row_ids]).astype(np.float16).astype(np.float32)
    assert vectors.dtype == np.float32 and np.array_equal(vectors, want)
    for chunk in table.fetch([3, 1]):
        assert np.array_equal(chunk.vector, want[list(row_ids).index(chunk.row_id)])


def test_states_arrow_round_trip_is_bitwise(rng):
    specials = np.array([np.inf, -np.inf, np.nan, -0.0, 6.1e-5, 65504, 6e-8, 0.0], np.float16)
    nan_payload = np.array([0x7E01] * D, dtype=np.uint16).view(np.float16)  # non-canonical NaN
    states = [
        rng.standard_normal((1, D)).astype(np.float16),
        specials.reshape(1, D),
        nan_payload.reshape(1, D),
        rng.standard_normal((17, D)).astype(np.float16),
        np.zeros((0, D), np.float16),
        rng.standard_normal((3, D)).astype(np.float16),
    ]
    array = states_to_arrow(states, D)
    assert array.type == chunk_schema(DIM, D).field("states").type
    for got, want in zip(states_from_arrow(array, D), states, strict=True):
        assert_same_bits(got, want)
    # a slice (offsets not starting at 0) and a chunked array read back the same
    assert states_from_arrow(array.slice(0, 0), D) == []
    for got, want in zip(states_from_arrow(array.slice(3), D), states[3:], strict=True):
        assert_same_bits(got, want)
    chunked = pa.chunked_array([array.slice(0, 2), array.slice(2)])
    for got, want in zip(states_from_arrow(chunked, D), states, strict=True):
        assert_same_bits(got, want)


def test_add_fetch_round_trip_in_asked_order(tmp_path, rng):
    table = ChunkTable.create(tmp_path, dim=DIM, d=D)
    records = make_records(rng, "a.md", 5, lengths=[1, 3, 1, 8, 2]) + make_records(rng, "b.md", 4)
    row_ids = table.add(records)
    assert row_ids.tolist() == list(range(9))
    asked = [7, 0, 3, 3, 8, 1]
    fetched = table.fetch(asked)
    assert [c.row_id for c in fetched] == asked
    for chunk, row_id in zip(fetched, asked, strict=True):
        want = records[row_id]
        assert_same_bits(chunk.states, want.states)
        assert_same_bits(chunk.vector, want.vector)
        assert (chunk.chunk_id, chunk.doc_path, chunk.position) == (
            want.chunk_id,
            want.doc_path,
            want.position,
        )
        assert (chunk.text, chunk.n_tokens, chunk.content_hash) == (
            want.text,
            want.n_tokens,
            want.content_hash,
        )
    assert table.fetch([]) == []


def test_fetch_unknown_row_id_raises(tmp_path, rng):
    table = ChunkTable.create(tmp_path, dim=DIM, d=D)
    table.add(make_records(rng, "a.md", 2))
    with pytest.raises(IndexStoreError, match=r"row ids not in chunk table.*: 5"):
        table.fetch([0, 5])


def test_delete_docs_and_doc_hashes(tmp_path, rng):
    table = ChunkTable.create(tmp_path, dim=DIM, d=D)
    for doc in ["a.md", "b's.md", "c.md"]:  # a quote in a path must not break the filter
        table.add(make_records(rng, doc, 3))
    assert table.doc_hashes() == {d: f"{d}:h0" for d in ["a.md", "b's.md", "c.md"]}
    table.delete_docs(["b's.md", "missing.md"])
    table.delete_docs([])
    assert table.count() == 6
    assert set(table.doc_hashes()) == {"a.md", "c.md"}
    row_ids, vectors = table.vectors()
    assert sorted(row_ids.tolist()) == [0, 1, 2, 6, 7, 8]
    assert vectors.shape == (6, DIM) and vectors.dtype == np.float32


def test_row_ids_never_reused_after_delete_and_reopen(tmp_path, rng):
    table = ChunkTable.create(tmp_path, dim=DIM, d=D)
    table.add(make_records(rng, "a.md", 2))
    table.add(make_records(rng, "b.md", 3))
    assert table.max_row_id() == 4
    table.delete_docs(["b.md"])  # deletes the highest ids
    assert table.max_row_id() == 1
    reopened = ChunkTable.open(tmp_path)
    assert reopened.add(make_records(rng, "c.md", 2)).tolist() == [5, 6]
    # a lost counter file (crash before it was written) falls back to the table's max
    (tmp_path / "lance" / "row_ids.json").unlink()
    assert reopened.next_row_id() == 7


def test_snapshot_keeps_old_rows_after_later_writes(tmp_path, rng):
    table = ChunkTable.create(tmp_path, dim=DIM, d=D)
    table.add(make_records(rng, "a.md", 3))
    snapshot = table.checkout()
    version = snapshot.version
    table.delete_docs(["a.md"])
    table.add(make_records(rng, "b.md", 2))
    assert table.version > version
    assert table.count() == 2
    assert snapshot.count() == 3 and snapshot.version == version
    assert [c.doc_path for c in snapshot.fetch([2, 0])] == ["a.md", "a.md"]
    assert ChunkTable.open(tmp_path, version=version).count() == 3
    with pytest.raises(IndexStoreError, match="read-only"):
        snapshot.add(make_records(rng, "c.md", 1))


def test_open_errors(tmp_path):
    with pytest.raises(IndexStoreError, match="no chunk table"):
        ChunkTable.open(tmp_path)
    ChunkTable.create(tmp_path, dim=DIM, d=D)
    with pytest.raises(IndexStoreError, match="already exists"):
        ChunkTable.create(tmp_path, dim=DIM, d=D)
    with pytest.raises(IndexStoreError, match="no version 99"):
        ChunkTable.open(tmp_path, version=99)
    reopened = ChunkTable.open(tmp_path)
    assert (reopened.dim, reopened.d, reopened.count()) == (DIM, D, 0)


def test_wrong_shapes_refused(tmp_path, rng):
    table = ChunkTable.create(tmp_path, dim=DIM, d=D)
    (record,) = make_records(rng, "a.md", 1)
    bad = ChunkRecord(**{**record.__dict__, "states": np.zeros((2, D + 1), np.float16)})
    with pytest.raises(IndexStoreError, match=r"expects \(n_states, 8\)"):
        table.add([bad])
    assert table.count() == 0


def test_scans_return_every_row_not_a_default_limit(tmp_path, rng):
    table = ChunkTable.create(tmp_path, dim=DIM, d=D)
    for i in range(3):
        table.add(make_records(rng, f"doc{i}.md", 12))
    row_ids, vectors = table.vectors()
    assert sorted(row_ids.tolist()) == list(range(36)) and vectors.shape == (36, DIM)
    assert len(table.doc_hashes()) == 3
    assert len(table.fetch(np.arange(36)[::-1])) == 36


def test_fetch_looks_row_ids_up_in_a_btree_index(tmp_path, rng):
    table = ChunkTable.create(tmp_path, dim=DIM, d=D)
    assert not table.ensure_row_id_index()  # nothing to index yet
    table.add(make_records(rng, "a.md", 20))
    assert table.ensure_row_id_index() and not table.ensure_row_id_index()
    table.add(make_records(rng, "b.md", 5))  # not yet indexed: still found
    plan = table._fetch_query(np.array([3, 21])).explain_plan(True)
    assert "ScalarIndexQuery" in plan and "BTree" in plan
    assert [c.row_id for c in table.fetch([21, 3])] == [21, 3]


def test_optimize_compacts_and_deletes_only_versions_before_keep(tmp_path, rng):
    """Commits as `build_index` makes them: each keeps the previous commit's version."""
    import time

    from extok_rag.indexes.table import _table_path

    def data_files() -> set[str]:
        return {p.name for p in (_table_path(tmp_path) / "data").iterdir()}

    table = ChunkTable.create(tmp_path, dim=DIM, d=D)
    for i in range(6):
        table.add(make_records(rng, f"doc{i}.md", 30, lengths=[64] * 30))
    old, first_files = table.version, data_files()
    time.sleep(1.2)  # versions are kept down to one second before `keep_from`
    table.delete_docs(["doc0.md", "doc1.md", "doc2.md"])
    keep = table.checkout()  # a reader pinned to the previous commit
    table.add(make_records(rng, "late.md", 2))
    table.ensure_row_id_index()
    time.sleep(1.2)
    table.optimize(keep_from=keep.version)
    assert table.fragments() == 1 and table.count() == 92
    assert not table.has_version(old)
    with pytest.raises(IndexStoreError, match=f"no version {old}"):
        ChunkTable.open(tmp_path, old)
    assert table.has_version(keep.version) and keep.count() == 90
    assert [c.doc_path for c in keep.fetch([100])] == ["doc3.md"]  # its files are intact
    assert len(first_files & data_files()) == 3  # doc3..5's files, which `keep` still reads

    for run in range(2):  # two more commits, each keeping its predecessor's final version
        committed = table.version
        time.sleep(1.2)
        table.add(make_records(rng, f"run{run}.md", 1))
        table.optimize(keep_from=committed)
        assert table.has_version(committed) and table.count() == 93 + run
    assert not table.has_version(keep.version)
    assert not first_files & data_files()  # the deleted documents' data is gone


def test_int8_quantisation_error_is_within_half_a_step(rng):
    from extok_rag.indexes.codec import dequantize_int8, quantize_int8

    x = rng.standard_normal((200, D)).astype(np.float32) * rng.uniform(1e-3, 1e2, (200, 1))
    x[::7, 3] *= 50  # outlier channels, as residual streams have
    x[5] = 0.0  # an all-zero state
    q, scales = quantize_int8(x.astype(np.float16))
    assert q.dtype == np.int8 and scales.dtype == np.float16 and scales.shape == (200,)
    assert np.abs(q).max() <= 127
    x16 = x.astype(np.float16).astype(np.float32)
    peak = np.abs(x16).max(axis=1)
    # float16 scales are rounded up: never below max|x| / 127, at most one float16 step above
    assert (scales.astype(np.float32) >= peak / 127).all()
    assert (scales.astype(np.float32) <= peak / 127 * (1 + 2**-10) + 1e-12).all()
    error = np.abs(dequantize_int8(q, scales) - x16)
    bound = scales.astype(np.float32)[:, None] / 2  # <= max|x| / 254 · (1 + 2⁻¹⁰)
    assert (error <= bound * (1 + 1e-6) + 1e-12).all()
    assert (error <= peak[:, None] / 254 * (1 + 2**-10) * (1 + 1e-6) + 1e-12).all()
    assert (dequantize_int8(q, scales)[5] == 0).all()
    with pytest.raises(IndexStoreError, match="inf or NaN"):
        quantize_int8(np.array([[1.0, np.inf]], np.float16))
    with pytest.raises(IndexStoreError, match="float16's range"):
        quantize_int8(np.array([[1e7, 0.0]], np.float32))


def test_int8_table_round_trip_keeps_each_rows_scales(tmp_path, rng):
    table = ChunkTable.create(tmp_path, dim=DIM, d=D, encoding="int8")
    assert table.encoding == "int8" and ChunkTable.open(tmp_path).encoding == "int8"
    records = make_records(rng, "a.md", 6, lengths=[1, 5, 2, 9, 1, 3])
    scaled = [  # chunks of very different magnitudes: a scale read for the wrong row shows
        ChunkRecord(**{**r.__dict__, "states": (r.states * 10.0 ** (i - 3)).astype(np.float16)})
        for i, r in enumerate(records)
    ]
    table.add(scaled)
    for chunk in table.fetch([4, 0, 3, 3, 5, 1, 2]):
        want = scaled[chunk.row_id].states.astype(np.float32)
        assert chunk.states.dtype == np.float32 and chunk.states.shape == want.shape
        bound = np.abs(want).max(axis=1, keepdims=True) / 254 * (1 + 2**-10)
        assert (np.abs(chunk.states - want) <= bound * (1 + 1e-5)).all()
    with pytest.raises(IndexStoreError, match="unknown state encoding 'int4'"):
        ChunkTable.create(tmp_path / "x", dim=DIM, d=D, encoding="int4")


def test_int8_table_with_float32_scales_still_reads_and_grows(tmp_path, rng):
    """An int8 table written before float16 scales and vectors (float32 both) reads, and
    takes appends in its own types."""
    import lancedb

    schema = chunk_schema(DIM, D, "int8")
    old = schema.set(
        schema.get_field_index("state_scales"), pa.field("state_scales", pa.list_(pa.float32()))
    )
    old = old.set(old.get_field_index("vector"), pa.field("vector", pa.list_(pa.float32(), DIM)))
    (tmp_path / "lance").mkdir()
    lancedb.connect(str(tmp_path / "lance")).create_table("chunks", schema=old)
    table = ChunkTable.open(tmp_path)
    assert table.encoding == "int8" and table.bytes_per_state == D + 4
    assert table.vector_dtype == np.float32
    records = make_records(rng, "a.md", 3, lengths=[2, 1, 4])
    table.add(records)
    assert np.array_equal(
        table.vectors()[1], np.stack([r.vector for r in records]).astype(np.float32)
    )
    assert (
        ChunkTable.open(tmp_path)._table.schema.field("state_scales").type
        == old.field("state_scales").type
    )
    for chunk in table.fetch([2, 0, 1]):
        want = records[chunk.row_id].states.astype(np.float32)
        bound = np.abs(want).max(axis=1, keepdims=True) / 254 * (1 + 2**-10)
        assert (np.abs(chunk.states - want) <= bound * (1 + 1e-5)).all()


def test_int8_states_take_about_half_the_bytes(tmp_path, rng):
    from extok_rag.indexes.schema import bytes_per_state

    assert bytes_per_state(576, "float16") == 1152 and bytes_per_state(576, "int8") == 578
    d = 256
    states = [rng.standard_normal((64, d)).astype(np.float16) for _ in range(40)]
    sizes = {}
    for encoding in ("float16", "int8"):
        table = ChunkTable.create(tmp_path / encoding, dim=DIM, d=d, encoding=encoding)
        table.add(
            [
                ChunkRecord(f"c{i}", "a.md", "h", "c", i, "t", 128, np.zeros(DIM, np.float32), s)
                for i, s in enumerate(states)
            ]
        )
        sizes[encoding] = table.data_bytes()
    assert sizes["int8"] / sizes["float16"] < (d + 2) / (2 * d) + 0.02


def test_vector_precision_follows_the_tables_vectors(tmp_path):
    assert ChunkTable.create(tmp_path / "a", dim=DIM, d=D).vector_precision == "float32"
    int8 = ChunkTable.create(tmp_path / "b", dim=DIM, d=D, encoding="int8")
    assert int8.vector_precision == "float16"


def test_append_stream_is_one_commit_with_add_s_row_ids(tmp_path, rng):
    """Rows made elsewhere (a distributed engine's workers) in `layout`, streamed in: one new
    version, read back like `add`'s rows, and the row-id counter moves on."""
    table = ChunkTable.create(tmp_path, DIM, D)
    table.add(make_records(rng, "a.md", 2))
    version = table.version
    first, second = make_records(rng, "b.md", 3), make_records(rng, "c.md", 2)
    batches = [
        table.layout.to_arrow(first, np.arange(2, 5)),
        table.layout.to_arrow(second, np.arange(5, 7)).to_batches()[0],
    ]
    assert table.append_stream(iter(batches)) == 5
    assert table.version == version + 1
    stored = table.fetch(np.arange(2, 7))
    assert [c.chunk_id for c in stored] == [r.chunk_id for r in first + second]
    for got, want in zip(stored, first + second, strict=True):
        assert_same_bits(got.states, want.states)
    assert table.next_row_id() == 7 and table.add(make_records(rng, "d.md", 1)).tolist() == [7]


def test_append_stream_commits_nothing_on_bad_row_ids_or_a_failing_producer(tmp_path, rng):
    table = ChunkTable.create(tmp_path, DIM, D)
    table.add(make_records(rng, "a.md", 2))
    version = table.version
    skipping = table.layout.to_arrow(make_records(rng, "b.md", 2), np.array([3, 4]))
    with pytest.raises(IndexStoreError, match="expected them to run on from 2"):
        table.append_stream([skipping])

    class WorkerDied(Exception):
        pass

    def producer():
        yield table.layout.to_arrow(make_records(rng, "b.md", 2), np.arange(2, 4))
        raise WorkerDied("a worker died")

    with pytest.raises(WorkerDied, match="a worker died"):  # as raised, not LanceDB's wrapper
        table.append_stream(producer())
    assert table.version == version and table.count() == 2 and table.next_row_id() == 2
    assert table.append_stream([]) == 0 and table.version == version


def test_moved_names_still_import_from_table():
    """Names split out of table.py into schema/codec/rows are still importable from it."""
    from extok_rag.indexes import codec, rows, schema, table

    assert table.ChunkRecord is schema.ChunkRecord and table.chunk_schema is schema.chunk_schema
    assert table.check_encoding is schema.check_encoding
    assert table.bytes_per_state is schema.bytes_per_state
    assert table.quantize_int8 is codec.quantize_int8
    assert table.dequantize_int8 is codec.dequantize_int8
    assert table.TableLayout is rows.TableLayout
