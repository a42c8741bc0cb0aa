"""The read path: retrieval, one prompt builder per mode, and the answer.

retrieval.py   question -> top-n chunks (text + stored states), states at k
modes.py       the one list of modes (no torch)
prompt.py      a prompt request and the prompt it becomes (the ask frame)
plain.py       none, raw, compressed, hybrid
budget.py      expand, spans, truncated (a position budget; spans from `extok_rag.spans`)
attention.py   the `llm` span scorer
build.py       the builders' table and `build_prompt`
answer.py      `ask`: retrieve, build, stream
reader.py      the public Python API: `extok_rag.open_index(path).ask(question)`
"""
