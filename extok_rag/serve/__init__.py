"""`extok-rag serve`: an HTTP API over an index (FastAPI + uvicorn), OpenAI-compatible chat
completions included. Glue over `extok_rag.ask`: `app.py` holds the app and the `/ask` and
info routes, `chat.py` the OpenAI-compatible ones, `jobs.py` the state and a request's preparation
(retrieval, prompt), `worker.py` the one model thread (a continuous batch) and its bounded queue,
`live_index.py` reloads on commit.

    state = ServeState.create(llm, embedder, index_dir, open_index(index_dir), facts)
    uvicorn.run(create_app(state))

    app, state = build_app(ServeOptions(index_dir, llm="DIR"), facts)  # `serve`'s start-up
"""

from extok_rag.serve.app import ServeOptions, build_app, create_app
from extok_rag.serve.jobs import ServeLimits, ServeState

__all__ = ["ServeLimits", "ServeOptions", "ServeState", "build_app", "create_app"]
