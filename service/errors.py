"""Errors to HTTP, in one place. Every error body is JSON {"type": ..., "detail": ...}: `type` is a
stable name from ERROR_KINDS for programs to branch on, `detail` says what went wrong for people."""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DisconnectionError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jepa_model import CheckpointError
from training.errors import (
    Conflict,
    DatasetCorrupt,
    DomainError,
    InvalidInput,
    ModelUnavailable,
    NotFound,
    Overloaded,
    StorageFull,
)
from training.store.db import is_storage_full


# Errors only a request can meet; training's own are in training.errors.
class UnsupportedMediaType(DomainError):
    """The body's media type is not one the route reads."""


class Unauthorized(DomainError):
    """A request that needs the API key came without it, or with a wrong one."""


@dataclass(frozen=True)
class ErrorKind:
    status: int
    type: str  # part of the API: renaming one breaks clients
    when: str  # for /openapi.json and docs/api.md


# Each status the service answers with has one type. The OpenAPI schema's `type` enum, the handlers
# below and docs/api.md's table all come from here.
ERROR_KINDS: tuple[ErrorKind, ...] = (
    ErrorKind(400, "bad_request", "The body cannot be parsed at all (a multipart upload without a boundary)."),
    ErrorKind(401, "unauthorized", "The API key is missing or wrong (only when JEPA_API_KEY is set)."),
    ErrorKind(404, "not_found", "No such model, version, alias, job, dataset or route."),
    ErrorKind(405, "method_not_allowed", "The route exists, but not for this method (the Allow header lists them)."),
    ErrorKind(
        409,
        "conflict",
        "The resource's state does not allow this (a finished job, a corrupt dataset), or a concurrent "
        "request changed the same record (retry).",
    ),
    ErrorKind(413, "payload_too_large", "The body is larger than JEPA_MAX_BODY_BYTES."),
    ErrorKind(415, "unsupported_media_type", "The body's media type is not one this route reads."),
    ErrorKind(
        422,
        "validation_error",
        "The request is malformed; the detail names the field and what is wrong (a list of "
        "{loc, msg, type} for fields checked against the schema).",
    ),
    ErrorKind(429, "overloaded", "Too much is already waiting; retry after the Retry-After header's seconds."),
    ErrorKind(500, "internal_error", "A bug: the server failed unexpectedly; its log has the details, the body none."),
    ErrorKind(
        503,
        "unavailable",
        "A checkpoint or the database is unavailable; from /ready, the service cannot serve yet.",
    ),
    ErrorKind(507, "insufficient_storage", "The server's disk has no room for what the request would store."),
)
KIND_BY_STATUS: dict[int, ErrorKind] = {kind.status: kind for kind in ERROR_KINDS}
ERROR_TYPES: tuple[str, ...] = tuple(kind.type for kind in ERROR_KINDS)

# Domain errors by status; the first class an exception is an instance of decides.
STATUS_BY_ERROR: list[tuple[type[Exception], int]] = [
    (Overloaded, 429),
    (Unauthorized, 401),
    (NotFound, 404),
    (InvalidInput, 422),
    (Conflict, 409),
    (DatasetCorrupt, 409),
    (UnsupportedMediaType, 415),
    (ModelUnavailable, 503),
    (CheckpointError, 503),
    (StorageFull, 507),
]

# Headers HTTP expects with these statuses, whoever answers with them.
HEADERS_BY_STATUS: dict[int, dict[str, str]] = {
    429: {"Retry-After": "1"},
    401: {"WWW-Authenticate": 'Bearer realm="jepa"'},
}

MAX_DETAIL_CHARS = 1000


def status_for(exc: Exception) -> int:
    for error_type, status in STATUS_BY_ERROR:
        if isinstance(exc, error_type):
            return status
    return 500


def type_for(status: int) -> str:
    # A status no row names (a library's own HTTPException) still gets a type: by its class, 4xx or 5xx.
    kind = KIND_BY_STATUS.get(status) or KIND_BY_STATUS[500 if status >= 500 else 400]
    return kind.type


def error_response(
    status: int, detail: str | list[dict[str, Any]], headers: dict[str, str] | None = None
) -> JSONResponse:
    """The one way an error body is built: its type follows from the status."""
    return JSONResponse(
        {"type": type_for(status), "detail": detail},
        status_code=status,
        headers={**HEADERS_BY_STATUS.get(status, {}), **(headers or {})},
    )


def database_unavailable(exc: Exception) -> JSONResponse:
    # The class name says what failed; the message could carry connection details.
    return error_response(503, f"database unavailable: {type(exc).__name__}")


def _bounded_loc(part: object) -> object:
    # A location can be a key the client made up (an unknown field named with 10 KB of text).
    return part[:64] + "…" if isinstance(part, str) and len(part) > 64 else part


def _bounded(detail: str) -> str:
    """A safety net under every message that quotes the request: never echo kilobytes back."""
    return detail if len(detail) <= MAX_DETAIL_CHARS else detail[:MAX_DETAIL_CHARS] + "…"


async def _domain_error(_request: Request, exc: Exception) -> JSONResponse:
    return error_response(status_for(exc), _bounded(str(exc)))


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    # FastAPI's default echoes the offending input back, which can be NaN (not valid JSON) and
    # repeats payloads; location and message say what is wrong without either.
    assert isinstance(exc, RequestValidationError)
    detail = [
        {"loc": [_bounded_loc(part) for part in error["loc"]], "msg": _bounded(error["msg"]), "type": error["type"]}
        for error in exc.errors()[:20]
    ]
    return error_response(422, detail)


async def _http_error(request: Request, exc: Exception) -> Response:
    # Starlette's and FastAPI's own: unknown routes, wrong methods, unparseable multipart bodies,
    # a streamed body past the limit.
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code < 400:  # 204 and 304 carry no body
        return await http_exception_handler(request, exc)
    return error_response(exc.status_code, _bounded(str(exc.detail)), headers=exc.headers)


async def _internal_error(_request: Request, _exc: Exception) -> JSONResponse:
    # Starlette's ServerErrorMiddleware still re-raises, so the server logs the traceback; the
    # caller learns nothing about the code (or the paths and values in the message).
    return error_response(500, "internal server error; the server's log has the details")


# Only a database that cannot be reached is "unavailable"; any other database error is a conflict
# (a concurrent change that outlasted its retries) or a bug, and must not pose as an outage.
UNREACHABLE = (OperationalError, InterfaceError, DisconnectionError, PoolTimeout)


async def _database_unreachable(_request: Request, exc: Exception) -> JSONResponse:
    if is_storage_full(exc):  # reached, but out of room: no retry will help until space is freed
        return error_response(
            507, "the server's disk has no room left for the database to record this; nothing was stored"
        )
    return database_unavailable(exc)


async def _concurrent_change(_request: Request, _exc: Exception) -> JSONResponse:
    return error_response(409, "a concurrent request changed the same record; retry")


def _too_large_detail(max_body_size: int | None) -> str:
    limit = "" if max_body_size is None else f" ({max_body_size} bytes)"
    return f"the body is larger than JEPA_MAX_BODY_BYTES{limit}"


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:  # a status code HTTP does not name
        return "error"


class TypedErrorBodies:
    """Outermost ASGI layer: gives a typed JSON body to the error responses that no exception
    handler builds. Starlette's body limit is one: past the limit it answers plain-text 413 from
    outside every handler and user middleware (a Content-Length over the limit replaces whatever
    the app answered). So every 413 is rebuilt here, and so is any other error without a JSON body.
    """

    def __init__(self, app: ASGIApp, max_body_size: int | None) -> None:
        self.app, self.max_body_size = app, max_body_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: Message | None = None  # the start of a response being replaced

        async def send_typed(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start" and self._untyped(message):
                held = message
                return
            if held is not None:
                if message["type"] == "http.response.body" and not message.get("more_body", False):
                    await self._send_replacement(held, send)
                    held = None
                return  # the original body: small text, dropped
            await send(message)

        await self.app(scope, receive, send_typed)

    @staticmethod
    def _untyped(start: Message) -> bool:
        status = start["status"]
        if status < 400:
            return False
        content_type = dict(start.get("headers", [])).get(b"content-type", b"")
        return status == 413 or not content_type.startswith(b"application/json")

    async def _send_replacement(self, start: Message, send: Send) -> None:
        status = start["status"]
        detail = _too_large_detail(self.max_body_size) if status == 413 else _phrase(status)
        response = error_response(status, detail)
        replaced = {name for name, _ in response.raw_headers}  # content-type and -length among them
        kept = [(name, value) for name, value in start.get("headers", []) if name.lower() not in replaced]
        await send({"type": "http.response.start", "status": status, "headers": kept + response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})


def register_error_handlers(app: FastAPI) -> None:
    for error_type in UNREACHABLE:
        app.add_exception_handler(error_type, _database_unreachable)
    app.add_exception_handler(IntegrityError, _concurrent_change)
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(CheckpointError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
    # The body limit sits outside every middleware an app can add, so the layer that types its
    # answers wraps the whole stack, built when the first request arrives.
    build_stack = app.build_middleware_stack
    app.build_middleware_stack = lambda: TypedErrorBodies(build_stack(), app.max_body_size)  # type: ignore[method-assign]
