"""`extok-rag serve`: an HTTP API over an index (FastAPI + uvicorn), OpenAI-compatible chat
completions included. Glue over `extok_rag.query`: see `app.py` for the routes, `worker.py`
for the one model thread and its bounded queue, `live_index.py` for reloads on commit.

    state = ServeState.create(llm, embedder, index_dir, open_index(index_dir), facts)
    uvicorn.run(create_app(state))
"""

from extok_rag.serve.app import ServeLimits, ServeState, create_app

__all__ = ["ServeLimits", "ServeState", "create_app"]
