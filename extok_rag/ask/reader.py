"""The public Python API: open an index once, ask it many questions.

    import extok_rag

    index = extok_rag.open("indexes/corpus")   # or a name under ./indexes/, or None: the only one
    answer = index.ask("What does a chunk of 512 tokens become with k = 8?")
    print(answer.text, answer.mode, answer.positions, [s.doc_path for s in answer.sources])

    for piece in index.stream("..."):           # the same answer, streamed
        print(piece, end="")

Options are `ask`'s (`AskConfig` and `GenerationConfig` fields): `index.ask(q, mode="spans",
budget=300, top_n=8, max_new_tokens=64)`. The models load on `open` (SmolLM2 and MiniLM by
default, each from its wheel; `llm=` and `embedder=` take loaded ones).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path

from extok_rag.ask.answer import ask, describe
from extok_rag.ask.retrieval import Retrieved, check_models
from extok_rag.config import AskConfig, GenerationConfig, RuntimeConfig
from extok_rag.indexes import IndexSnapshot, open_index, resolve_index_dir
from extok_rag.models.embedder import Embedder
from extok_rag.models.llm import FrozenLLM

_ASK_FIELDS = {f.name for f in fields(AskConfig)}
_GEN_FIELDS = {f.name for f in fields(GenerationConfig)}


@dataclass
class Answer:
    """One answer: its text, the chunks retrieved, and how they were read."""

    question: str
    text: str
    sources: list[Retrieved]
    mode: str  # the mode that built the prompt (auto: the one it chose)
    k: int | None  # k of the compressed chunks (None: none compressed)
    positions: int  # positions the prompt took in the LLM window
    expanded: list[dict]  # budget modes: the sentences read raw
    finish_reason: str  # "stop" (end of turn) or "length" (cut at max_new_tokens)

    def __str__(self) -> str:
        return self.text


class Reader:
    """An index opened for asking, with the frozen LLM and the retrieval embedder loaded."""

    def __init__(
        self,
        snapshot: IndexSnapshot,
        llm: FrozenLLM,
        embedder: Embedder,
        ask_config: AskConfig | None = None,
        generation: GenerationConfig | None = None,
    ):
        check_models(snapshot, llm, embedder)
        self.snapshot, self.llm, self.embedder = snapshot, llm, embedder
        self.ask_config = ask_config or AskConfig()
        self.generation = generation or GenerationConfig(max_new_tokens=128)

    @classmethod
    def open(
        cls,
        index: str | Path | None = None,
        llm: FrozenLLM | None = None,
        embedder: Embedder | None = None,
        runtime: RuntimeConfig | None = None,
        **options,
    ) -> Reader:
        """An index folder, a name under ./indexes/, or (None) the only index there."""
        snapshot = open_index(resolve_index_dir(Path(index) if index is not None else None))
        runtime = runtime or RuntimeConfig()
        llm = llm or FrozenLLM.load(None, runtime)
        reader = cls(snapshot, llm, embedder or Embedder.load(None, runtime))
        reader.ask_config, reader.generation = reader.configs(options)
        return reader

    def configs(self, options: dict) -> tuple[AskConfig, GenerationConfig]:
        unknown = set(options) - _ASK_FIELDS - _GEN_FIELDS
        if unknown:
            known = ", ".join(sorted(_ASK_FIELDS | _GEN_FIELDS))
            raise TypeError(f"unknown option(s) {', '.join(sorted(unknown))}: one of {known}")
        ask_cfg = replace(self.ask_config, **{k: v for k, v in options.items() if k in _ASK_FIELDS})
        gen = replace(self.generation, **{k: v for k, v in options.items() if k in _GEN_FIELDS})
        return ask_cfg, gen

    def stream(self, question: str, **options) -> Iterator[str]:
        """The answer's text pieces as they are generated."""
        ask_cfg, gen = self.configs(options)
        _, _, pieces = ask(self.llm, self.embedder, self.snapshot, question, ask_cfg, gen)
        return iter(pieces)

    def ask(self, question: str, **options) -> Answer:
        """Retrieve, read the chunks as the mode says, and answer (greedy by default)."""
        ask_cfg, gen = self.configs(options)
        chunks, prompt, pieces = ask(self.llm, self.embedder, self.snapshot, question, ask_cfg, gen)
        text = "".join(pieces).strip()
        how = describe(prompt, chunks)
        del how["chunks_read"]
        return Answer(question, text, chunks, **how, finish_reason=pieces.finish_reason)


def open(index: str | Path | None = None, **kwargs) -> Reader:
    """`Reader.open`: `extok_rag.open("indexes/corpus").ask("…")`."""
    return Reader.open(index, **kwargs)
