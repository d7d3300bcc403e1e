"""The job queue in the database: enqueue, claim, heartbeat, finish, and recover stale jobs.

Every state change is a compare-and-set on `status`, so two workers can never both claim or
finish the same job, on SQLite or PostgreSQL.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, selectinload

from training.db import SessionFactory, in_transaction
from training.errors import JobNotFound
from training.models import JobRow, JobStatus, VersionRow, utcnow
from training.registry import has_versions
from training.spec import TrainingSpec


def worker_id(role: str = "worker") -> str:
    return f"{role}:{socket.gethostname()}:{os.getpid()}"


def enqueue(session: Session, spec: TrainingSpec) -> JobRow:
    epochs = spec.configs()[1].epochs
    job = JobRow(
        id=uuid.uuid4().hex,
        model_name=spec.model,
        status=JobStatus.QUEUED,
        spec=spec.model_dump(mode="json"),
        progress={"epoch": 0, "epochs": epochs, "loss": None},
    )
    session.add(job)
    session.flush()
    return job


def enqueue_unless_served(session: Session, spec: TrainingSpec) -> JobRow | None:
    """Queue `spec` only if its model has no version and no job on the way (first start)."""
    if has_versions(session, spec.model) or has_active_job(session, spec.model):
        return None
    return enqueue(session, spec)


def get_job(session: Session, job_id: str) -> JobRow:
    job = session.scalar(
        select(JobRow).options(selectinload(JobRow.version).selectinload(VersionRow.model)).where(JobRow.id == job_id)
    )
    if job is None:
        raise JobNotFound(f"job {job_id!r} not found")
    return job


def list_jobs(session: Session, status: str | None = None, limit: int = 100) -> list[JobRow]:
    query = select(JobRow).options(selectinload(JobRow.version).selectinload(VersionRow.model))
    if status is not None:
        query = query.where(JobRow.status == status)
    return list(session.scalars(query.order_by(JobRow.created_at.desc()).limit(limit)))


def has_active_job(session: Session, model_name: str) -> bool:
    query = select(JobRow.id).where(JobRow.model_name == model_name, JobRow.status.in_(JobStatus.ACTIVE))
    return session.scalar(query.limit(1)) is not None


def _try_claim(session: Session, job_id: str, worker: str) -> bool:
    now = utcnow()
    result = session.execute(
        update(JobRow)
        .where(JobRow.id == job_id, JobRow.status == JobStatus.QUEUED)
        .values(
            status=JobStatus.RUNNING,
            worker=worker,
            attempts=JobRow.attempts + 1,
            started_at=now,
            heartbeat_at=now,
            error=None,
        )
    )
    return result.rowcount == 1


def claim_next(factory: SessionFactory, worker: str) -> str | None:
    """Claim the oldest queued job for `worker`; returns its id, or None when the queue is empty."""

    def claim(session: Session) -> str | None:
        # SKIP LOCKED lets PostgreSQL workers pass over rows another worker is claiming; SQLite
        # ignores it and serialises writers, and the status check in the UPDATE decides either way.
        candidates = session.scalars(
            select(JobRow.id)
            .where(JobRow.status == JobStatus.QUEUED)
            .order_by(JobRow.created_at)
            .limit(1)
            .with_for_update(skip_locked=True)
        ).all()
        for job_id in candidates:
            if _try_claim(session, job_id, worker):
                return job_id
        return None

    return in_transaction(factory, claim)


def claim(factory: SessionFactory, job_id: str, worker: str) -> bool:
    """Claim one specific queued job (the CLI runs the job it just created)."""
    return in_transaction(factory, lambda s: _try_claim(s, job_id, worker))


def heartbeat(factory: SessionFactory, job_id: str, progress: dict[str, Any] | None = None) -> None:
    values: dict[str, Any] = {"heartbeat_at": utcnow()}
    if progress is not None:
        values["progress"] = progress
    in_transaction(
        factory,
        lambda s: s.execute(
            update(JobRow).where(JobRow.id == job_id, JobRow.status == JobStatus.RUNNING).values(**values)
        ),
    )


def mark_succeeded(session: Session, job_id: str, progress: dict[str, Any]) -> bool:
    result = session.execute(
        update(JobRow)
        .where(JobRow.id == job_id, JobRow.status == JobStatus.RUNNING)
        .values(status=JobStatus.SUCCEEDED, progress=progress, finished_at=utcnow(), error=None)
    )
    return result.rowcount == 1


def mark_failed(factory: SessionFactory, job_id: str, error: str) -> bool:
    def fail(session: Session) -> bool:
        result = session.execute(
            update(JobRow)
            .where(JobRow.id == job_id, JobRow.status.in_(JobStatus.ACTIVE))
            .values(status=JobStatus.FAILED, error=error[:4000], finished_at=utcnow())
        )
        return result.rowcount == 1

    return in_transaction(factory, fail)


def requeue(factory: SessionFactory, job_id: str, reason: str) -> bool:
    """Put a running job back in the queue, e.g. when its worker shuts down mid-run."""

    def put_back(session: Session) -> bool:
        result = session.execute(
            update(JobRow)
            .where(JobRow.id == job_id, JobRow.status == JobStatus.RUNNING)
            .values(status=JobStatus.QUEUED, worker=None, error=reason, heartbeat_at=None)
        )
        return result.rowcount == 1

    return in_transaction(factory, put_back)


def recover_stale(factory: SessionFactory, stale_s: float, max_attempts: int) -> list[str]:
    """Re-queue running jobs whose worker stopped heartbeating; fail those out of attempts.

    Returns the ids it touched. A worker killed mid-job therefore never leaves it `running`.
    """
    cutoff = utcnow() - timedelta(seconds=stale_s)

    def recover(session: Session) -> list[str]:
        stale = session.scalars(
            select(JobRow).where(JobRow.status == JobStatus.RUNNING, JobRow.heartbeat_at < cutoff)
        ).all()
        touched = []
        for job in stale:
            reason = f"worker {job.worker} stopped heartbeating during attempt {job.attempts}"
            if job.attempts >= max_attempts:
                values = {"status": JobStatus.FAILED, "error": reason, "finished_at": utcnow()}
            else:
                values = {"status": JobStatus.QUEUED, "error": reason, "worker": None}
            result = session.execute(
                update(JobRow)
                .where(JobRow.id == job.id, JobRow.status == JobStatus.RUNNING, JobRow.heartbeat_at < cutoff)
                .values(**values)
            )
            if result.rowcount == 1:
                touched.append(job.id)
        return touched

    return in_transaction(factory, recover)
