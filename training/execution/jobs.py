"""The job queue in the database: enqueue, claim, heartbeat, finish, and recover stale jobs.

Every state change is a compare-and-set on `status`, so two workers can never both claim or
finish the same job, on SQLite or PostgreSQL. The writes a training job makes while it runs
(`heartbeat`, `record_epoch`, `mark_failed`) can each be run again after a commit whose
acknowledgement was lost, so callers may retry them through a database outage.
"""

from __future__ import annotations

import os
import re
import socket
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import false, func, select, text, update
from sqlalchemy.orm import Session, selectinload

from training.data.datasets import get_dataset
from training.errors import Conflict, InvalidInput, JobNotFound, Overloaded
from training.execution import wakeups
from training.execution.spec import StoredDataset, TrainingSpec
from training.store.db import SessionFactory, in_transaction
from training.store.models import JobEpochRow, JobRow, JobStatus, VersionRow, utcnow
from training.store.registry import has_versions


def worker_id() -> str:
    """`host:pid` of this process, as GET /jobs/{id} names the worker that claimed a job."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _lock_the_queue(session: Session) -> None:
    """Make counting the queued jobs and adding one a single step, until the transaction ends.

    Otherwise concurrent enqueues all count the same rows and all insert, past the cap.
    """
    if session.bind.dialect.name == "postgresql":
        # READ COMMITTED: once the lock is ours, the count sees every job its last holder added.
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": "enqueue:capped"})
    else:
        # SQLite begins a transaction and takes its one write lock at the first write, not at a
        # read: a write that changes nothing takes the lock before counting, so concurrent
        # enqueues wait for each other (busy_timeout) instead of counting the same rows.
        session.execute(update(JobRow).where(false()).values(status=JobRow.status))


def resolve_spec(session: Session, spec: TrainingSpec) -> TrainingSpec:
    """`spec` with its stored dataset's shape filled in from the registry, checked again now that
    it is known (InvalidInput); a toy dataset's spec as it is. DatasetNotFound for an unknown id."""
    if not isinstance(spec.dataset, StoredDataset):
        return spec
    row = get_dataset(session, spec.dataset.id)
    data = spec.model_dump(mode="json")
    data["dataset"] |= {
        "input_dim": row.input_dim,
        "min_len": row.min_len,
        "max_len": row.max_len,
        "num_sequences": row.num_sequences,
    }
    try:
        return TrainingSpec.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput("; ".join(error["msg"] for error in exc.errors())) from None


def enqueue(
    session: Session,
    spec: TrainingSpec,
    max_queued: int | None = None,
    executor: str | None = None,
    max_len: int | None = None,
) -> JobRow:
    """Queue `spec`, already resolved (`resolve_spec`: a stored dataset's spec that is not raises
    ValueError); with `max_queued`, refuse (Overloaded) once that many jobs are waiting.

    Given the JEPA_EXECUTOR of the workers that will claim it and JEPA_MAX_SEQ_LEN (`max_len`),
    its configs are checked against what they can run (InvalidInput). With `max_queued`, the
    queue stays locked until the caller's transaction ends: commit soon.
    """
    if max_queued is not None:
        _lock_the_queue(session)
        waiting = session.scalar(select(func.count(JobRow.id)).where(JobRow.status == JobStatus.QUEUED)) or 0
        if waiting >= max_queued:
            raise Overloaded(f"{waiting} training jobs are already queued (JEPA_MAX_QUEUED_JOBS); retry later")
    epochs = spec.configs(executor, max_len)[1].epochs
    job = JobRow(
        id=uuid.uuid4().hex,
        model_name=spec.model,
        status=JobStatus.QUEUED,
        spec=spec.model_dump(mode="json"),
        progress={"epoch": 0, "epochs": epochs, "loss": None},
    )
    session.add(job)
    session.flush()
    wakeups.notify(session, wakeups.QUEUED)
    return job


def enqueue_unless_served(
    session: Session, spec: TrainingSpec, executor: str | None = None, max_len: int | None = None
) -> JobRow | None:
    """Queue `spec` only if its model has no version and no job on the way (first start), checked
    as `enqueue` checks it.

    On PostgreSQL a transaction-scoped advisory lock per model makes the check and the insert
    one step, so API replicas starting together queue one job between them (SQLite's single
    writer already does).
    """
    if session.bind.dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:model))"), {"model": f"bootstrap:{spec.model}"})
    if has_versions(session, spec.model) or has_active_job(session, spec.model):
        return None
    return enqueue(session, spec, executor=executor, max_len=max_len)


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


def count_by_status(session: Session) -> dict[str, int]:
    rows = session.execute(select(JobRow.status, func.count(JobRow.id)).group_by(JobRow.status))
    return {status: count for status, count in rows}


def has_active_job(session: Session, model_name: str) -> bool:
    query = select(JobRow.id).where(JobRow.model_name == model_name, JobRow.status.in_(JobStatus.ACTIVE))
    return session.scalar(query.limit(1)) is not None


def _claim_values(worker: str) -> dict[str, Any]:
    now = utcnow()
    return {
        "status": JobStatus.RUNNING,
        "worker": worker,
        "attempts": JobRow.attempts + 1,
        "started_at": now,
        "heartbeat_at": now,
        "error": None,
    }


def _try_claim(session: Session, job_id: str, worker: str) -> bool:
    result = session.execute(
        update(JobRow).where(JobRow.id == job_id, JobRow.status == JobStatus.QUEUED).values(**_claim_values(worker))
    )
    return result.rowcount == 1


def claim_next(factory: SessionFactory, worker: str) -> str | None:
    """Claim the oldest queued job for `worker`; returns its id, or None when the queue is empty."""

    def claim_postgres(session: Session) -> str | None:
        # SKIP LOCKED passes over rows another worker is claiming right now, so workers never
        # queue up behind each other; the status check in the UPDATE decides each claim.
        oldest = session.scalars(
            select(JobRow.id)
            .where(JobRow.status == JobStatus.QUEUED)
            .order_by(JobRow.created_at)
            .limit(1)
            .with_for_update(skip_locked=True)
        ).first()
        return oldest if oldest is not None and _try_claim(session, oldest, worker) else None

    def claim_sqlite(session: Session) -> str | None:
        # SQLite has one writer at a time: a single UPDATE ... RETURNING picks and claims the
        # oldest queued job atomically under its write lock.
        oldest = (
            select(JobRow.id)
            .where(JobRow.status == JobStatus.QUEUED)
            .order_by(JobRow.created_at)
            .limit(1)
            .scalar_subquery()
        )
        statement = (
            update(JobRow)
            .where(JobRow.id == oldest, JobRow.status == JobStatus.QUEUED)
            .values(**_claim_values(worker))
            .returning(JobRow.id)
        )
        return session.execute(statement).scalar()

    return in_transaction(factory, lambda s: (claim_sqlite if s.bind.dialect.name == "sqlite" else claim_postgres)(s))


def claim(factory: SessionFactory, job_id: str, worker: str) -> bool:
    """Claim one specific queued job (the CLI runs the job it just created)."""
    return in_transaction(factory, lambda s: _try_claim(s, job_id, worker))


def _running(job_id: str, worker: str | None) -> Any:
    """The WHERE clause for a job that is still running, and still `worker`'s when one is given.

    A training process whose worker lost the job (re-queued as stale, or cancelled) thereby can
    neither heartbeat over its successor nor register a result.
    """
    clause = (JobRow.id == job_id) & (JobRow.status == JobStatus.RUNNING)
    return clause if worker is None else clause & (JobRow.worker == worker)


def heartbeat(factory: SessionFactory, job_id: str, worker: str | None = None) -> bool:
    """Mark the job alive; False when it is no longer running for this worker (e.g. cancelled)."""
    return in_transaction(
        factory,
        lambda s: s.execute(update(JobRow).where(_running(job_id, worker)).values(heartbeat_at=utcnow())).rowcount == 1,
    )


def record_epoch(
    factory: SessionFactory, job_id: str, worker: str | None, progress: dict[str, Any], seconds: float
) -> bool:
    """Store a finished epoch in the job's progress and history; False when the job was lost."""

    def record(session: Session) -> bool:
        result = session.execute(
            update(JobRow)
            .where(_running(job_id, worker))
            .values(progress=progress, heartbeat_at=utcnow())
            .returning(JobRow.attempts)
        )
        attempt = result.scalar()
        if attempt is None:
            return False
        # merge, not add: a retry after a commit whose acknowledgement was lost finds the row.
        session.merge(
            JobEpochRow(
                job_id=job_id,
                attempt=attempt,
                epoch=progress["epoch"],
                loss=progress["loss"],
                metrics=progress.get("metrics", {}),
                seconds=seconds,
            )
        )
        return True

    return in_transaction(factory, record)


def epoch_history(session: Session, job_id: str) -> list[JobEpochRow]:
    """The latest attempt's epochs, in order."""
    job = get_job(session, job_id)
    query = select(JobEpochRow).where(JobEpochRow.job_id == job.id, JobEpochRow.attempt == job.attempts)
    return list(session.scalars(query.order_by(JobEpochRow.epoch)))


def mark_succeeded(session: Session, job_id: str, progress: dict[str, Any], worker: str | None = None) -> bool:
    result = session.execute(
        update(JobRow)
        .where(_running(job_id, worker))
        .values(status=JobStatus.SUCCEEDED, progress=progress, finished_at=utcnow(), error=None)
    )
    return result.rowcount == 1


def cancel(factory: SessionFactory, job_id: str) -> JobRow:
    """Cancel a queued or running job. A running one's worker sees it at its next heartbeat and
    stops the training process; whatever that process had made is never registered."""

    def cancel_one(session: Session) -> JobRow:
        job = get_job(session, job_id)
        result = session.execute(
            update(JobRow)
            .where(JobRow.id == job_id, JobRow.status.in_(JobStatus.ACTIVE))
            .values(status=JobStatus.CANCELLED, finished_at=utcnow(), error="cancelled by request")
        )
        if result.rowcount != 1:
            raise Conflict(f"job {job_id!r} already {job.status}; only queued or running jobs can be cancelled")
        wakeups.notify(session, wakeups.CANCEL + job_id)  # its worker stops the training process at once
        session.refresh(job)
        return job

    return in_transaction(factory, cancel_one)


# An absolute path of two or more parts, not inside a URL or a relative path ("a/b", "1/2").
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/-])/(?:[\w.@+-]+/)+[\w.@+-]*")


def without_server_paths(message: str, data_dir: Path | None = None) -> str:
    """`message` as a client may see it: paths under `data_dir` relative to it, and any other
    absolute path cut to its last part. Logs keep the full paths; jobs' `error` fields get this."""
    if data_dir is not None:
        for root in dict.fromkeys([str(data_dir.resolve()), str(data_dir.absolute())]):
            message = message.replace(root + os.sep, "").replace(root, "the data directory")
    return _ABSOLUTE_PATH.sub(lambda m: ".../" + m.group(0).rstrip("/").rsplit("/", 1)[-1], message)


def mark_failed(factory: SessionFactory, job_id: str, error: str, worker: str | None = None) -> bool:
    """Fail an active job; with `worker`, only while it is still running for that worker.

    `error` is shown to clients: server paths in it are cut (see `without_server_paths`).
    """
    active = _running(job_id, worker) if worker else (JobRow.id == job_id) & JobRow.status.in_(JobStatus.ACTIVE)
    error = without_server_paths(error)[:4000]

    def fail(session: Session) -> bool:
        result = session.execute(
            update(JobRow).where(active).values(status=JobStatus.FAILED, error=error, finished_at=utcnow())
        )
        return result.rowcount == 1

    return in_transaction(factory, fail)


def requeue(factory: SessionFactory, job_id: str, reason: str, worker: str | None = None) -> bool:
    """Put a running job back in the queue, e.g. when its worker shuts down mid-run."""

    def put_back(session: Session) -> bool:
        result = session.execute(
            update(JobRow)
            .where(_running(job_id, worker))
            .values(status=JobStatus.QUEUED, worker=None, error=reason, heartbeat_at=None)
        )
        if result.rowcount == 1:
            wakeups.notify(session, wakeups.QUEUED)
        return result.rowcount == 1

    return in_transaction(factory, put_back)


def _after_lost_run(attempts: int, max_attempts: int, reason: str) -> dict[str, Any]:
    """What a running job whose run was lost becomes: queued again, or failed once it has had
    `max_attempts` attempts. One rule, whether its worker or its Ray cluster was lost."""
    if attempts >= max_attempts:
        return {"status": JobStatus.FAILED, "error": reason, "finished_at": utcnow()}
    return {"status": JobStatus.QUEUED, "error": reason, "worker": None}


def run_lost(factory: SessionFactory, job_id: str, reason: str, worker: str | None, max_attempts: int) -> str | None:
    """The run of `job_id` was lost where it executed (a Ray worker or the cluster): re-queue it,
    or fail it when out of attempts, as stale recovery does for a lost worker. Returns the status
    it got, or None when the job was no longer running here."""

    def settle(session: Session) -> str | None:
        attempts = session.scalar(select(JobRow.attempts).where(_running(job_id, worker)))
        if attempts is None:
            return None
        values = _after_lost_run(attempts, max_attempts, without_server_paths(reason)[:4000])
        if session.execute(update(JobRow).where(_running(job_id, worker)).values(**values)).rowcount != 1:
            return None
        if values["status"] == JobStatus.QUEUED:
            wakeups.notify(session, wakeups.QUEUED)
        return str(values["status"])

    return in_transaction(factory, settle)


def recover_stale(factory: SessionFactory, stale_s: float, max_attempts: int) -> list[str]:
    """Re-queue running jobs whose worker stopped heartbeating; fail those out of attempts.

    Returns the ids it touched. A worker killed mid-job therefore never leaves it `running`.
    """
    cutoff = utcnow() - timedelta(seconds=stale_s)

    def recover(session: Session) -> list[str]:
        # SKIP LOCKED (PostgreSQL): a row still locked by a lost worker's unfinished transaction
        # is recovered on a later round, and blocks neither this one nor the other stale jobs.
        stale = session.scalars(
            select(JobRow)
            .where(JobRow.status == JobStatus.RUNNING, JobRow.heartbeat_at < cutoff)
            .with_for_update(skip_locked=True)
        ).all()
        touched = []
        for job in stale:
            reason = f"worker {job.worker} stopped heartbeating during attempt {job.attempts}"
            values = _after_lost_run(job.attempts, max_attempts, reason)
            result = session.execute(
                update(JobRow)
                .where(JobRow.id == job.id, JobRow.status == JobStatus.RUNNING, JobRow.heartbeat_at < cutoff)
                .values(**values)
            )
            if result.rowcount == 1:
                touched.append(job.id)
        if touched:
            wakeups.notify(session, wakeups.QUEUED)
        return touched

    return in_transaction(factory, recover)
