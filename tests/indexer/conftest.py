"""Indexer fixtures: a corpus with good and bad files, and a counter of model calls."""

from __future__ import annotations

from pathlib import Path

import pytest

from extok_rag.chunking import ChunkingConfig
from extok_rag.indexing import IndexModels, IndexSettings

# float16 states: these tests check the stored states bitwise against the tokenizer's output;
# int8 (the default) is checked against them in test_state_encoding.py and through the CLI.
SETTINGS = IndexSettings(
    chunking=ChunkingConfig(chunk_tokens=64),
    stride=2,
    state_encoding="float16",
    batch_tokens=2048,
    commit_tokens=512,
)


PROSE = (
    "Extensible tokenization turns each chunk into a few embeddings. The frozen model reads "
    "them in place of the raw tokens. Section {i} says something different from the others, "
    "with numbers {i} and {j}.\n\n"
)


def write_corpus(root: Path) -> Path:
    """Good files (.md, .txt, .rst, .html, .pdf-shaped junk), empty, binary, non-UTF-8 and a
    large file."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "a.md").write_text(
        "# Alpha\n\n" + "".join(PROSE.format(i=i, j=2 * i) for i in range(6))
    )
    (root / "sub").mkdir()
    (root / "sub" / "b.txt").write_text("".join(PROSE.format(i=i, j=i + 7) for i in range(3)))
    (root / "c.rst").write_text("Gamma\n=====\n\nA short reStructuredText document.\n")
    (root / "page.html").write_text(
        "<html><head><style>p{}</style><script>var x=1;</script></head>"
        "<body><h1>Delta</h1><p>Visible &amp; indexed text.</p></body></html>"
    )
    (root / "empty.txt").write_text("")
    (root / "blank.md").write_text("   \n\n  ")
    (root / "binary.txt").write_bytes(b"\x00\x01\x02binary\x00" * 100)
    (root / "latin1.txt").write_bytes("caf\xe9 na\xefve".encode("latin-1"))
    (root / "broken.pdf").write_bytes(b"%PDF-1.4 not really a pdf")
    (root / "image.png").write_bytes(b"\x89PNG\r\n")  # unsupported suffix: never listed
    (root / "big.md").write_text("".join(PROSE.format(i=i, j=i * i) for i in range(40)))
    return root


@pytest.fixture
def corpus(tmp_path) -> Path:
    return write_corpus(tmp_path / "corpus")


class CountingModels(IndexModels):
    """IndexModels that count forward calls of both models."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = {"tokenizer": 0, "embedder": 0}

    @property
    def tokenizer(self):
        tok = IndexModels.tokenizer.__get__(self)  # cached on first use
        if not getattr(tok, "_counted", False):
            encode = tok.encode

            def counted(chunks):
                self.calls["tokenizer"] += 1
                return encode(chunks)

            tok.encode, tok._counted = counted, True
        return tok

    @property
    def embedder(self):
        emb = IndexModels.embedder.__get__(self)
        if not getattr(emb, "_counted", False):
            embed = emb.embed

            def counted(texts, *args):
                self.calls["embedder"] += 1
                return embed(texts, *args)

            emb.embed, emb._counted = counted, True
        return emb


@pytest.fixture
def make_models(tiny_llm, tiny_embedder_dir):
    """A factory of fresh CountingModels on the tiny LLM and embedder."""
    return lambda: CountingModels(tiny_llm, None, tiny_embedder_dir)


@pytest.fixture
def models(make_models) -> CountingModels:
    return make_models()


@pytest.fixture
def settings() -> IndexSettings:
    return SETTINGS
