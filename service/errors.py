"""Domain errors to HTTP, in one place. Every error body is JSON {"detail": ...}."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DisconnectionError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

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
    Unauthorized,
    UnsupportedMediaType,
)

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


def status_for(exc: Exception) -> int:
    for error_type, status in STATUS_BY_ERROR:
        if isinstance(exc, error_type):
            return status
    return 500


async def _domain_error(_request: Request, exc: Exception) -> JSONResponse:
    status = status_for(exc)
    headers = {429: {"Retry-After": "1"}, 401: {"WWW-Authenticate": 'Bearer realm="jepa"'}}.get(status)
    return JSONResponse({"detail": _bounded(str(exc))}, status_code=status, headers=headers)


MAX_DETAIL_CHARS = 1000


def _bounded_loc(part: object) -> object:
    # A location can be a key the client made up (an unknown field named with 10 KB of text).
    return part[:64] + "…" if isinstance(part, str) and len(part) > 64 else part


def _bounded(detail: str) -> str:
    """A safety net under every message that quotes the request: never echo kilobytes back."""
    return detail if len(detail) <= MAX_DETAIL_CHARS else detail[:MAX_DETAIL_CHARS] + "…"


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    # FastAPI's default echoes the offending input back, which can be NaN (not valid JSON) and
    # repeats payloads; location and message say what is wrong without either.
    assert isinstance(exc, RequestValidationError)
    detail = [
        {"loc": [_bounded_loc(part) for part in error["loc"]], "msg": _bounded(error["msg"]), "type": error["type"]}
        for error in exc.errors()[:20]
    ]
    return JSONResponse({"detail": detail}, status_code=422)


# Only a database that cannot be reached is "unavailable"; any other database error is a conflict
# (a concurrent change that outlasted its retries) or a bug, and must not pose as an outage.
UNREACHABLE = (OperationalError, InterfaceError, DisconnectionError, PoolTimeout)


async def _database_unreachable(_request: Request, exc: Exception) -> JSONResponse:
    # The class name says what failed; the message could carry connection details.
    return JSONResponse({"detail": f"database unavailable: {type(exc).__name__}"}, status_code=503)


async def _concurrent_change(_request: Request, _exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": "a concurrent request changed the same record; retry"}, status_code=409)


def register_error_handlers(app: FastAPI) -> None:
    for error_type in UNREACHABLE:
        app.add_exception_handler(error_type, _database_unreachable)
    app.add_exception_handler(IntegrityError, _concurrent_change)
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(CheckpointError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
