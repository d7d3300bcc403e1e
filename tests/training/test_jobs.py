import threading
from datetime import timedelta
from pathlib import Path

from sqlalchemy import update

from tests.factories import add_version, tiny_spec
from training import jobs
from training.db import SessionFactory, in_transaction
from training.models import JobRow, JobStatus, utcnow


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


def test_a_job_that_left_running_cannot_succeed(factory: SessionFactory) -> None:
    job_id = enqueue(factory)
    jobs.claim_next(factory, "w1")
    assert jobs.requeue(factory, job_id, "shutting down")
    assert not in_transaction(factory, lambda s: jobs.mark_succeeded(s, job_id, {}))
    assert status(factory, job_id).status == JobStatus.QUEUED


def test_the_default_model_is_queued_only_when_nothing_serves_it(factory: SessionFactory, tmp_path: Path) -> None:
    first = in_transaction(factory, lambda s: jobs.enqueue_unless_served(s, tiny_spec("m")))
    assert first is not None
    assert in_transaction(factory, lambda s: jobs.enqueue_unless_served(s, tiny_spec("m"))) is None  # one on the way
    with factory.begin() as s:
        add_version(s, tmp_path, "served")
    assert in_transaction(factory, lambda s: jobs.enqueue_unless_served(s, tiny_spec("served"))) is None
