"""Deleting what the registry holds, retention, and collecting orphaned artifacts.

Rows go first, in their transaction; artifact files only after it commits. A crash in between
leaves files no row names, never a row naming missing files, and `collect_garbage` (`jepa gc`)
removes such files later. Artifacts newer than a grace period are never collected, because a
checkpoint or an upload is written just before the row that names it is committed.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from training.data.datasets import get_dataset
from training.errors import Conflict
from training.execution import jobs
from training.store import registry
from training.store.artifacts import ArtifactStore
from training.store.models import AliasRow, DatasetRow, JobRow, JobStatus, VersionRow, utcnow
from training.store.registry import VersionRef

log = logging.getLogger("jepa.lifecycle")

# Where artifacts live under the data directory: a checkpoint directory per version
# (checkpoints/<model>/<job>/) and a file per dataset (datasets/<id>.safetensors).
CHECKPOINTS, DATASETS = "checkpoints", "datasets"
FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


def delete_version(session: Session, store: ArtifactStore, model: str, ref: VersionRef, keep_last: bool = False) -> str:
    """Delete a version's row; returns its artifact's path (relative to the data directory).
    Conflict while an alias points at it: moving the alias first is the caller's decision. With
    `keep_last` (the service's default model, unless forced), Conflict when it is the model's
    last version: requests naming no model, and /ready, would have nothing to serve."""
    row = registry.get_version(session, model, ref)
    aliases = session.scalars(select(AliasRow.name).where(AliasRow.version_id == row.id)).all()
    if aliases:
        names = ", ".join(sorted(aliases))
        raise Conflict(f"model {model!r} v{row.number} is what alias {names} points at; move or delete it first")
    others = session.scalar(
        select(func.count()).select_from(VersionRow).where(VersionRow.model_id == row.model_id, VersionRow.id != row.id)
    )
    if keep_last and not others:
        raise Conflict(
            f"model {model!r} v{row.number} is the default model's only version: without it requests that name "
            "no model, and /ready, fail until another is trained; train another first, or pass ?force=true"
        )
    session.delete(row)
    store.forget(session, row.path)
    session.flush()
    return row.path


def delete_job(session: Session, job_id: str) -> None:
    """Delete a finished job and its epoch history; its version, if any, stays. Conflict while
    the job is queued or running."""
    job = jobs.get_job(session, job_id)
    if job.status not in FINISHED:
        raise Conflict(f"job {job_id} is {job.status}; cancel it first (POST /jobs/{job_id}/cancel)")
    session.delete(job)
    session.flush()


def delete_dataset(session: Session, store: ArtifactStore, dataset_id: str) -> str:
    """Delete a dataset's row; returns its file's path. Conflict while a queued or running job
    trains on it. (A job queued while this runs may still name it; that job then fails with
    "dataset not found", as it would for any dataset deleted from under it.)"""
    # Locked to the commit on PostgreSQL; get_dataset raises DatasetNotFound when there is none.
    row = session.get(DatasetRow, dataset_id, with_for_update=True) or get_dataset(session, dataset_id)
    users = [job.id for job in _active_jobs(session) if _dataset_of(job) == dataset_id]
    if users:
        raise Conflict(f"dataset {dataset_id} is what job {', '.join(users)} trains on; wait for it or cancel it")
    session.delete(row)
    store.forget(session, row.path)
    session.flush()
    return row.path


def jobs_training(session: Session, model: str) -> list[str]:
    """The ids of the queued or running jobs that train `model`."""
    return [job.id for job in _active_jobs(session) if job.spec.get("model") == model]


def _active_jobs(session: Session) -> list[JobRow]:
    # Few: the queue is bounded (JEPA_MAX_QUEUED_JOBS) and each worker runs one job.
    return list(session.scalars(select(JobRow).where(JobRow.status.in_(JobStatus.ACTIVE))))


def _dataset_of(job: JobRow) -> str | None:
    dataset = job.spec.get("dataset") or {}
    return dataset.get("id") if dataset.get("kind") == "stored" else None


def remove_artifact(data_dir: Path, relative: str) -> int:
    """Remove a file or directory under the data directory; returns the bytes freed. A path
    that would lead outside the data directory is refused, whatever the database says."""
    root = data_dir.resolve()
    path = (root / relative).resolve()
    if path == root or not path.is_relative_to(root):
        raise ValueError(f"refusing to remove {relative!r}: not inside the data directory")
    size = _size(path)
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    return size


def expire_jobs(session: Session, retain_days: float) -> int:
    """Delete finished jobs that finished over `retain_days` ago; returns how many."""
    cutoff = utcnow() - timedelta(days=retain_days)
    result = session.execute(delete(JobRow).where(JobRow.status.in_(FINISHED), JobRow.finished_at < cutoff))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


@dataclass
class GarbageReport:
    removed: list[str] = field(default_factory=list)  # paths relative to the data directory
    bytes_freed: int = 0
    kept_young: int = 0  # orphans still inside the grace period


def collect_garbage(session: Session, store: ArtifactStore, min_age_s: float, dry_run: bool = False) -> GarbageReport:
    """Remove checkpoint directories and dataset files that no row names and that are older
    than `min_age_s`, locally and in the store; `dry_run` only reports them. Commits."""
    named = set(session.scalars(select(VersionRow.path))) | set(session.scalars(select(DatasetRow.path)))
    named = {Path(p).as_posix() for p in named}
    report = GarbageReport()
    now = time.time()
    for relative in _artifacts(store.data_dir):
        if relative in named:
            continue
        if now - _newest_mtime(store.data_dir / relative) < min_age_s:
            report.kept_young += 1
            continue
        report.removed.append(relative)
        report.bytes_freed += _size(store.data_dir / relative) if dry_run else remove_artifact(store.data_dir, relative)
    # Published copies no row names: their rows are written in the same transaction as the row
    # that names them, so there is no young one to spare.
    for key in sorted(store.keys(session)):
        if not any(key == path or key.startswith(path + "/") for path in named):
            report.removed.append(f"{key} (in the database)")
            if not dry_run:
                store.forget(session, key)
    session.commit()
    return report


def _artifacts(data_dir: Path) -> list[str]:
    """Every artifact on disk: checkpoints/<model>/<job> directories and datasets/<id> files."""
    found = [p for p in (data_dir / CHECKPOINTS).glob("*/*") if p.is_dir()]
    found += [p for p in (data_dir / DATASETS).glob("*") if p.is_file()]
    return sorted(p.relative_to(data_dir).as_posix() for p in found)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def _newest_mtime(path: Path) -> float:
    if path.is_file():
        return path.stat().st_mtime
    return max((p.stat().st_mtime for p in path.rglob("*")), default=path.stat().st_mtime)
