"""Probes and metrics: /health (the process answers), /ready (it can do its work), /metrics."""

import shutil
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from service.deps import EngineDep, ReadAuth, SettingsDep, resolve_served
from service.errors import database_unavailable, error_response
from service.schemas import ERROR_RESPONSES, ErrorBody, Health, Readiness
from service.settings import Settings
from training import lifecycle
from training.errors import ModelUnavailable, NotFound
from training.worker import Worker

router = APIRouter(tags=["health"])

# Below this much free space where the data directory lives, /ready says the disk is (nearly)
# full: checkpoints, uploads and SQLite's journal are about to fail.
MIN_FREE_BYTES = 32 * 1024 * 1024


@router.get("/health", response_model=Health)
async def health() -> Health:
    """The process is up and answering."""
    return Health(status="ok")


# Spelled out rather than {"model": ErrorBody}: FastAPI files a model under the route's own media
# type, text/plain here, while the 401 is JSON like every error.
JSON_401 = {
    "description": ERROR_RESPONSES[401]["description"],
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
}


# With JEPA_AUTH_READS, a read like any other: the scraper sends the key (Prometheus'
# `authorization` scrape setting). The probes above and below stay open for orchestrators.
@router.get("/metrics", response_class=PlainTextResponse, dependencies=[ReadAuth], responses={401: JSON_401})
def metrics(request: Request) -> PlainTextResponse:
    """Prometheus metrics: requests by route and status, latencies, batch sizes, queue depth,
    model load times, and training jobs by status."""
    return PlainTextResponse(request.app.state.metrics.scrape(), media_type=CONTENT_TYPE_LATEST)


def disk_problem(data_dir: Path) -> str | None:
    """Why the data directory's disk cannot take more writes, or None."""
    try:
        free = shutil.disk_usage(data_dir).free
    except OSError as exc:
        return f"the data directory cannot be checked ({exc.strerror})"
    if free < MIN_FREE_BYTES:
        mib = free // 1024**2
        return f"the data directory's disk is full or nearly so ({mib} MiB free); training and uploads will fail"
    return None


def no_default_version(request: Request, settings: Settings) -> str:
    """Why the default model has nothing to serve: a job is training it, or nothing will."""
    model = settings.default_model
    try:
        with request.app.state.session_factory() as session:
            training = lifecycle.jobs_training(session, model)
    except SQLAlchemyError:
        training = []
    if training:
        return f"default model {model!r} has no version yet; job {training[0]}, queued or running, trains it"
    return (
        f"default model {model!r} has no version, and no job is queued to train one: train one "
        f"(POST /train with model {model!r}), or set JEPA_DEFAULT_MODEL to a model that has a version"
    )


@router.get(
    "/ready",
    response_model=Readiness,
    responses={503: {"model": ErrorBody, "description": "Not ready; detail says why."}},
)
async def ready(request: Request, engine: EngineDep, settings: SettingsDep) -> Readiness | JSONResponse:
    """200 once the database answers, the embedded worker (if any) runs, the data directory's
    disk has room and the default model is loaded; 503 with the reason before."""
    worker: Worker | None = getattr(request.app.state, "worker", None)
    try:
        await run_in_threadpool(engine.check_registry)
        if worker is not None and (problem := worker.problem()) is not None:
            return error_response(503, problem)
        if (problem := await run_in_threadpool(disk_problem, settings.data_dir)) is not None:
            return error_response(503, problem)
        served = await resolve_served(engine, settings, None, None)
        await engine.run(engine.load, served)
    except SQLAlchemyError as exc:
        return database_unavailable(exc)
    except NotFound:
        return error_response(503, await run_in_threadpool(no_default_version, request, settings))
    except ModelUnavailable as exc:
        return error_response(503, str(exc))
    return Readiness(status="ready", model=served.model, version=served.number)
