"""The read path: retrieval, one prompt builder per mode, and the answer.

retrieval.py   question -> top-n chunks (vectors, BM25 or both), their states at k
modes.py       the one list of modes (no torch)
prompt.py      a prompt request and the prompt it becomes (the ask frame)
plain.py       none, raw, compressed, hybrid
budget.py      expand, spans, truncated (a position budget; spans from `extok_rag.spans`)
attention.py   the `llm` span scorer
build.py       the builders' table, auto, and `build_prompt`
answer.py      `ask`: retrieve, build, stream
reader.py      the public Python API: `extok_rag.open(index).ask(question)`
context.py     a file given as context (`generate`), read as retrieved chunks
online.py      the online mode: a long text read in sessions, each condensed at k into one
               reused KV cache, then asked (`extok-rag read`)

Import from the modules: this package's root imports nothing, so `ask.modes` stays free of
torch for the CLI's options.
"""
