import sqlite3
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from tests.e2e.proxy import TCPProxy
from tests.factories import add_version, random_sequences, stored_dataset, tiny_spec
from training.errors import Conflict, JobNotFound, Overloaded
from training.execution import jobs
from training.execution.spec import TrainingSpec
from training.store.db import (
    PG_IDLE_IN_TRANSACTION_S,
    DatabaseUnreachable,
    SessionFactory,
    create_db_engine,
    create_session_factory,
    in_transaction,
    is_contention,
    is_unreachable,
    retry_unreachable,
)
from training.store.migrate import upgrade_to_head
from training.store.models import JobRow, JobStatus, utcnow


def enqueue(factory: SessionFactory, model: str = "toy") -> str:
    return in_transaction(factory, lambda s: jobs.enqueue(s, tiny_spec(model)).id)


def status(factory: SessionFactory, job_id: str) -> JobRow:
    with factory() as s:
        return jobs.get_job(s, job_id)


def test_jobs_are_claimed_oldest_first_and_only_once(factory: SessionFactory) -> None:
    first, second = enqueue(factory), enqueue(factory)
    assert jobs.claim_next(factory, "w1") == first
    assert jobs.claim_next(factory, "w2") == second
    assert jobs.claim_next(factory, "w3") is None
    job = status(factory, first)
    assert (job.status, job.worker, job.attempts) == (JobStatus.RUNNING, "w1", 1)
    assert job.started_at is not None


def test_concurrent_workers_never_share_a_job(factory: SessionFactory) -> None:
    queued = {enqueue(factory) for _ in range(12)}
    claimed: list[str] = []
    lock = threading.Lock()

    def work(name: str) -> None:
        while (job_id := jobs.claim_next(factory, name)) is not None:
            with lock:
                claimed.append(job_id)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(queued)


def age_heartbeat(factory: SessionFactory, job_id: str, seconds: float) -> None:
    in_transaction(
        factory,
        lambda s: s.execute(
            update(JobRow).where(JobRow.id == job_id).values(heartbeat_at=utcnow() - timedelta(seconds=seconds))
        ),
    )


def test_a_stale_job_is_requeued_then_failed_after_max_attempts(factory: SessionFactory) -> None:
    job_id = enqueue(factory)
    assert jobs.claim_next(factory, "w1") == job_id
    assert jobs.recover_stale(factory, stale_s=30, max_attempts=2) == []  # fresh heartbeat: untouched
    age_heartbeat(factory, job_id, 60)
    assert jobs.recover_stale(factory, stale_s=30, max_attempts=2) == [job_id]
    job = status(factory, job_id)
    assert job.status == JobStatus.QUEUED and "stopped heartbeating" in (job.error or "")

    assert jobs.claim_next(factory, "w2") == job_id
    age_heartbeat(factory, job_id, 60)
    jobs.recover_stale(factory, stale_s=30, max_attempts=2)
    job = status(factory, job_id)
    assert (job.status, job.attempts) == (JobStatus.FAILED, 2) and job.finished_at is not None


def test_recovery_skips_a_job_row_a_lost_transaction_still_locks(fresh_postgres_url: str) -> None:
    # A worker cut off mid-transaction leaves its row locked until the server ends that session
    # (PG_IDLE_IN_TRANSACTION_S): recovery must not wait on it, nor hold up the other stale jobs.
    upgrade_to_head(fresh_postgres_url)
    engine = create_db_engine(fresh_postgres_url)
    factory = create_session_factory(engine)
    locked, free = enqueue(factory), enqueue(factory)
    for job_id, worker in ((locked, "w1"), (free, "w2")):
        jobs.claim(factory, job_id, worker)
        age_heartbeat(factory, job_id, 60)
    with engine.connect() as cut_off:
        cut_off.execute(update(JobRow).where(JobRow.id == locked).values(progress={"epoch": 3}))  # never committed
        started = time.monotonic()
        assert jobs.recover_stale(factory, stale_s=30, max_attempts=3) == [free]
        assert time.monotonic() - started < 5
        cut_off.rollback()
    assert jobs.recover_stale(factory, stale_s=30, max_attempts=3) == [locked]
    engine.dispose()


def test_postgres_sessions_end_a_transaction_left_idle(postgres_url: str) -> None:
    engine = create_db_engine(postgres_url)
    with engine.connect() as conn:
        assert conn.execute(text("SHOW idle_in_transaction_session_timeout")).scalar() == f"{PG_IDLE_IN_TRANSACTION_S}s"
    engine.dispose()


def test_a_lost_run_is_requeued_then_failed_by_the_stale_jobs_rule(factory: SessionFactory) -> None:
    job_id = enqueue(factory)
    jobs.claim_next(factory, "w1")
    assert jobs.run_lost(factory, job_id, "Ray worker of rank 1 died", "w2", max_attempts=2) is None  # not w2's
    assert jobs.run_lost(factory, job_id, "Ray worker of rank 1 died", "w1", max_attempts=2) == JobStatus.QUEUED
    job = status(factory, job_id)
    assert (job.status, job.error, job.worker) == (JobStatus.QUEUED, "Ray worker of rank 1 died", None)

    jobs.claim_next(factory, "w2")
    assert jobs.run_lost(factory, job_id, "cannot reach the Ray cluster", "w2", max_attempts=2) == JobStatus.FAILED
    job = status(factory, job_id)
    assert (job.status, job.attempts, job.error) == (JobStatus.FAILED, 2, "cannot reach the Ray cluster")
    assert job.finished_at is not None
    assert jobs.run_lost(factory, job_id, "again", "w2", max_attempts=2) is None  # settled once


def test_a_job_that_left_running_cannot_succeed(factory: SessionFactory) -> None:
    job_id = enqueue(factory)
    jobs.claim_next(factory, "w1")
    assert jobs.requeue(factory, job_id, "shutting down")
    assert not in_transaction(factory, lambda s: jobs.mark_succeeded(s, job_id, {}))
    assert status(factory, job_id).status == JobStatus.QUEUED


def test_enqueue_takes_a_spec_already_resolved_against_its_stored_dataset(
    factory: SessionFactory, tmp_path: Path
) -> None:
    row = stored_dataset(factory, tmp_path, random_sequences([12, 16], dim=3))
    spec = TrainingSpec.model_validate({"model": "m", "dataset": {"kind": "stored", "id": row.id}})
    with pytest.raises(ValueError, match="has not been resolved"):  # POST /train resolves once, before enqueue
        in_transaction(factory, lambda s: jobs.enqueue(s, spec))
    with factory.begin() as s:
        resolved = jobs.resolve_spec(s, spec)
        job = jobs.enqueue(s, resolved)
        assert job.spec == resolved.model_dump(mode="json") and job.spec["dataset"]["input_dim"] == 3


def test_the_default_model_is_queued_only_when_nothing_serves_it(factory: SessionFactory, tmp_path: Path) -> None:
    first = in_transaction(factory, lambda s: jobs.enqueue_unless_served(s, tiny_spec("m")))
    assert first is not None
    assert in_transaction(factory, lambda s: jobs.enqueue_unless_served(s, tiny_spec("m"))) is None  # one on the way
    with factory.begin() as s:
        add_version(s, tmp_path, "served")
    assert in_transaction(factory, lambda s: jobs.enqueue_unless_served(s, tiny_spec("served"))) is None


def progress(epoch: int, loss: float = 1.0) -> dict:
    return {"epoch": epoch, "epochs": 3, "loss": loss, "metrics": {"rankme": 2.0}}


def test_a_cancelled_job_stops_counting_and_cannot_succeed(factory: SessionFactory) -> None:
    queued, running = enqueue(factory), enqueue(factory)
    assert jobs.cancel(factory, queued).status == JobStatus.CANCELLED
    assert jobs.claim_next(factory, "w1") == running  # the cancelled job is never claimed
    assert jobs.heartbeat(factory, running, "w1") and jobs.record_epoch(factory, running, "w1", progress(1), 0.1)
    job = jobs.cancel(factory, running)
    assert job.status == JobStatus.CANCELLED and job.finished_at is not None
    assert not jobs.heartbeat(factory, running, "w1")
    assert not jobs.record_epoch(factory, running, "w1", progress(2), 0.2)
    assert not in_transaction(factory, lambda s: jobs.mark_succeeded(s, running, {}, "w1"))
    with pytest.raises(Conflict, match="already cancelled"):
        jobs.cancel(factory, running)
    with pytest.raises(JobNotFound):
        jobs.cancel(factory, "nope")


def test_only_the_claiming_worker_may_touch_a_running_job(factory: SessionFactory) -> None:
    job_id = enqueue(factory)
    jobs.claim_next(factory, "w1")
    assert not jobs.heartbeat(factory, job_id, "w2")
    assert not jobs.mark_failed(factory, job_id, "not mine", "w2")
    age_heartbeat(factory, job_id, 60)
    jobs.recover_stale(factory, stale_s=30, max_attempts=3)
    assert jobs.claim_next(factory, "w2") == job_id
    # The first worker's training process, still running somewhere, can neither report nor register.
    assert not jobs.record_epoch(factory, job_id, "w1", progress(1), 0.1)
    assert not in_transaction(factory, lambda s: jobs.mark_succeeded(s, job_id, {}, "w1"))
    assert in_transaction(factory, lambda s: jobs.mark_succeeded(s, job_id, {}, "w2"))


def test_the_epoch_history_is_the_latest_attempts(factory: SessionFactory) -> None:
    job_id = enqueue(factory)
    jobs.claim_next(factory, "w1")
    for epoch in (1, 2):
        assert jobs.record_epoch(factory, job_id, "w1", progress(epoch, loss=5.0 - epoch), epoch * 0.1)
    assert jobs.requeue(factory, job_id, "restart", "w1")
    jobs.claim_next(factory, "w2")
    assert jobs.record_epoch(factory, job_id, "w2", progress(1, loss=9.0), 0.1)
    with factory() as s:
        history = jobs.epoch_history(s, job_id)
        assert [(e.attempt, e.epoch, e.loss, e.metrics) for e in history] == [(2, 1, 9.0, {"rankme": 2.0})]
        assert jobs.get_job(s, job_id).progress["loss"] == 9.0


def test_the_queue_cap_holds_under_concurrent_enqueues(factory: SessionFactory) -> None:
    """60 concurrent POST /train once queued 17 jobs past a cap of 3: counting and inserting
    must be one step."""
    cap, callers = 3, 12
    barrier = threading.Barrier(callers)
    outcomes: list[str] = []

    def post_train() -> None:
        with factory() as session:  # as service/routes/train.py does: enqueue, then commit
            barrier.wait()
            try:
                jobs.enqueue(session, tiny_spec(), max_queued=cap)
                session.commit()
                outcomes.append("queued")
            except Overloaded:
                outcomes.append("refused")

    threads = [threading.Thread(target=post_train) for _ in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    with factory() as s:
        queued = jobs.count_by_status(s).get(JobStatus.QUEUED, 0)
    assert queued == cap and sorted(outcomes) == ["queued"] * cap + ["refused"] * (callers - cap)


def test_an_epoch_recorded_twice_is_stored_once(factory: SessionFactory) -> None:
    # A retry after a commit whose acknowledgement was lost writes the same epoch again.
    job_id = enqueue(factory)
    jobs.claim_next(factory, "w1")
    assert jobs.record_epoch(factory, job_id, "w1", progress(1, loss=3.0), 0.1)
    assert jobs.record_epoch(factory, job_id, "w1", progress(1, loss=3.0), 0.1)
    with factory() as s:
        assert [(e.epoch, e.loss) for e in jobs.epoch_history(s, job_id)] == [(1, 3.0)]


def test_a_jobs_error_carries_no_server_paths(factory: SessionFactory, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    message = f"CheckpointCorrupt: {data_dir.resolve()}/checkpoints/m/j/config.json: unreadable"
    assert jobs.without_server_paths(message, data_dir) == "CheckpointCorrupt: checkpoints/m/j/config.json: unreadable"
    assert jobs.without_server_paths("loss became nan at epoch 3/10; see http://host/a/b") == (
        "loss became nan at epoch 3/10; see http://host/a/b"
    )
    job_id = enqueue(factory)
    jobs.claim_next(factory, "w1")
    # Whoever fails a job with a server path in its message (here without saying where the data
    # directory is), the client sees no more than the file's name.
    assert jobs.mark_failed(factory, job_id, f"OSError: cannot read '{tmp_path}/x/weights.bin'", "w1")
    error = status(factory, job_id).error or ""
    assert str(tmp_path) not in error and "weights.bin" in error


def unreachable() -> OperationalError:
    return OperationalError("SELECT 1", {}, Exception("connection refused"))


def test_only_contention_is_retried_within_a_transaction(factory: SessionFactory) -> None:
    calls: list[int] = []

    def away(_session: object) -> None:
        calls.append(1)
        raise unreachable()

    with pytest.raises(OperationalError):
        in_transaction(factory, away)
    assert calls == [1]  # an unreachable database is retry_unreachable's business, over seconds
    locked = OperationalError("UPDATE jobs", {}, sqlite3.OperationalError("database is locked"))
    assert is_contention(locked) and not is_unreachable(locked)
    assert is_unreachable(unreachable()) and not is_contention(unreachable())
    full = OperationalError("INSERT", {}, sqlite3.OperationalError("database or disk is full"))
    assert is_unreachable(full)
    assert not is_unreachable(OperationalError("SELECT", {}, sqlite3.OperationalError("no such table: jobs")))


def test_retrying_gives_up_after_its_window_without_naming_the_host() -> None:
    calls: list[float] = []

    def away() -> None:
        calls.append(time.monotonic())
        raise OperationalError("SELECT 1", {}, Exception('connection to server at "db.internal" failed'))

    with pytest.raises(DatabaseUnreachable, match="unreachable for 1 s .* while testing") as caught:
        retry_unreachable(away, 1.0, "testing")
    assert "db.internal" not in str(caught.value)
    assert 3 <= len(calls) <= 6 and calls[-1] - calls[0] >= 0.9  # 0.25, 0.5, then what is left
    with pytest.raises(ValueError):  # anything else is not retried at all
        retry_unreachable(lambda: int("x"), 5.0, "testing")


def test_a_write_outlasts_a_database_outage(fresh_postgres_url: str) -> None:
    """The job's writes wait for PostgreSQL to come back instead of failing within a second."""
    url = make_url(fresh_postgres_url)
    upgrade_to_head(fresh_postgres_url)
    proxy = TCPProxy(url.host or "127.0.0.1", url.port or 5432)
    proxy.restore()
    engine = create_db_engine(url.set(host="127.0.0.1", port=proxy.port).render_as_string(False))
    factory = create_session_factory(engine)
    try:
        job_id = enqueue(factory)
        assert jobs.claim_next(factory, "w1") == job_id
        proxy.cut()
        threading.Timer(3.0, proxy.restore).start()
        started = time.monotonic()
        assert retry_unreachable(lambda: jobs.record_epoch(factory, job_id, "w1", progress(1), 0.1), 30, "recording")
        assert retry_unreachable(lambda: jobs.heartbeat(factory, job_id, "w1"), 30, "heartbeating")
        assert 2.5 < time.monotonic() - started < 15
        assert status(factory, job_id).progress["epoch"] == 1
    finally:
        proxy.cut()
        engine.dispose()
