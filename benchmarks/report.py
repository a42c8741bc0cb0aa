"""The benchmark scripts' report helpers: `extok_rag.evaluation.report`, re-exported so that the
scripts here write docs/benchmarks.md sections as `eval … --write-docs` does."""

from extok_rag.evaluation.report import DOC, HEADER, machine_line, settings_text, write_section

__all__ = ["DOC", "HEADER", "machine_line", "settings_text", "write_section"]
