import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from sqlalchemy import select, update

from jepa_model import load_checkpoint
from jepa_model.checkpoint import WEIGHTS_FILE, sha256_file
from tests.factories import TINY_CONFIG, run_to_a_version, stored_dataset, tiny_spec
from training.execution import jobs
from training.execution.runner import JobLost, run_job
from training.execution.spec import TrainingSpec
from training.settings import StorageSettings
from training.store.db import SessionFactory, in_transaction
from training.store.models import JobRow, JobStatus, VersionRow
from training.worker import Worker


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> StorageSettings:
    return StorageSettings(data_dir=tmp_path / "data", database_url=database_url)


def queue(factory: SessionFactory, **config: object) -> str:
    return in_transaction(factory, lambda s: jobs.enqueue(s, tiny_spec(**config)).id)


def versions(factory: SessionFactory) -> list[VersionRow]:
    with factory() as s:
        return list(s.scalars(select(VersionRow)))


def fails_in_a_worker(factory: SessionFactory, settings: StorageSettings, job_id: str) -> str:
    """Run the queued job in a worker's training process, which must fail it and register nothing;
    the job's error."""
    worker = Worker(settings, factory, heartbeat_s=0.2)
    jobs.claim_next(factory, worker.id)
    assert worker.run_one(job_id) == 1
    with factory() as s:
        job = jobs.get_job(s, job_id)
    assert job.status == JobStatus.FAILED
    assert versions(factory) == []
    return job.error or ""


def test_a_job_trains_checkpoints_and_registers(factory: SessionFactory, settings: StorageSettings) -> None:
    job_id = queue(factory)
    jobs.claim(factory, job_id, "test")
    seen: list[dict] = []
    number = run_job(factory, settings, job_id, on_progress=seen.append)
    assert number == 1
    assert [p["epoch"] for p in seen] == [1, 2]
    with factory() as s:
        job = jobs.get_job(s, job_id)
        version = job.version
    assert job.status == JobStatus.SUCCEEDED and job.progress["epoch"] == 2
    assert version is not None and version.job_id == job_id
    assert set(version.metrics) >= {
        "final_loss",
        "train_seconds",
        "cosine",
        "retrieval",
        "retrieval_ratio",
        "rankme",
        "probe_kind_acc",
        "surprise_percentiles",
    }
    calibration = version.metrics["surprise_percentiles"]  # POST /score's percentiles come from it
    assert len(calibration) == 101 and calibration == sorted(calibration) and 0 <= calibration[0] <= 2
    weights = settings.data_dir / version.path / WEIGHTS_FILE
    assert sha256_file(weights) == version.sha256
    loaded = load_checkpoint(settings.data_dir / version.path, version.sha256)
    assert loaded.model_config.hidden_dim == 16 and loaded.meta["preset"] == "trajectory"  # what "default" picked


def test_the_worker_trains_in_a_child_process(factory: SessionFactory, settings: StorageSettings) -> None:
    job_id = queue(factory)
    worker = Worker(settings, factory, heartbeat_s=0.2)
    assert jobs.claim_next(factory, worker.id) == job_id
    assert worker.run_one(job_id) == 0
    with factory() as s:
        job = jobs.get_job(s, job_id)
        assert job.status == JobStatus.SUCCEEDED and job.version is not None


def test_a_data_parallel_job_claimed_by_a_local_worker_fails_saying_what_it_needs(
    factory: SessionFactory, settings: StorageSettings
) -> None:
    assert "JEPA_EXECUTOR=ray" in fails_in_a_worker(factory, settings, queue(factory, workers=2))


def test_a_failing_job_is_marked_failed_and_registers_nothing(
    factory: SessionFactory, settings: StorageSettings
) -> None:
    job_id = queue(factory)
    # A spec that passed validation once but cannot be trained now (e.g. written by an older release).
    in_transaction(
        factory,
        lambda s: s.execute(
            update(JobRow)
            .where(JobRow.id == job_id)
            .values(spec={**tiny_spec().model_dump(), "dataset": {"kind": "x"}})
        ),
    )
    assert "ValidationError" in fails_in_a_worker(factory, settings, job_id)


def test_a_killed_training_process_fails_the_job_and_registers_nothing(
    factory: SessionFactory, settings: StorageSettings
) -> None:
    job_id = queue(factory, epochs=10_000)
    worker = Worker(settings, factory, heartbeat_s=0.2)
    jobs.claim_next(factory, worker.id)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(worker.run_one(job_id)))
    thread.start()
    pid = wait_for_child(job_id)
    os.kill(pid, signal.SIGKILL)
    thread.join(30)
    assert result == [-signal.SIGKILL]
    with factory() as s:
        job = jobs.get_job(s, job_id)
    assert job.status == JobStatus.FAILED and "exited with code -9" in (job.error or "")
    assert versions(factory) == []


def test_a_stopping_worker_gives_its_job_back(factory: SessionFactory, settings: StorageSettings) -> None:
    job_id = queue(factory, epochs=10_000)
    worker = Worker(settings, factory, heartbeat_s=0.2)
    jobs.claim_next(factory, worker.id)
    thread = threading.Thread(target=worker.run_one, args=(job_id,))
    thread.start()
    wait_for_child(job_id)
    worker.stop()
    thread.join(30)
    with factory() as s:
        job = jobs.get_job(s, job_id)
    assert job.status == JobStatus.QUEUED and job.worker is None
    assert versions(factory) == []


def wait_for_child(job_id: str, timeout: float = 30) -> int:
    """The pid of the `training.execution.runner` process for `job_id`, once it has started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"training.execution.runner" in cmdline and job_id.encode() in cmdline:
                return int(entry.name)
        time.sleep(0.05)
    raise TimeoutError(f"no training process for job {job_id}")


@pytest.mark.parametrize("dim", [1, 5, 64])
def test_a_stored_dataset_of_any_width_trains_and_serves_that_width(
    factory: SessionFactory, settings: StorageSettings, dim: int
) -> None:
    rng = np.random.default_rng(dim)
    sequences = [np.cumsum(rng.normal(size=(length, dim)), axis=0) for length in rng.integers(8, 14, size=40)]
    row = stored_dataset(factory, settings.data_dir, sequences)
    spec = TrainingSpec.model_validate({"model": f"walk{dim}", "dataset": {"id": row.id}, "config": TINY_CONFIG})
    job_id = in_transaction(factory, lambda s: jobs.enqueue(s, jobs.resolve_spec(s, spec)).id)
    version = run_to_a_version(factory, settings, job_id)
    assert version.metrics["held_out_sequences"] == 4 and "retrieval" in version.metrics
    assert "oracle_retrieval" not in version.metrics  # users' data has no noise-free future
    model = load_checkpoint(settings.data_dir / version.path, version.sha256).model
    assert model.config.input_dim == dim
    assert model.encode(torch.randn(3, 9, dim)).shape == (3, TINY_CONFIG["repr_dim"])


def test_a_job_cancelled_mid_training_stops_and_leaves_no_checkpoint(
    factory: SessionFactory, settings: StorageSettings
) -> None:
    job_id = queue(factory, epochs=10_000)
    worker = Worker(settings, factory, heartbeat_s=0.2)
    jobs.claim_next(factory, worker.id)
    thread = threading.Thread(target=worker.run_one, args=(job_id,))
    thread.start()
    pid = wait_for_child(job_id)
    jobs.cancel(factory, job_id)
    started = time.monotonic()
    thread.join(30)
    assert not thread.is_alive() and time.monotonic() - started < 5
    assert not Path(f"/proc/{pid}").exists() or b"zombie" in Path(f"/proc/{pid}/status").read_bytes().lower()
    with factory() as s:
        assert jobs.get_job(s, job_id).status == JobStatus.CANCELLED
    assert versions(factory) == []
    assert not (settings.data_dir / "checkpoints" / "toy" / job_id).exists()


def test_a_runner_whose_job_was_cancelled_registers_nothing(factory: SessionFactory, settings: StorageSettings) -> None:
    job_id = queue(factory, epochs=3)
    jobs.claim(factory, job_id, "w1")

    def cancel_after_first_epoch(progress: dict) -> None:
        if progress["epoch"] == 1:
            jobs.cancel(factory, job_id)

    with pytest.raises(JobLost):
        run_job(factory, settings, job_id, on_progress=cancel_after_first_epoch, worker="w1")
    assert versions(factory) == []
    assert not (settings.data_dir / "checkpoints" / "toy" / job_id).exists()


def test_metrics_read_at_most_the_held_out_count_of_a_long_series_pieces() -> None:
    import numpy as np

    from jepa_model import SequenceDataset
    from training.execution.runner import HELD_OUT_SEQUENCES, evaluation_subset

    pieces = SequenceDataset([np.full((4, 1), i, np.float32) for i in range(3000)])
    subset = evaluation_subset(pieces)
    assert len(subset) == HELD_OUT_SEQUENCES
    firsts = [float(x[0, 0]) for x in subset.data]
    assert firsts[0] == 0 and firsts[-1] == 2999 and firsts == sorted(set(firsts))  # spread, no repeats
    few = SequenceDataset([np.zeros((4, 1), np.float32)] * 10)
    assert evaluation_subset(few) is few
