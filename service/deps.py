"""Annotated dependencies: what a route needs, taken from the app state the lifespan built."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy.orm import Session

from service.engine import InferenceEngine, Sequences, ServedVersion
from service.errors import Unauthorized, UnsupportedMediaType
from service.idempotency import KEY_PATTERN
from service.json_arrays import MIN_BODY_BYTES, parse_inference_json
from service.payloads import (
    NPY,
    Options,
    RequestLimits,
    check_fast,
    check_json_values,
    decode_fields,
    npy_sequences,
    off_loop_if_large,
    parse_json,
    sends_npy,
    take_field,
    validate_options,
)
from service.settings import Settings
from training.errors import InvalidInput
from training.store.artifacts import ArtifactStore
from training.store.db import SessionFactory
from training.store.registry import VersionRef


# `async def`, though they never await: FastAPI runs plain `def` dependencies in its threadpool,
# and two thread hops per request cost more than the model on small requests.
async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_engine(request: Request) -> InferenceEngine:
    return request.app.state.engine


async def get_session_factory(request: Request) -> SessionFactory:
    return request.app.state.session_factory


async def get_store(request: Request) -> ArtifactStore:
    return request.app.state.store


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.session_factory() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_idempotency_key(
    request: Request,
    key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            pattern=KEY_PATTERN,
            description="Any string of up to 255 visible ASCII characters, new for each new request. A retry "
            "with the same key and request gets the first answer again (with `Idempotent-Replayed: true`) "
            "instead of acting twice; the same key with a different request gets 409. Keys are kept for "
            "JEPA_IDEMPOTENCY_TTL_S. Send it once: two are refused (422).",
        ),
    ] = None,
) -> str | None:
    """The request's Idempotency-Key. Two of them are refused: the header would read the first
    and silently drop the other, and a retry that sent them in another order would act twice."""
    count = len(request.headers.getlist("idempotency-key"))
    if count > 1:
        raise InvalidInput(f"send one Idempotency-Key header, got {count}")
    return key


IdempotencyKey = Annotated[str | None, Depends(get_idempotency_key)]


def request_limits(settings: Settings) -> RequestLimits:
    return RequestLimits(
        max_batch=settings.max_batch,
        max_seq_len=settings.max_seq_len,
        max_points=settings.max_request_points,
        max_similarity_pairs=settings.max_similarity_pairs,
    )


async def get_limits(request: Request) -> RequestLimits:
    return request.app.state.limits


LimitsDep = Annotated[RequestLimits, Depends(get_limits)]


@dataclass(frozen=True)
class Inference:
    """What an inference route needs, put together once by the lifespan: one dependency to
    resolve per request instead of three, on the routes where framework overhead shows most."""

    engine: InferenceEngine
    settings: Settings
    limits: RequestLimits


async def get_inference(request: Request) -> Inference:
    return request.app.state.inference


InferenceDep = Annotated[Inference, Depends(get_inference)]
EngineDep = Annotated[InferenceEngine, Depends(get_engine)]
SessionDep = Annotated[Session, Depends(get_session)]
SessionFactoryDep = Annotated[SessionFactory, Depends(get_session_factory)]
StoreDep = Annotated[ArtifactStore, Depends(get_store)]


async def resolve_served(
    engine: InferenceEngine, settings: Settings, model: str | None, version: VersionRef
) -> ServedVersion:
    """The version a request names, with the service's defaults filled in."""
    return await engine.resolve_async(model or settings.default_model, version, settings.default_alias)


async def read_inference(
    request: Request, options_model: type[Options], fields: dict[str, bool], inference: Inference, npy: bool = True
) -> tuple[Options, ServedVersion, dict[str, Sequences | None]]:
    """An inference request's options, the version it names, and its sequence fields as arrays.

    `fields` maps each field to whether it is required. A JSON body carries them all; with
    `npy`, an `application/x-npy` body is the first field and the options come from the query
    string. Large bodies are decoded off the event loop.
    """
    engine, settings, limits = inference.engine, inference.settings, inference.limits
    first = next(iter(fields))
    if sends_npy(request):
        if not npy:
            raise UnsupportedMediaType(f"{request.url.path} reads application/json only, not {NPY}")
        body = await request.body()
        options = validate_options(options_model, dict(request.query_params), strict=False)
        served = await resolve_served(engine, settings, options.model, options.version)  # type: ignore[attr-defined]
        array = await off_loop_if_large(body, npy_sequences, body, served, limits, first)
        return options, served, {first: array} | {name: None for name in fields if name != first}
    body = await request.body()
    check_json_values(body, limits.max_json_values)
    parsed = None
    if len(body) >= MIN_BODY_BYTES:
        parsed = await off_loop_if_large(body, parse_inference_json, body, frozenset(fields))
    if parsed is not None and all(name in parsed[1] for name, required in fields.items() if required):
        data, arrays = parsed
        options = validate_options(options_model, data)
        served = await resolve_served(engine, settings, options.model, options.version)  # type: ignore[attr-defined]
        if (checked := check_fast(arrays, fields, served, limits)) is not None:
            return options, served, checked
    # The exact path: slower, and says precisely what is wrong with a body the fast one refused.
    data = await off_loop_if_large(body, parse_json, body, limits.max_json_values)
    raw = {name: take_field(data, name, required) for name, required in fields.items()}
    options = validate_options(options_model, data)
    served = await resolve_served(engine, settings, options.model, options.version)  # type: ignore[attr-defined]
    return options, served, await off_loop_if_large(body, decode_fields, raw, served, limits)


# Declared as a security scheme, so /docs offers an "Authorize" button.
bearer = HTTPBearer(auto_error=False, description="The service's JEPA_API_KEY, when it has one.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def _check_key(settings: Settings, token: str | None) -> None:
    if settings.api_key is None:
        return
    # compare_digest takes as long whatever the key's first wrong character, so response times
    # reveal nothing about it.
    if not secrets.compare_digest((token or "").encode(), settings.api_key.get_secret_value().encode()):
        raise Unauthorized("this needs the API key: send Authorization: Bearer <JEPA_API_KEY>")


def _token(credentials: HTTPAuthorizationCredentials | None) -> str | None:
    return credentials.credentials if credentials is not None else None


async def require_write_key(request: Request, credentials: Credentials) -> None:
    """Everything that changes state needs the key, when the service has one."""
    _check_key(request.app.state.settings, _token(credentials))


async def require_read_key(request: Request, credentials: Credentials) -> None:
    """Reads need it too with JEPA_AUTH_READS=1."""
    settings: Settings = request.app.state.settings
    if settings.auth_reads:
        _check_key(settings, _token(credentials))


def check_read_key(settings: Settings, authorization: str | None) -> None:
    """require_read_key for a raw Authorization header, read as HTTPBearer reads it (for the
    routes that service.fast_routes serves without dependency injection)."""
    if settings.auth_reads:
        scheme, token = get_authorization_scheme_param(authorization)
        _check_key(settings, token if scheme.lower() == "bearer" else None)


WriteAuth = Depends(require_write_key)
ReadAuth = Depends(require_read_key)
