"""The FastAPI application. The lifespan owns the database engine, the inference engine, stale-job
recovery and the embedded worker: it starts them in order and stops them in reverse."""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from jepa_model import __version__
from service.deps import Inference, ReadAuth, request_limits
from service.engine import InferenceEngine
from service.errors import register_error_handlers
from service.fast_routes import InferenceFastPath
from service.middleware import RequestMiddleware
from service.observability import Metrics
from service.processes import WorkerLease, group_dir
from service.routes import dashboard, datasets, encode, health, info, jobs, models, predict, score, similarity, train
from service.schemas import ERROR_RESPONSES
from service.settings import Settings, get_settings
from training.execution import jobs as job_queue
from training.execution.spec import ToyDataset, TrainingSpec, TrainOptions
from training.logs import flush_background_logs
from training.store.artifacts import open_store
from training.store.db import SessionFactory, create_db_engine, create_session_factory, in_transaction
from training.store.migrate import upgrade_to_head
from training.worker import StaleRecovery, Worker

log = logging.getLogger("jepa.app")


def _count_jobs(factory: SessionFactory) -> dict[str, int]:
    with factory() as session:
        return job_queue.count_by_status(session)


def queue_default_model(factory: SessionFactory, settings: Settings) -> None:
    """First start: train the default model on mixed toy data, as an ordinary job, checked as
    POST /train checks one (a toy length within JEPA_MAX_SEQ_LEN, a config the executor runs)."""
    seq_len = min(ToyDataset.model_fields["seq_len"].default, settings.max_seq_len)
    spec = TrainingSpec(
        model=settings.default_model,
        dataset=ToyDataset(pattern="mixed", num_samples=settings.bootstrap_num_samples, seq_len=seq_len),
        config=TrainOptions(epochs=settings.bootstrap_epochs),
    )
    job = in_transaction(
        factory,
        lambda s: job_queue.enqueue_unless_served(s, spec, executor=settings.executor, max_len=settings.max_seq_len),
    )
    if job is not None:
        log.info("no version of %r yet: queued training job %s", settings.default_model, job.id)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log.info("database %s, data dir %s", settings.safe_database_url, settings.data_dir.resolve())
    if settings.api_key is None:
        log.warning(
            "JEPA_API_KEY is not set (or blank): anyone who can reach this service can train, upload and promote"
        )
    await run_in_threadpool(upgrade_to_head, settings.resolved_database_url)
    db_engine = create_db_engine(settings.resolved_database_url)
    factory = create_session_factory(db_engine)
    store = open_store(settings.artifact_store, settings.data_dir)
    engine = InferenceEngine.from_settings(
        factory,
        store,
        settings,
        on_batch=app.state.metrics.batch_size.observe,
        on_load=app.state.metrics.model_load.observe,
    )
    app.state.metrics.watch_queue(lambda: engine.batcher.depth)
    app.state.metrics.watch_jobs(lambda: _count_jobs(factory))
    engine.start()
    app.state.session_factory, app.state.engine, app.state.store = factory, engine, store
    app.state.inference = Inference(engine, settings, app.state.limits)
    if settings.bootstrap:
        await run_in_threadpool(queue_default_model, factory, settings)
    # Stale-job recovery runs here whether or not this process trains, so jobs whose worker died
    # are re-queued (or failed) even when no worker is left; the embedded worker relies on it.
    recovery = StaleRecovery(settings, factory)
    recovery_thread = recovery.start_thread()
    worker = (
        Worker(settings, factory, poll_s=settings.worker_poll_s, recover=False) if settings.embedded_worker else None
    )
    # One of several API processes runs it only while it holds the group's lease (service.processes).
    lease = WorkerLease(group, worker) if worker and (group := group_dir()) is not None else None
    worker_thread = (lease.start() if lease else worker.start_thread()) if worker else None
    app.state.worker = worker  # /ready reports a worker that died or keeps failing
    # Everything built so far (torch, SQLAlchemy, the app) lives as long as the process: moving
    # it out of the collector's reach keeps full collections short, which under load halved the
    # time per JSON request and removed its worst pauses (README, "Serving speed").
    gc.freeze()
    # The inference thread gives up the GIL around each forward pass and must win it back from
    # the event loop: at Python's default 5 ms switch interval it waits up to that long each
    # time. 0.2 ms lifted JSON throughput 1.9x and binary 1.4x on 2 cores (README).
    sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)
    try:
        yield
    finally:
        if worker and worker_thread:
            (lease or worker).stop()
            await run_in_threadpool(worker_thread.join, 30)
        recovery.stop()
        await run_in_threadpool(recovery_thread.join, 5)
        await engine.aclose()
        app.state.metrics.close()
        db_engine.dispose()
        flush_background_logs()  # the access log's last lines: the process may end without atexit


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="JEPA service",
        version=__version__,
        description="Train and serve JEPA encoders for sequences: embeddings, predicted future "
        "representations and similarities.",
        lifespan=lifespan,
        # Past this, 413 before the body is read whole: at once when Content-Length says so,
        # else as soon as the streamed bytes pass it.
        max_body_size=settings.max_body_bytes,
        # /docs and /redoc come from service.docs_assets, which serves their assets itself (offline),
        # and so does /openapi.json: all three need the key with JEPA_AUTH_READS, like any read.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    # --- offline API docs (service/docs_assets.py) ---
    from service.docs_assets import mount_offline_docs

    mount_offline_docs(app)
    # --- end offline API docs ---
    app.state.settings = settings
    app.state.worker = None  # the embedded worker, once the lifespan has started one
    app.state.limits = request_limits(settings)
    app.state.metrics = Metrics()
    app.add_middleware(InferenceFastPath, fastapi=app)  # inside RequestMiddleware: ids and metrics cover it
    app.add_middleware(RequestMiddleware, metrics=app.state.metrics)
    register_error_handlers(app)
    app.include_router(health.router)  # open, for load balancers, orchestrators and Prometheus
    app.include_router(dashboard.router)  # the page is public; the data it fetches is not
    for module in (info, encode, predict, score, similarity, train, jobs, models, datasets):
        app.include_router(module.router, dependencies=[ReadAuth], responses=ERROR_RESPONSES)
    return app
