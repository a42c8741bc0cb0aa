"""extok-rag: retrieval-augmented generation with Extensible Tokenization (arXiv 2401.07793).

Retrieved chunks are turned into *extensible embeddings* by a small LM (the extensible
tokenizer), down-scaled k-fold, and read by a frozen LLM in place of the raw chunk tokens.

    import extok_rag
    answer = extok_rag.open("indexes/corpus").ask("What does a chunk of 512 tokens become?")
"""

__version__ = "0.1.0"

__all__ = ["Answer", "Reader", "__version__", "open"]


def __getattr__(name: str):
    """The public API (`extok_rag.open(path).ask(question)`), imported on first use so that
    `import extok_rag` stays free of torch."""
    if name in ("open", "Reader", "Answer"):
        from extok_rag.ask import reader

        return getattr(reader, name)
    raise AttributeError(f"module 'extok_rag' has no attribute {name!r}")
