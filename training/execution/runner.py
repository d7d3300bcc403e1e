"""Run one training job: train, checkpoint, register. `python -m training.execution.runner JOB_ID [WORKER]`.
`run_job` goes through four stages: prepare (spec, configs, data), execute (training, each epoch
recorded on the job), assess (the version's metrics) and publish (files, then registration).

A worker starts this in a process of its own (forked by its fork server, training/execution/
forkserver.py, or else `python -m`), so training never shares an interpreter (or a GIL) with a
process that serves requests. The checkpoint is written completely before the version
is registered, and the job is marked succeeded in the same transaction as the registration: a
crash at any point leaves either no version or a whole one. A failure before registration removes
the job's checkpoint directory; a full disk fails the job with StorageFull.

Its database writes ride out an outage of up to JEPA_DB_RETRY_S (training waits meanwhile), and
the `error` it records names paths relative to the data directory, never the server's own.
"""

from __future__ import annotations

import atexit
import json
import logging
import logging.config
import math
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from sqlalchemy.orm import Session
from threadpoolctl import threadpool_limits
from torch.utils.data import Dataset

from jepa_model import ModelConfig, SequenceDataset, TrainConfig, __version__, fit, save_checkpoint
from jepa_model.checkpoint import CONFIG_FILE
from jepa_model.devices import resolve_device
from jepa_model.jepa import JEPA
from jepa_model.metrics import EpochMonitor, embed_sequences, evaluate
from jepa_model.surprise import CALIBRATION_SEQUENCES, calibration_of
from jepa_model.train import EpochCallback, EpochReport, Monitor, TrainResult, plan_rounds
from training import plots
from training.data import datasets
from training.errors import ExecutorLost, StorageFull
from training.execution import jobs
from training.execution.forkserver import die_with_parent
from training.execution.job_logs import JobLogHandler
from training.execution.spec import ToyDataset, TrainingSpec
from training.logs import log_config
from training.settings import StorageSettings
from training.store.artifacts import open_store
from training.store.db import (
    STORAGE_FULL,
    DatabaseUnreachable,
    SessionFactory,
    create_db_engine,
    create_session_factory,
    in_transaction,
    retry_unreachable,
)
from training.store.models import JobStatus
from training.store.registry import register_version

log = logging.getLogger("jepa.runner")

ProgressCallback = Callable[[dict[str, Any]], None]

# Fresh sequences from the training distribution that the model never sees, for its metrics.
HELD_OUT_SEQUENCES = 1024
# Below this mean per-dimension std of normalised embeddings, the log raises a collapse alarm.
COLLAPSE_STD = 0.01


class JobLost(RuntimeError):
    """The job left the `running` state while we trained (re-queued or cancelled elsewhere)."""


class TrainingDiverged(RuntimeError):
    pass


def load_spec(factory: SessionFactory, job_id: str) -> TrainingSpec:
    with factory() as session:
        return TrainingSpec.model_validate(jobs.get_job(session, job_id).spec)


def load_data(
    factory: SessionFactory, settings: StorageSettings, spec: TrainingSpec
) -> tuple[Dataset, Dataset | None, datasets.LabelSplit | None]:
    """(training data, held-out data for the version's metrics, or None when too small to split,
    and the labels of both for a labelled dataset). The training data never carries labels."""
    if isinstance(spec.dataset, ToyDataset):
        return spec.dataset.build(), spec.dataset.held_out(HELD_OUT_SEQUENCES), None
    with factory() as session:
        row = datasets.get_dataset(session, spec.dataset.id)
        open_store(settings.artifact_store, settings.data_dir).fetch(session, row.path)
    sequences, labels = datasets.load_dataset(settings.data_dir, row)
    return datasets.split_for_training(sequences, labels, spec.config.seed or 0, HELD_OUT_SEQUENCES)


def evaluation_subset(dataset: Dataset) -> Dataset:
    """What the metrics read when nothing is held out: the training data, or at most
    HELD_OUT_SEQUENCES of its rows evenly spread. One long series read as thousands of pieces
    (a 1,000,000-step one makes 3,906) would otherwise take the metrics past 4 GB."""
    if not isinstance(dataset, SequenceDataset) or len(dataset) <= HELD_OUT_SEQUENCES:
        return dataset
    rows = np.linspace(0, len(dataset) - 1, HELD_OUT_SEQUENCES).round().astype(int)
    return SequenceDataset([dataset.data[i] for i in rows])


def draw_plots(model: JEPA, losses: list[float], data: Dataset, directory: Path, job_id: str) -> None:
    """The loss curve and a PCA of whole-sequence embeddings, beside the checkpoint."""
    try:
        plots.plot_loss(losses, directory / "loss.png")
        sequences = list(data.data[:HELD_OUT_SEQUENCES])  # type: ignore[attr-defined]
        kinds = getattr(data, "kinds", None)
        labels = None if kinds is None else list(kinds[: len(sequences)])
        plots.plot_embeddings(embed_sequences(model, sequences), labels, directory / "embeddings.png")
    except Exception:  # noqa: BLE001 - a version without plots is still a good version
        log.exception("job %s: could not draw its plots", job_id)
        shutil.rmtree(directory, ignore_errors=True)  # half-drawn files (a full disk) keep no space


def write_checkpoint(model: JEPA, directory: Path, relative: Path, train_config: TrainConfig, preset: str) -> str:
    """save_checkpoint, with StorageFull (naming `relative`, not the server path) for a full disk."""
    try:
        return save_checkpoint(model, directory, train_config, preset, __version__)
    except OSError as exc:
        log.error("could not write the checkpoint %s: %s", directory, exc)  # the log keeps the full path
        if exc.errno in STORAGE_FULL:
            raise StorageFull(
                f"no space left on the server's disk for the checkpoint {relative} ({os.strerror(exc.errno)}); "
                "free some space in the data directory and train again"
            ) from exc
        raise


def registered_number(session: Session, job_id: str, worker: str | None) -> int | None:
    """The version `job_id` already registered, when an earlier try of this registration was
    committed but its acknowledgement lost to a dropped connection; else None."""
    job = jobs.get_job(session, job_id)
    if job.status != JobStatus.SUCCEEDED or job.version is None or (worker is not None and job.worker != worker):
        return None
    return job.version.number


@dataclass(frozen=True)
class PreparedJob:
    """A claimed job ready to train: its spec and configs, its data, and where it trains."""

    job_id: str
    spec: TrainingSpec
    model_config: ModelConfig
    train_config: TrainConfig
    dataset: Dataset
    held_out: Dataset | None  # never trained on; None when the data is too small to split
    labels: datasets.LabelSplit | None
    evaluation: Dataset  # what the metrics read: the held-out data, or some of the training data
    device: torch.device


def run_job(
    factory: SessionFactory,
    settings: StorageSettings,
    job_id: str,
    on_progress: ProgressCallback | None = None,
    worker: str | None = None,
) -> int:
    """Train the claimed job `job_id` and register its version; returns the version number."""
    job = prepare(factory, settings, job_id)
    result, progress = execute(factory, settings, job, on_progress, worker)
    metrics = assess(job, result)
    return publish(factory, settings, job, result, metrics, progress, worker)


def training_device(settings: StorageSettings) -> torch.device:
    if settings.executor == "local":
        return resolve_device(settings.device)  # raises when it cannot be had
    # The Ray cluster's workers, not this host, have the GPUs: only an explicit cuda asks for them.
    return torch.device("cuda" if settings.device == "cuda" else "cpu")


def prepare(factory: SessionFactory, settings: StorageSettings, job_id: str) -> PreparedJob:
    """Takes the id of a job this process claimed; returns it ready to train. The device comes
    first, so that one which cannot be had fails the job before any work; the job's configs are
    checked again (InvalidInput) and its data loaded, riding out a database outage of up to
    JEPA_DB_RETRY_S."""
    device = training_device(settings)
    window = settings.db_retry_s
    spec = retry_unreachable(lambda: load_spec(factory, job_id), window, f"loading job {job_id}")
    model_config, train_config = spec.configs(max_len=settings.max_seq_len)
    dataset, held_out, labels = retry_unreachable(
        lambda: load_data(factory, settings, spec), window, f"loading job {job_id}'s data"
    )
    evaluation = held_out if held_out is not None else evaluation_subset(dataset)
    return PreparedJob(job_id, spec, model_config, train_config, dataset, held_out, labels, evaluation, device)


class EpochRecorder:
    """A job's `on_epoch`: each epoch's progress logged, written to the job (with its heartbeat)
    and handed to `on_progress`. Training stops with TrainingDiverged when the loss is no longer
    finite, and with JobLost when the job is no longer running here (cancelled or re-queued)."""

    def __init__(
        self,
        factory: SessionFactory,
        settings: StorageSettings,
        job_id: str,
        epochs: int,
        on_progress: ProgressCallback | None,
        worker: str | None,
    ) -> None:
        self.factory, self.window, self.job_id = factory, settings.db_retry_s, job_id
        self.on_progress, self.worker = on_progress, worker
        self.started = time.monotonic()
        self.progress: dict[str, Any] = {"epoch": 0, "epochs": epochs, "loss": None}

    def __call__(self, report: EpochReport) -> None:
        job_id = self.job_id
        if not math.isfinite(report.loss):
            raise TrainingDiverged(f"loss became {report.loss} at epoch {report.epoch + 1}; try a lower lr")
        done = report.epoch + 1
        elapsed = time.monotonic() - self.started
        metrics = {k: round(v, 4) for k, v in report.metrics.items()}
        self.progress.update(
            epoch=done,
            epochs=report.epochs,
            loss=report.loss,
            eta_s=round(elapsed / done * (report.epochs - done), 2),
            metrics=metrics,
        )
        log.info("job %s epoch %d/%d loss %.4f %s", job_id, done, report.epochs, report.loss, metrics)
        if metrics.get("embedding_std", 1.0) < COLLAPSE_STD:
            log.warning("job %s: embeddings are collapsing (embedding_std %.4f)", job_id, metrics["embedding_std"])
        recorded = retry_unreachable(
            lambda: jobs.record_epoch(self.factory, job_id, self.worker, dict(self.progress), round(elapsed, 3)),
            self.window,
            f"recording epoch {done} of job {job_id}",
        )
        if not recorded:
            raise JobLost(f"job {job_id} is no longer running here (cancelled or re-queued); stopping")
        if self.on_progress is not None:
            self.on_progress(dict(self.progress))


def execute(
    factory: SessionFactory,
    settings: StorageSettings,
    job: PreparedJob,
    on_progress: ProgressCallback | None,
    worker: str | None,
) -> tuple[TrainResult, dict[str, Any]]:
    """Takes a prepared job; trains it, here or on the Ray cluster (`train`), each epoch recorded
    on the job (EpochRecorder). Returns the training's result and the job's last progress."""
    train_config = job.train_config
    rounds = plan_rounds(train_config, math.ceil(len(job.dataset) / train_config.batch_size))  # type: ignore[arg-type]
    on_epoch = EpochRecorder(factory, settings, job.job_id, len(rounds), on_progress, worker)
    monitor = EpochMonitor(job.evaluation, train_config.context_len, train_config.target_len)
    result = train(settings, job.job_id, job.dataset, job.model_config, train_config, on_epoch, monitor, job.device)
    return result, on_epoch.progress


def assess(job: PreparedJob, result: TrainResult) -> dict[str, Any]:
    """Takes the prepared job and its training's result; returns the version's metrics: measured
    on the evaluation data (and, for a labelled dataset, how well the embeddings separate its
    classes), the training's own figures, and the surprise calibration POST /score ranks by."""
    model, context_len, target_len = result.model, job.train_config.context_len, job.train_config.target_len
    metrics: dict[str, Any] = evaluate(model, job.evaluation, context_len, target_len)
    if job.labels is not None:  # how well the embeddings separate the classes; never trained on
        metrics |= datasets.label_metrics(model, job.dataset, job.held_out, job.labels)
    metrics |= {
        "final_loss": result.losses[-1],
        "train_seconds": round(result.seconds, 3),
        "epoch_seconds": round(result.seconds / len(result.losses), 4),
        "held_out_sequences": len(job.held_out) if job.held_out is not None else 0,
    }
    log.info("job %s held-out metrics %s", job.job_id, {k: round(v, 4) for k, v in metrics.items()})
    count = min(len(job.evaluation), CALIBRATION_SEQUENCES)  # type: ignore[arg-type]
    calibration = calibration_of(model, [job.evaluation[i] for i in range(count)], context_len, target_len)
    if calibration is not None:  # what POST /score ranks a series' surprise against
        metrics["surprise_percentiles"] = calibration
    return metrics


def publish(
    factory: SessionFactory,
    settings: StorageSettings,
    job: PreparedJob,
    result: TrainResult,
    metrics: dict[str, Any],
    progress: dict[str, Any],
    worker: str | None,
) -> int:
    """Takes the trained job, its metrics and its last progress; writes the checkpoint and its
    plots, then registers the version and marks the job succeeded in one transaction (JobLost
    when the job is no longer ours), riding out a database outage. Returns the version number.
    Files that no version will refer to are removed; those that one may refer to are kept."""
    relative = Path("checkpoints") / job.spec.model / job.job_id
    directory = settings.data_dir / relative
    sha256, config = write_files(job, result, directory, relative)

    def register(session: Session) -> int:
        if not jobs.mark_succeeded(session, job.job_id, dict(progress), worker):
            if (number := registered_number(session, job.job_id, worker)) is not None:
                return number
            raise JobLost(f"job {job.job_id} is no longer running here; its result is discarded")
        # In the transaction whose compare-and-set just proved the job is still ours: a training
        # process that lost its job publishes nothing.
        open_store(settings.artifact_store, settings.data_dir).publish(session, relative)
        version = register_version(
            session,
            job.spec.model,
            config=config,
            metrics=metrics,
            sha256=sha256,
            path=relative.as_posix(),
            job_id=job.job_id,
        )
        return version.number

    try:
        number = retry_unreachable(
            lambda: in_transaction(factory, register), settings.db_retry_s, f"registering job {job.job_id}"
        )
    except DatabaseUnreachable:
        # Whether the last try was committed is unknown: keep the files a version may refer to.
        raise
    except Exception:  # not SystemExit (SIGTERM): it may arrive just after the commit
        shutil.rmtree(directory, ignore_errors=True)  # nothing refers to it; a re-run writes its own
        raise
    log.info("job %s registered %s v%d", job.job_id, job.spec.model, number)
    return number


def write_files(job: PreparedJob, result: TrainResult, directory: Path, relative: Path) -> tuple[str, dict[str, Any]]:
    """The checkpoint (its sha256 and config returned) and its plots, in `directory`; on any
    failure, StorageFull for a full disk included, nothing of them is left."""
    try:
        sha256 = write_checkpoint(result.model, directory, relative, job.train_config, job.spec.config.preset)
        config = json.loads((directory / CONFIG_FILE).read_text())
        draw_plots(result.model, result.losses, job.evaluation, directory / plots.PLOTS_DIR, job.job_id)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)  # a partial checkpoint keeps the disk full
        raise
    return sha256, config


def train(
    settings: StorageSettings,
    job_id: str,
    dataset: Dataset,
    model_config: ModelConfig,
    train_config: TrainConfig,
    on_epoch: EpochCallback,
    monitor: Monitor,
    device: torch.device,
) -> TrainResult:
    """`fit` in this process (JEPA_EXECUTOR=local), or on the Ray cluster (JEPA_EXECUTOR=ray)."""
    if settings.executor == "ray":
        from training.execution.ray_executor import fit_on_ray

        assert settings.ray_address is not None  # StorageSettings refuses ray without an address
        use_gpu = device.type == "cuda"
        threads = settings.train_threads
        return fit_on_ray(
            settings.ray_address, dataset, model_config, train_config, on_epoch, monitor, threads, use_gpu, job_id
        )
    if train_config.workers > 1:
        raise ValueError(
            f"the job asks for {train_config.workers} data-parallel workers, and the worker that claimed it trains "
            "on its own host (JEPA_EXECUTOR=local): train it with workers=1, or run workers with JEPA_EXECUTOR=ray"
        )
    return fit(dataset, model_config, train_config, on_epoch=on_epoch, monitor=monitor, device=device)


def job_error(exc: BaseException, data_dir: Path) -> str:
    """What the job's `error` says about `exc`: paths relative to the data directory (the log
    keeps the full ones)."""
    return jobs.without_server_paths(f"{type(exc).__name__}: {exc}", data_dir)


def record_failure(
    factory: SessionFactory, settings: StorageSettings, job_id: str, exc: Exception, worker: str | None
) -> None:
    """Fail the job, saying why. When even that cannot reach the database, the worker (seeing
    exit code 1) tries again, and failing that, stale recovery settles the job."""
    error = job_error(exc, settings.data_dir)
    try:
        retry_unreachable(
            lambda: jobs.mark_failed(factory, job_id, error, worker),
            settings.db_retry_s,
            f"recording that job {job_id} failed",
        )
    except Exception:  # noqa: BLE001 - the exit code still reports the failure
        log.exception("job %s: could not record its failure", job_id)


def settle_lost_run(
    factory: SessionFactory, settings: StorageSettings, job_id: str, reason: str, worker: str | None
) -> int:
    """Re-queue (or, out of attempts, fail) a job whose Ray run was lost; exit code 3, or 1 when
    even that cannot reach the database (the worker then fails the job, or stale recovery settles it)."""
    # The re-queue wakes the worker (at once on PostgreSQL), which sees the job no longer running
    # here and stops this process: a SIGTERM now would drop these lines, which say why.
    keep_running_to_the_end()
    log.warning("job %s: %s", job_id, reason)
    try:
        status = retry_unreachable(
            lambda: jobs.run_lost(factory, job_id, reason, worker, settings.job_max_attempts),
            settings.db_retry_s,
            f"re-queueing job {job_id}",
        )
    except Exception:  # noqa: BLE001 - the exit code still reports the failure
        log.exception("job %s: could not record that its run was lost", job_id)
        return 1
    log.info("job %s is %s after its Ray run was lost", job_id, status or "no longer running here")
    return 3


def exit_on_sigterm() -> None:
    """Turn SIGTERM (the worker stopping this job: cancelled, handed on, shutting down) into
    SystemExit, so the way out cleans up: a checkpoint being written is removed, not left
    half-written on the disk. Once: a second SIGTERM (a worker that is itself shutting down stops
    its child again) must not interrupt that cleanup, or the exit handlers writing the last log
    lines, with a traceback; the worker's SIGKILL after its grace period still ends a stuck one."""

    def exit_once(*_: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sys.exit(128 + signal.SIGTERM)

    signal.signal(signal.SIGTERM, exit_once)


def _log_to_the_job(factory: SessionFactory, job_id: str) -> JobLogHandler | None:
    """Copy this process's log lines into the job's (GET /jobs/{id}/logs), tagged with its attempt."""
    try:
        with factory() as session:
            attempt = jobs.get_job(session, job_id).attempts
    except Exception:  # noqa: BLE001 - run_job reports a missing job or database properly
        return None
    handler = JobLogHandler(factory, job_id, attempt)
    logging.getLogger().addHandler(handler)
    return handler


def run_forked(request: Mapping[str, Any], fork_server: int) -> int:
    """The job's process, forked by the worker's fork server (training.execution.forkserver) for
    `request` ({"job", "worker", "env"}: start_training_process)."""
    return main([str(request["job"]), str(request["worker"])], parent=fork_server)


def main(argv: list[str], parent: int | None = None) -> int:
    """Run the job; the exit code. `parent`: the pid of the process that started this one, where
    it is not the worker's (`host:pid`, argv[1]) but its fork server's."""
    if len(argv) not in (1, 2):
        print("usage: python -m training.execution.runner JOB_ID [WORKER]", file=sys.stderr)
        return 2
    job_id, worker = argv[0], argv[1] if len(argv) == 2 else None
    if worker is not None:
        die_with_parent(parent or int(worker.rsplit(":", 1)[-1]))
    exit_on_sigterm()
    settings = StorageSettings()
    logging.config.dictConfig(log_config("info", settings.log_format))
    torch.set_num_threads(settings.train_threads)
    # Forked by a fork server, this process inherits BLAS and OpenMP pools sized before its
    # environment said JEPA_TRAIN_THREADS (training.execution.forkserver).
    threadpool_limits(settings.train_threads)
    engine = create_db_engine(settings.resolved_database_url)
    factory = create_session_factory(engine)
    job_log = _log_to_the_job(factory, job_id)
    try:
        run_job(factory, settings, job_id, worker=worker)
        return 0
    except JobLost as exc:
        log.warning("%s", exc)
        return 3
    except ExecutorLost as exc:
        return settle_lost_run(factory, settings, job_id, str(exc), worker)
    except Exception as exc:  # noqa: BLE001 - any failure is recorded on the job, then reported
        log.exception("job %s failed", job_id)
        record_failure(factory, settings, job_id, exc, worker)
        return 1
    finally:
        keep_running_to_the_end()
        if job_log is not None:
            logging.getLogger().removeHandler(job_log)
            job_log.close()
        engine.dispose()


def keep_running_to_the_end() -> None:
    """From here on the job is settled, or being settled: ignore SIGTERM, so that the last log
    lines reach the database. The worker's SIGKILL after its grace period still ends a stuck one."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def exit_now(code: int) -> NoReturn:
    """End the process with `code` once its job is settled: the exit handlers run (the last log
    lines are written), the streams are flushed, and the interpreter's teardown is skipped. That
    teardown (freeing torch's modules) took 0.7 s a job, during which the worker could not start
    the next one. Everything the job leaves (checkpoint, rows) is durable before main returns, so
    a SIGTERM from now on (the worker stopping a job that just ended) has nothing to clean up and
    must not interrupt the exit handlers."""
    keep_running_to_the_end()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main(sys.argv[1:]))
