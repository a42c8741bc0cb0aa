"""transformers' GGUF loader with its repeated reads shared (`defaults.shared_gguf_reads`): the
same file parsed once, the tensor-name table built once, and everything restored afterwards.
(On the shipped GGUF the converted directory came out byte-identical, 15-18 s -> 5.5 s.)"""

import gguf
import numpy as np

from extok_rag.models.defaults import shared_gguf_reads


def tiny_gguf(path):
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_block_count(2)
    writer.add_tensor("token_embd.weight", np.arange(12, dtype=np.float32).reshape(3, 4))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_file_is_parsed_once_and_reads_the_same(tmp_path):
    path = tiny_gguf(tmp_path / "tiny.gguf")
    plain = gguf.GGUFReader(path)
    with shared_gguf_reads():
        first, again = gguf.GGUFReader(path), gguf.GGUFReader(str(path))
        assert first is again
        assert [t.name for t in first.tensors] == [t.name for t in plain.tensors]
        assert np.array_equal(first.tensors[0].data, plain.tensors[0].data)
        assert gguf.GGUFReader(path, "r") is not first  # other arguments, another reader


def test_the_name_table_is_built_once_and_maps_alike():
    arch = gguf.MODEL_ARCH.LLAMA
    plain = gguf.get_tensor_name_map(arch, 2)
    with shared_gguf_reads():
        table = gguf.get_tensor_name_map(arch, 2)
        assert gguf.get_tensor_name_map(arch, 2) is table
        name = "model.layers.1.self_attn.q_proj"
        assert table.get_name(name) == plain.get_name(name) == "blk.1.attn_q"


def test_the_originals_come_back(tmp_path):
    reader, names = gguf.GGUFReader, gguf.get_tensor_name_map
    with shared_gguf_reads():
        assert gguf.GGUFReader is not reader
    assert gguf.GGUFReader is reader and gguf.get_tensor_name_map is names
