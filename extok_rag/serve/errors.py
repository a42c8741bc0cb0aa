"""Errors as JSON: the package's one exception family mapped to HTTP statuses, request
validation to 422, anything else to a 500 whose traceback stays in the server log.

Every error body is `{"error": {"message", "type", "code"}}`, the shape OpenAI clients parse.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from extok_rag.errors import (
    ExtokError,
    IncompatibleModelError,
    IndexStoreError,
    InputTooLongError,
    ModelNotFoundError,
)
from extok_rag.serve.worker import QueueFullError, ShuttingDownError

_log = logging.getLogger("extok_rag.serve")


class RequestLimitError(ExtokError):
    """A request over one of the server's limits (question length, top_n, max_new_tokens)."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


class UnknownModelError(ExtokError):
    """A chat request for a model this server does not serve (OpenAI answers 404)."""


# Most specific first; an ExtokError raised on a request is the request's fault unless listed.
STATUSES: list[tuple[type[ExtokError], int, str]] = [
    (QueueFullError, 503, "server_busy"),
    (ShuttingDownError, 503, "shutting_down"),
    (InputTooLongError, 400, "input_too_long"),
    (UnknownModelError, 404, "model_not_found"),
    (IncompatibleModelError, 503, "index_unavailable"),
    (IndexStoreError, 503, "index_unavailable"),
    (ModelNotFoundError, 500, "model_unavailable"),
    (ExtokError, 400, "invalid_request"),
]


def error_body(message: str, kind: str, status: int) -> dict:
    return {"error": {"message": message, "type": kind, "code": status}}


def describe(exc: BaseException) -> tuple[int, dict]:
    """(status, JSON body) for any exception a request raised."""
    if isinstance(exc, RequestLimitError):
        return exc.status, error_body(str(exc), "limit_exceeded", exc.status)
    for family, status, kind in STATUSES:
        if isinstance(exc, family):
            return status, error_body(str(exc), kind, status)
    _log.error("internal error", exc_info=exc)
    return 500, error_body("internal error (the server log has the details)", "internal_error", 500)


def json_error(exc: BaseException) -> JSONResponse:
    status, body = describe(exc)
    headers = {"Retry-After": "1"} if isinstance(exc, QueueFullError) else None
    return JSONResponse(body, status_code=status, headers=headers)


def validation_message(exc: RequestValidationError) -> str:
    """One line per bad field: 'body.mode: Input should be ...'."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_handlers(app: FastAPI) -> None:
    """Route every error through `describe`: no traceback ever reaches a client."""

    @app.exception_handler(RequestValidationError)
    async def on_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            error_body(validation_message(exc), "invalid_request", 422), status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def on_http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not_found", 413: "limit_exceeded"}.get(exc.status_code, "http_error")
        return JSONResponse(
            error_body(str(exc.detail), kind, exc.status_code),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(ExtokError)
    async def on_extok(_: Request, exc: ExtokError) -> JSONResponse:
        return json_error(exc)

    @app.exception_handler(Exception)
    async def on_other(_: Request, exc: Exception) -> JSONResponse:
        return json_error(exc)
