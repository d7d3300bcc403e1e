from typing import Literal

from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from service.deps import SessionDep, SessionFactoryDep, WriteAuth
from service.schemas import EpochOut, JobLogs, JobMetrics, JobOut, LogLine
from training import lifecycle
from training.execution import job_logs, jobs
from training.store.db import in_transaction
from training.store.models import MAX_INTEGER_ID, JobRow

router = APIRouter(tags=["training"])


def job_out(job: JobRow) -> JobOut:
    return JobOut(
        id=job.id,
        status=job.status,
        spec=job.spec,
        progress=job.progress,
        model=job.model_name,
        version=job.version.number if job.version else None,
        metrics=job.version.metrics if job.version else None,
        error=job.error,
        worker=job.worker,
        attempts=job.attempts,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


@router.get("/jobs", response_model=list[JobOut])
def list_jobs(
    session: SessionDep,
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"] | None = None,
    limit: int = Query(100, ge=1, le=1000),
) -> list[JobOut]:
    """Jobs, newest first."""
    return [job_out(job) for job in jobs.list_jobs(session, status, limit)]


@router.get("/jobs/{job_id}", response_model=JobOut)
def get_job(job_id: str, session: SessionDep) -> JobOut:
    return job_out(jobs.get_job(session, job_id))


@router.post("/jobs/{job_id}/cancel", response_model=JobOut, dependencies=[WriteAuth])
async def cancel_job(job_id: str, factory: SessionFactoryDep) -> JobOut:
    """Cancel a queued or running job. A running job stops within a few seconds and registers
    nothing; a finished one answers 409."""
    job = await run_in_threadpool(jobs.cancel, factory, job_id)
    with factory() as session:
        return job_out(jobs.get_job(session, job.id))


@router.get("/jobs/{job_id}/metrics", response_model=JobMetrics)
def job_metrics(job_id: str, session: SessionDep) -> JobMetrics:
    """The per-epoch history of the job's latest attempt: loss and the collapse alarms."""
    job = jobs.get_job(session, job_id)
    epochs = jobs.epoch_history(session, job_id)
    return JobMetrics(
        job_id=job.id,
        attempt=job.attempts,
        epochs=[EpochOut(epoch=e.epoch, loss=e.loss, metrics=e.metrics, seconds=e.seconds) for e in epochs],
    )


@router.get("/jobs/{job_id}/logs", response_model=JobLogs)
def get_job_logs(
    job_id: str,
    session: SessionDep,
    since: int = Query(
        0, ge=0, le=MAX_INTEGER_ID, description="Only lines after this id (the previous page's `next_since`)."
    ),
    limit: int = Query(1000, ge=1, le=5000),
) -> JobLogs:
    """The log lines of the job's training processes, every attempt, oldest first: epochs,
    held-out metrics, registration, and the traceback of a failure."""
    jobs.get_job(session, job_id)  # 404 for a job that does not exist
    rows = job_logs.read_logs(session, job_id, since, limit)
    lines = [LogLine.model_validate(row, from_attributes=True) for row in rows]
    return JobLogs(job_id=job_id, lines=lines, next_since=lines[-1].id if lines else since)


@router.delete("/jobs/{job_id}", status_code=204, dependencies=[WriteAuth])
def delete_job(job_id: str, factory: SessionFactoryDep) -> Response:
    """Delete a finished job and its epoch history; the version it made stays. 409 while it is
    queued or running."""
    in_transaction(factory, lambda s: lifecycle.delete_job(s, job_id))
    return Response(status_code=204)
