"""Models: the frozen LLM, the extensible tokenizer, mixed inputs and default model resolution.

Import from the submodules; this package stays light so the CLI's `--help` is fast.
"""
