"""The worker loop and the training process under faults: a database that fails or goes away, a
full disk, a thread that dies. Each test names the failure it once let through."""

import errno
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from tests.factories import tiny_spec
from tests.training.execution.test_jobs import age_heartbeat
from training.errors import InvalidInput, StorageFull
from training.execution import jobs, runner
from training.execution.runner import job_error, record_failure, run_job
from training.settings import THREAD_POOL_VARIABLES, StorageSettings
from training.store.db import SessionFactory, in_transaction
from training.store.models import JobRow, JobStatus, VersionRow
from training.worker import StaleRecovery, Worker, backoff_s

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> StorageSettings:
    return StorageSettings(data_dir=tmp_path / "data", database_url=database_url, db_retry_s=0.5)


def queue(factory: SessionFactory, **config: object) -> str:
    return in_transaction(factory, lambda s: jobs.enqueue(s, tiny_spec(**config)).id)


def job(factory: SessionFactory, job_id: str) -> JobRow:
    with factory() as s:
        return jobs.get_job(s, job_id)


def wait_until(condition: Callable[[], object], timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def unreachable(*_args: object, **_kwargs: object) -> None:
    raise OperationalError("UPDATE jobs", {}, Exception("connection refused"))


@pytest.fixture
def running_worker(settings: StorageSettings, factory: SessionFactory) -> Iterator[Worker]:
    worker = Worker(settings, factory, poll_s=0.05, heartbeat_s=0.2)
    yield worker
    worker.stop()
    if worker.thread is not None:
        worker.thread.join(30)


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [backoff_s(n) for n in (1, 2, 3, 4, 5, 6, 7, 10_000)] == [0.5, 1, 2, 4, 8, 10, 10, 10]


@SQLITE_ONLY
def test_the_loop_survives_a_database_write_that_fails(
    running_worker: Worker, factory: SessionFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mark_failed raising in run_one once killed the thread: the job stayed `running` and every
    later job `queued`."""
    broken = queue(factory)
    in_transaction(  # a spec the training process refuses, so it exits with code 1
        factory,
        lambda s: s.execute(update(JobRow).where(JobRow.id == broken).values(spec={"dataset": {"kind": "x"}})),
    )
    monkeypatch.setattr(jobs, "mark_failed", unreachable)  # only in this process, not the child's
    running_worker.start_thread()
    wait_until(lambda: running_worker.last_error == "DatabaseUnreachable", what="the failed write")
    assert running_worker.thread is not None and running_worker.thread.is_alive()
    monkeypatch.undo()

    after = queue(factory)
    wait_until(lambda: job(factory, after).status == JobStatus.SUCCEEDED, timeout=60, what="the next job")
    assert running_worker.thread.is_alive() and running_worker.problem() is None
    assert job(factory, broken).status == JobStatus.FAILED  # recorded by the training process itself


@SQLITE_ONLY
def test_a_loop_that_keeps_failing_says_so_and_recovers(
    running_worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    running_worker.settings.db_retry_s = 0.2
    monkeypatch.setattr(jobs, "claim_next", unreachable)
    running_worker.start_thread()
    wait_until(lambda: running_worker.problem() is not None, what="the problem to show")
    assert "failing for" in (running_worker.problem() or "") and "OperationalError" in (running_worker.problem() or "")
    monkeypatch.undo()
    wait_until(lambda: running_worker.failing_since is None, timeout=15, what="the loop to recover")
    assert running_worker.problem() is None


class Fatal(BaseException):
    """What no loop catches (a stand-in for whatever might still kill the thread)."""


@SQLITE_ONLY
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_worker_thread_is_reported(running_worker: Worker, monkeypatch: pytest.MonkeyPatch) -> None:
    def fatal(*_args: object) -> None:
        raise Fatal()

    monkeypatch.setattr(jobs, "claim_next", fatal)
    running_worker.start_thread()
    assert running_worker.thread is not None
    running_worker.thread.join(10)
    assert "training worker has stopped (Fatal)" in (running_worker.problem() or "")


@SQLITE_ONLY
def test_stale_jobs_are_recovered_while_the_loop_is_busy(
    settings: StorageSettings, factory: SessionFactory, running_worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recovery used to run only between jobs in the worker's loop: a worker busy training (or a
    dead loop) left other workers' lost jobs `running`."""
    settings.job_stale_s = 4  # recovery looks every second
    busy, release = threading.Event(), threading.Event()

    def long_job(_job_id: str) -> int:
        busy.set()
        release.wait(30)
        return 0

    monkeypatch.setattr(running_worker, "run_one", long_job)
    mine = queue(factory)
    running_worker.start_thread()
    assert busy.wait(10) and job(factory, mine).worker == running_worker.id
    lost = queue(factory)
    assert jobs.claim_next(factory, "a-worker-that-died") == lost
    age_heartbeat(factory, lost, 60)
    try:
        wait_until(lambda: job(factory, lost).status == JobStatus.QUEUED, timeout=5, what="recovery")
    finally:
        release.set()


@SQLITE_ONLY
def test_recovery_waits_a_stale_window_after_its_own_outage(
    settings: StorageSettings, factory: SessionFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the database is away nobody can heartbeat: right after it comes back, every running
    job looks stale, though its worker is alive and about to heartbeat again."""
    settings.job_stale_s = 1.0
    recovery = StaleRecovery(settings, factory)
    job_id = queue(factory)
    jobs.claim_next(factory, "w1")
    with monkeypatch.context() as m:
        m.setattr(jobs, "recover_stale", unreachable)
        assert recovery.run_once() == []
    age_heartbeat(factory, job_id, 60)
    assert recovery.run_once() == []  # too soon after its own outage to call anyone stale
    time.sleep(1.1)
    assert recovery.run_once() == [job_id]


def no_space(*_args: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def checkpoint_dirs(settings: StorageSettings) -> list[Path]:
    root = settings.data_dir / "checkpoints"
    return list(root.glob("*/*")) if root.exists() else []


@SQLITE_ONLY
def test_a_full_disk_fails_the_job_clearly_and_keeps_nothing(
    settings: StorageSettings, factory: SessionFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = queue(factory)
    jobs.claim(factory, job_id, "w1")
    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(StorageFull) as caught:
        run_job(factory, settings, job_id, worker="w1")
    monkeypatch.undo()
    record_failure(factory, settings, job_id, caught.value, "w1")
    error = job(factory, job_id).error or ""
    assert error.startswith(
        f"StorageFull: no space left on the server's disk for the checkpoint checkpoints/toy/{job_id}"
    )
    assert str(settings.data_dir.parent) not in error
    assert checkpoint_dirs(settings) == []
    assert not [p for p in settings.data_dir.rglob("*") if p.name.endswith(".tmp")]


def test_a_jobs_error_names_paths_relative_to_the_data_directory(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    missing = data_dir.resolve() / "checkpoints" / "m" / "j" / "config.json"
    error = job_error(FileNotFoundError(errno.ENOENT, "No such file or directory", str(missing)), data_dir)
    assert error == "FileNotFoundError: [Errno 2] No such file or directory: 'checkpoints/m/j/config.json'"


@SQLITE_ONLY
def test_a_registration_whose_commit_went_through_is_not_repeated(
    settings: StorageSettings, factory: SessionFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection drops after the commit, before its acknowledgement: the retry must find
    the version registered, and neither fail the job nor delete the checkpoint."""
    job_id = queue(factory)
    jobs.claim(factory, job_id, "w1")
    committed: list[object] = []

    def commit_then_drop(factory_: SessionFactory, fn: Callable[[Any], Any], attempts: int = 5) -> Any:
        result = in_transaction(factory_, fn, attempts)
        if not committed:
            committed.append(result)
            unreachable()
        return result

    monkeypatch.setattr(runner, "in_transaction", commit_then_drop)
    assert run_job(factory, settings, job_id, worker="w1") == 1
    with factory() as s:
        versions = list(s.scalars(select(VersionRow)))
    assert [v.number for v in versions] == [1] and committed == [1]
    assert (settings.data_dir / versions[0].path / "model.safetensors").is_file()


def test_a_file_size_limit_fails_a_real_training_process_cleanly(fresh_postgres_url: str, tmp_path: Path) -> None:
    """The kernel refuses the checkpoint's write (RLIMIT_FSIZE: EFBIG, as a full disk would
    refuse it with ENOSPC). On PostgreSQL, so that the database itself writes no local file."""
    from training.store.db import create_db_engine, create_session_factory
    from training.store.migrate import upgrade_to_head

    upgrade_to_head(fresh_postgres_url)
    engine = create_db_engine(fresh_postgres_url)
    factory = create_session_factory(engine)
    data_dir = tmp_path / "data"
    try:
        job_id = queue(factory)
        jobs.claim(factory, job_id, "cli")
        env = {k: v for k, v in os.environ.items() if not k.startswith("JEPA_")}
        env |= {"JEPA_DATA_DIR": str(data_dir), "JEPA_DATABASE_URL": fresh_postgres_url, "JEPA_LOG_FORMAT": "text"}
        result = subprocess.run(
            [sys.executable, "-m", "training.execution.runner", job_id],
            env=env,
            cwd=Path(__file__).parents[2],
            capture_output=True,
            text=True,
            timeout=120,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, resource.RLIM_INFINITY)),
        )
        assert result.returncode == 1, result.stderr
        failed = job(factory, job_id)
        assert failed.status == JobStatus.FAILED
        assert (failed.error or "").startswith(
            f"StorageFull: no space left on the server's disk for the checkpoint checkpoints/toy/{job_id}"
        )
        assert str(tmp_path) not in (failed.error or "")
        assert str(data_dir) in result.stderr  # the log keeps the full path
        assert not (data_dir / "checkpoints" / "toy" / job_id).exists()
        assert not [p for p in data_dir.rglob("*") if p.is_file()]
    finally:
        engine.dispose()


def test_the_training_process_rebuilds_every_storage_setting_of_its_worker(tmp_path: Path, monkeypatch) -> None:
    # The child's environment was once listed by hand and missed artifact_store, device and
    # job_max_attempts: a worker built with the database store trained children on the file store.
    monkeypatch.chdir(tmp_path)
    parent = StorageSettings(
        data_dir=Path("relative"),
        artifact_store="database",
        device="cpu",
        job_max_attempts=7,
        train_memory_mb=123,
        retain_jobs_days=2.5,
        log_format="text",
        db_retry_s=4.5,
    )
    inherited = {"PATH": "/usr/bin", "JEPA_RAY_ADDRESS": "10.0.0.1:6379", "JEPA_DEVICE": "cuda"}
    env = parent.process_env(inherited)
    resolved = {"data_dir": (tmp_path / "relative").resolve(), "database_url": parent.resolved_database_url}
    assert env["PATH"] == "/usr/bin"
    assert "JEPA_RAY_ADDRESS" not in env  # unset in the parent: the inherited value must not reach the child
    assert [env[name] for name in THREAD_POOL_VARIABLES] == ["1"] * 3  # train_threads, for numpy's pools too
    assert (
        parent.model_copy(update={"train_threads": 4}).process_env({"OMP_NUM_THREADS": "16"})["OMP_NUM_THREADS"] == "4"
    )

    for name in [name for name in os.environ if name.upper().startswith("JEPA_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir("/")  # the child runs elsewhere: a relative data_dir must not move
    child = StorageSettings()
    assert child.model_dump() == {**parent.model_dump(), **resolved}


@SQLITE_ONLY
def test_the_training_process_holds_a_job_to_its_own_max_seq_len(
    settings: StorageSettings, factory: SessionFactory
) -> None:
    # A step model, whose crop is a length. Queued without the limit (as a job queued under a larger
    # JEPA_MAX_SEQ_LEN would be), it is checked again where it trains, against the setting the
    # worker handed its training process.
    job_id = queue(factory, objective="steps", pooling="mean", max_crop_len=300)
    jobs.claim(factory, job_id, "w1")
    with pytest.raises(InvalidInput, match=r"max_crop_len must be at most 256 \(JEPA_MAX_SEQ_LEN\), got 300"):
        run_job(factory, settings.model_copy(update={"max_seq_len": 256}), job_id, worker="w1")
