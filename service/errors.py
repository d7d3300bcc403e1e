"""Domain errors to HTTP, in one place. Every error body is JSON {"detail": ...}."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

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
    return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    # FastAPI's default echoes the offending input back, which can be NaN (not valid JSON) and
    # repeats payloads; location and message say what is wrong without either.
    assert isinstance(exc, RequestValidationError)
    detail = [{"loc": list(error["loc"]), "msg": error["msg"], "type": error["type"]} for error in exc.errors()]
    return JSONResponse({"detail": detail}, status_code=422)


async def _database_error(_request: Request, exc: Exception) -> JSONResponse:
    # The class name says what failed; the message could carry connection details.
    return JSONResponse({"detail": f"database unavailable: {type(exc).__name__}"}, status_code=503)


def register_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(SQLAlchemyError, _database_error)
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(CheckpointError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
