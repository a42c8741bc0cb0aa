"""An `eval qa` run: per set, the corpus written to files, indexed as `extok-rag index` would
(incrementally; rebuilt when the models changed), evaluated with every finished condition
journaled, and the docs section with the command that reproduces it. `extok-rag eval qa`
parses options and draws progress; the run is here."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Collection
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from extok_rag import __version__
from extok_rag.config import RuntimeConfig
from extok_rag.errors import IncompatibleModelError
from extok_rag.evaluation.journal import Journal, open_journal
from extok_rag.evaluation.qa import ROW_FAMILIES, Progress, QAEvalConfig, SetResult, evaluate_qa
from extok_rag.evaluation.qa_data import load_qa_set, write_corpus
from extok_rag.indexes import IndexSnapshot, open_index
from extok_rag.indexing import IndexModels, IndexSettings, build_index
from extok_rag.models.embedder import Embedder
from extok_rag.models.llm import FrozenLLM

DOCS_SECTION = "eval-qa"
Notice = Callable[[str], None]


@dataclass
class QARun:
    """What every set of one `eval qa` run shares."""

    cfg: QAEvalConfig
    llm: FrozenLLM
    checkpoint: Path | None  # the extensible tokenizer that indexes the sets (None: untrained)
    embedder_dir: Path | None  # the retrieval embedder (None: MiniLM)
    root: Path  # <root>/<set>/corpus, index(-int8), runs
    runtime: RuntimeConfig
    states: str  # the sets' index state encoding
    rows: Collection[str] = ROW_FAMILIES
    resume: bool = True
    data_dir: Path | None = None  # cache of the QA package

    def index_dir(self, name: str) -> Path:
        """A set's index for the state encoding; float16 keeps the folder indexes always had."""
        folder = self.root / name
        return folder / ("index" if self.states == "float16" else f"index-{self.states}")

    def index_corpus(self, name: str, progress=None, notice: Notice | None = None) -> None:
        """`extok-rag index <root>/<set>/corpus --index INDEX_DIR --states STATES`."""
        models = IndexModels(self.llm, self.checkpoint, self.embedder_dir)
        settings = IndexSettings(state_encoding=self.states)
        corpus, index_dir = self.root / name / "corpus", self.index_dir(name)
        try:
            build_index(corpus, index_dir, models, settings, progress=progress)
        except IncompatibleModelError:
            if notice is not None:
                notice(f"{index_dir}: other models; re-indexing")
            build_index(corpus, index_dir, models, settings, rebuild=True, progress=progress)

    def journal(self, name: str, snapshot: IndexSnapshot, notice: Notice | None) -> Journal:
        """The journal of one set's run: settings = everything that changes an answer."""
        manifest = snapshot.manifest.to_dict()
        for volatile in ("created", "updated", "table_version", "vector_file"):
            manifest.pop(volatile, None)
        settings = {
            "set": name,
            "config": self.cfg.to_dict(),
            "index": manifest,
            "llm": self.llm.identity.to_dict(),
            "dtype": str(self.llm.dtype),
            "decode": "q4" if self.llm.q4_weights() else "model",  # models.q4
            "device": str(self.llm.device),
            "extok_rag": __version__,
        }
        folder = self.root / name / "runs"
        return open_journal("qa", settings, self.resume, f"{name} conditions", folder, notice)

    def evaluate(
        self,
        name: str,
        index_progress: AbstractContextManager | None = None,
        advance: Progress | None = None,
        notice: Notice | None = None,
    ) -> SetResult:
        """Corpus files -> index -> every condition on every question of the set."""
        qa_set = load_qa_set(name, self.cfg.questions, self.cfg.seed, self.data_dir)
        write_corpus(qa_set, self.root / name / "corpus")
        with index_progress or nullcontext() as progress:
            self.index_corpus(name, progress, notice)
        snapshot = open_index(self.index_dir(name))
        retrieval = Embedder.load(self.embedder_dir, self.runtime)
        journal = self.journal(name, snapshot, notice)
        return evaluate_qa(
            self.llm, retrieval, snapshot, qa_set, self.cfg, advance, journal, self.rows
        )


def qa_docs_section(markdown: str, machine: str, run: QARun, names: list[str]) -> str:
    """The docs/benchmarks.md section: the command, machine, tokenizer, notes and tables."""
    default = QAEvalConfig()
    args = ["extok-rag", "eval", "qa", "--sets", ",".join(names)]
    for key, value in run.cfg.to_dict().items():
        if value != getattr(default, key):
            text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
            args += [f"--{key.replace('_', '-')}", text]
    tokenizer = f"`{run.checkpoint}`" if run.checkpoint else "the untrained tokenizer"
    return "\n\n".join(
        [
            "## RAG question answering (`eval qa`)",
            f"`{shlex.join(args)}` — {machine}. Extensible tokenizer: {tokenizer}.",
            QA_NOTES,
            markdown,
        ]
    )


QA_NOTES = (
    "Accuracy: a normalised gold answer (SQuAD normalisation) appears in the greedy answer "
    "(at most the row's max new tokens); F1: SQuAD token F1. Recall@n: the share of a "
    "question's gold paragraphs among the retrieved chunks' files. Prompt positions: the whole "
    "chat prompt (template, question twice, context). Latency (median) is timed on the first "
    "questions, answered one at a time as `ask` answers them (their answers are scored too; "
    "the rest run batched): prefill = prompt forward pass to the first token, total = "
    "retrieval + prompt + whole answer. SQuAD: the corpus is all 1,204 dev "
    "paragraphs; HotpotQA: the union of the drawn questions' 10 distractor-setting paragraphs "
    "(yes/no questions left out)."
)
