"""Ray Serve: `extok-rag serve`'s app as one deployment of N replicas behind one route.

    app = deployment("indexes/corpus", replicas=2)        # a Ray Serve Application
    serve.run(app, route_prefix="/")                      # http://127.0.0.1:8000/v1/...
    extok-rag serve --replicas 2 --port 8000              # the same from the CLI (`run`)

Each replica runs `extok_rag.serve.build_app` — `extok-rag serve`'s own start-up, from the
same `ServeOptions` — in its Ray actor: it opens the index, loads the models, starts its worker
(its own continuous batch), and reloads the index when `extok-rag index` commits, as the
single server does. Ray Serve's proxy sends each request to one replica; every response names
the replica that answered in an `X-Extok-Replica` header. Needs the `ray` extra (Ray Serve).
"""

from __future__ import annotations

import logging
import re
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from fastapi import FastAPI
from ray import serve
from ray.serve import Application

from extok_rag.errors import ExtokError
from extok_rag.indexes import IndexSnapshot, resolve_index_dir
from extok_rag.models.defaults import resolve_llm
from extok_rag.serve import ServeOptions, build_app

APP_NAME = "extok-rag"
REPLICA_HEADER = "x-extok-replica"
Facts = Callable[[Path, IndexSnapshot], dict]

_log = logging.getLogger("extok_rag.serve")


def manifest_facts(index_dir: Path, snapshot: IndexSnapshot) -> dict:
    """/info's index facts when the caller gives none: the folder and its committed manifest
    (the CLI passes `extok-rag info --json`'s)."""
    return {"index": str(index_dir), **snapshot.manifest.to_dict()}


def deployment_options(options: ServeOptions, replicas: int, **serve_options: Any) -> dict:
    """Ray Serve's options for the deployment: `replicas` replicas, each sent at most as many
    requests as its batch and queue hold (more wait in Ray's router). `serve_options` (any
    `serve.deployment` option) override these."""
    if replicas < 1:
        raise ValueError(f"replicas must be at least 1, not {replicas}")
    defaults = {
        "name": APP_NAME,
        "num_replicas": replicas,
        "max_ongoing_requests": options.max_batch + options.max_queue,
    }
    return defaults | serve_options


class ReplicaHeader:
    """ASGI middleware: every HTTP response carries `X-Extok-Replica: <replica id>`."""

    def __init__(self, app, replica: str):
        self.app, self.replica = app, replica.encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def tagged(message):
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", ()), (REPLICA_HEADER.encode(), self.replica)]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, tagged)


def replica_app(options: ServeOptions, facts: Facts) -> FastAPI:
    """One replica's app, built in its Ray actor: `extok-rag serve`'s own (`build_app`) over
    its own models, index and worker, each response tagged with the replica's id."""
    app, _ = build_app(options, facts, notice=_log.warning)
    replica = serve.get_replica_context().replica_id.unique_id
    app.add_middleware(ReplicaHeader, replica=replica)
    return app


def deployment(
    index: str | Path | ServeOptions | None,
    replicas: int = 2,
    facts: Facts = manifest_facts,
    **serve_options: Any,
) -> Application:
    """The app as a Ray Serve Application of `replicas` replicas. `index`: a folder or name
    (the served defaults), or `ServeOptions` (models, limits, API key: `serve`'s options);
    `serve_options`: any `serve.deployment` option (`ray_actor_options={"num_gpus": 1}`)."""
    plain = not isinstance(index, ServeOptions)
    options = ServeOptions(resolve_index_dir(index)) if plain else index
    settings = deployment_options(options, replicas, **serve_options)

    def build() -> FastAPI:  # a function: Ray Serve calls it in each replica, at its start
        return replica_app(options, facts)

    return serve.deployment(serve.ingress(build)(), **settings).bind()


def run(
    options: ServeOptions,
    replicas: int,
    host: str,
    port: int,
    facts: Facts = manifest_facts,
    ready: Callable[[], None] = lambda: None,
    log_level: str = "info",
    **serve_options: Any,
) -> None:
    """Serve until stopped (Ctrl-C, SIGTERM): Ray (the cluster of $RAY_ADDRESS or of a
    `ray start` on this machine, else a local instance), Serve's proxy on host:port logging at
    `log_level`, the deployment at "/"; `ready` is called once every replica is up. The app
    and a local instance are stopped at the end."""
    resolve_llm(options.llm)  # a missing --llm fails here; the default LLM is converted once
    with warnings.catch_warnings():  # Ray's daemons exec at once: LanceDB's fork caution
        warnings.filterwarnings("ignore", "lancedb fork support", RuntimeWarning)
        ray.init(log_to_driver=True, logging_level=logging.WARNING)
    try:
        logs = {"log_level": log_level.upper()}
        serve.start(http_options={"host": host, "port": port}, logging_config=logs)
        deploy(deployment(options, replicas, facts, **serve_options))
        ready()
        wait_for_stop()
    finally:
        serve.delete(APP_NAME)
        ray.shutdown()


def deploy(app: Application, name: str = APP_NAME, route_prefix: str = "/") -> None:
    """`serve.run`, and replicas that cannot start (Ray Serve retries each a few times) as
    one ExtokError naming their error."""
    try:
        serve.run(app, name=name, route_prefix=route_prefix)
    except RuntimeError as exc:
        raise ExtokError(f"the Ray Serve replicas did not start: {replica_error(name)}") from exc


def replica_error(name: str) -> str:
    """The last line of the replicas' start-up traceback, as Ray Serve's status holds it."""
    status = serve.status().applications.get(name)
    messages = [d.message for d in status.deployments.values()] if status else []
    lines = [line.strip() for m in messages for line in m.strip().splitlines()]
    if not lines:
        return "see the Ray logs above"
    return re.sub(r"^(?:\w+\.)+(\w+: )", r"\1", lines[-1])  # the exception without its module


def wait_for_stop() -> None:
    """Block until Ctrl-C, or SIGTERM (which `ray.init`'s handler turns into SystemExit)."""
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
