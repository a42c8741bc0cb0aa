"""extok-rag: retrieval-augmented generation with Extensible Tokenization (arXiv 2401.07793).

Retrieved chunks are turned into *extensible embeddings* by a small LM (the extensible
tokenizer), down-scaled k-fold, and read by a frozen LLM in place of the raw chunk tokens.
"""

__version__ = "0.1.0"
