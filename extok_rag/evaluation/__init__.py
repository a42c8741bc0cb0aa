"""Evaluation: held-out books and the paper's Table 1 perplexity protocol (`lm`).

Modules import torch; import them directly (`extok_rag.evaluation.lm`), this package re-exports
nothing so that importing it stays cheap.
"""
