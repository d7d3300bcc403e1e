from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from service.deps import EngineDep, SettingsDep, resolve_served
from service.schemas import Health, Readiness
from training.errors import ModelUnavailable, NotFound

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
async def health() -> Health:
    """The process is up and answering."""
    return Health(status="ok")


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(request: Request) -> PlainTextResponse:
    """Prometheus metrics: requests by route and status, latencies, batch sizes, queue depth,
    model load times, and training jobs by status."""
    registry = request.app.state.metrics.registry
    return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/ready", response_model=Readiness, responses={503: {"description": "Not ready; detail says why."}})
async def ready(engine: EngineDep, settings: SettingsDep) -> Readiness | JSONResponse:
    """200 once the database answers and the default model is loaded; 503 with the reason before."""
    try:
        await run_in_threadpool(engine.check_registry)
        served = await resolve_served(engine, settings, None, None)
        await engine.run(engine.load, served)
    except SQLAlchemyError as exc:
        return JSONResponse({"detail": f"database unavailable: {type(exc).__name__}"}, status_code=503)
    except NotFound:
        detail = f"default model {settings.default_model!r} has no version yet; its first training job may be running"
        return JSONResponse({"detail": detail}, status_code=503)
    except ModelUnavailable as exc:
        return JSONResponse({"detail": str(exc)}, status_code=503)
    return Readiness(status="ready", model=served.model, version=served.number)
