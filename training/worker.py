"""The worker loop: claim a queued job, train it in a child process, heartbeat while it runs.

`jepa worker` runs this in the foreground; `jepa serve` runs one in a background thread (the
embedded worker) so the one-command setup still trains. Either way the training itself happens
in a separate process.

The loop outlives any error: it logs it, waits (doubling, capped) and polls again, and keeps how
long it has been failing so that /ready can say so. Stale-job recovery is not part of the loop:
`StaleRecovery` runs on a thread of its own, so a worker busy with a long job, or failing at every
poll, still re-queues the jobs of workers that died. `jepa worker` starts one beside its loop;
`jepa serve` starts one whether or not it embeds a worker, so the API re-queues (or fails) lost
jobs even when every worker is gone.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time

from training import lifecycle
from training.execution import jobs
from training.execution.forkserver import TrainingProcess, start_training_process
from training.execution.wakeups import Wakeups
from training.settings import StorageSettings
from training.store.db import SessionFactory, in_transaction, is_unreachable, retry_unreachable
from training.store.models import JobStatus

log = logging.getLogger("jepa.worker")

# After a failed poll the loop waits this long, doubling with each further failure, up to the cap.
LOOP_FIRST_BACKOFF_S = 0.5
LOOP_MAX_BACKOFF_S = 10.0
# Stale recovery looks this often at most (more often when job_stale_s is short).
RECOVERY_MAX_PERIOD_S = 5.0


def _stop(child: TrainingProcess) -> None:
    child.terminate()
    try:
        child.wait(timeout=10)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def backoff_s(failures: int) -> float:
    """How long the loop waits after its `failures`-th failure in a row."""
    return min(LOOP_FIRST_BACKOFF_S * 2 ** min(failures - 1, 16), LOOP_MAX_BACKOFF_S)


class StaleRecovery:
    """Re-queues running jobs whose worker stopped heartbeating (fails those out of attempts).

    After this process could not reach the database, it waits a whole job_stale_s before
    recovering again: nobody could heartbeat during the outage, and the workers that survived it
    need that long to be heard from before their jobs may be called stale.
    """

    def __init__(
        self, settings: StorageSettings, factory: SessionFactory, stop_event: threading.Event | None = None
    ) -> None:
        self.settings = settings
        self.factory = factory
        self.stop_event = stop_event or threading.Event()
        self.period_s = min(settings.job_stale_s / 4, RECOVERY_MAX_PERIOD_S)
        self.failed_at: float | None = None

    def run_once(self) -> list[str]:
        """Recover what is stale now; returns the ids of the jobs re-queued or failed."""
        if self.failed_at is not None and time.monotonic() - self.failed_at < self.settings.job_stale_s:
            return []
        try:
            touched = jobs.recover_stale(self.factory, self.settings.job_stale_s, self.settings.job_max_attempts)
        except Exception as exc:  # noqa: BLE001 - the next round tries again
            self.failed_at = time.monotonic()
            log.warning("stale-job recovery failed (%s)", type(exc).__name__, exc_info=not is_unreachable(exc))
            return []
        if touched:
            log.info("re-queued or failed jobs whose worker stopped heartbeating: %s", ", ".join(touched))
        if self.settings.retain_jobs_days is not None:
            self._expire(self.settings.retain_jobs_days)
        return touched

    def _expire(self, retain_days: float) -> None:
        try:
            expired = in_transaction(self.factory, lambda s: lifecycle.expire_jobs(s, retain_days))
        except Exception as exc:  # noqa: BLE001 - the next round tries again
            log.warning("expiring old jobs failed (%s)", type(exc).__name__, exc_info=not is_unreachable(exc))
            return
        if expired:
            log.info("deleted %d jobs finished over %g days ago (JEPA_RETAIN_JOBS_DAYS)", expired, retain_days)

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.run_once()
            self.stop_event.wait(self.period_s)

    def start_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="jepa-stale-recovery", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self.stop_event.set()


class Worker:
    def __init__(
        self,
        settings: StorageSettings,
        factory: SessionFactory,
        poll_s: float = 1.0,
        heartbeat_s: float = 1.0,
        recover: bool = True,
    ) -> None:
        self.settings = settings
        self.factory = factory
        self.poll_s = poll_s
        self.heartbeat_s = heartbeat_s
        # Whether `run` starts its own StaleRecovery (False where the process runs one already).
        self.recover = recover
        self.id = jobs.worker_id()
        self.stop_event = threading.Event()
        # PostgreSQL tells it of new jobs and cancels at once; polling every poll_s stays the fallback.
        self.wakeups = Wakeups(settings.resolved_database_url, self.stop_event)
        self.thread: threading.Thread | None = None
        # Since when (monotonic) the loop has failed with no answer from the queue in between, and
        # the last error's class: what /ready reports.
        self.failing_since: float | None = None
        self.last_error: str | None = None

    def run(self) -> None:
        log.info("worker %s polling %s", self.id, self.settings.safe_database_url)
        if self.recover:
            StaleRecovery(self.settings, self.factory, self.stop_event).start_thread()
        failures = 0
        try:
            while not self.stop_event.is_set():
                try:
                    self.poll_once()
                except Exception as exc:  # noqa: BLE001 - no error may end the loop: log, wait, go on
                    failures += 1
                    self._note_failure(exc)
                    wait = backoff_s(failures)
                    log.exception("worker %s failed (%d in a row); polling again in %.1f s", self.id, failures, wait)
                    self.stop_event.wait(wait)
                else:
                    failures, self.failing_since = 0, None
        except BaseException as exc:
            self.last_error = type(exc).__name__
            log.critical("worker %s stopped: %s", self.id, type(exc).__name__, exc_info=True)
            raise
        finally:
            self.wakeups.close()

    def poll_once(self) -> None:
        """Claim the oldest queued job and train it, or wait poll_s when there is none."""
        job_id = jobs.claim_next(self.factory, self.id)
        self.failing_since = None  # the queue answered: whatever failed before is behind us
        if job_id is None:
            self.wakeups.wait(self.poll_s)  # a new job or a re-queue ends it early, on PostgreSQL
        else:
            self.run_one(job_id)

    def _note_failure(self, exc: Exception) -> None:
        self.last_error = type(exc).__name__
        if self.failing_since is None:
            self.failing_since = time.monotonic()

    def problem(self) -> str | None:
        """Why this worker is not training jobs, or None: its thread has died, or its loop has
        been failing for longer than a database outage is ridden out (db_retry_s)."""
        if self.thread is not None and not self.thread.is_alive() and not self.stop_event.is_set():
            cause = self.last_error or "unknown error"
            return f"the training worker has stopped ({cause}); queued jobs will not run until the service restarts"
        since = self.failing_since
        if since is not None and (failing := time.monotonic() - since) > self.settings.db_retry_s:
            return f"the training worker has been failing for {failing:.0f} s ({self.last_error}); jobs are not running"
        return None

    def run_one(self, job_id: str) -> int:
        log.info("worker %s starts job %s", self.id, job_id)
        child = start_training_process(job_id, self.id, self.settings.process_env(os.environ))
        try:
            if not self._supervise(child, job_id):
                return child.returncode
        finally:
            if child.poll() is None:
                _stop(child)  # supervising it failed: never leave a training process unsupervised
        if child.returncode not in (0, 3):
            self._record_crash(job_id, child.returncode)
        log.info("job %s finished with exit code %s", job_id, child.returncode)
        return child.returncode

    def _supervise(self, child: TrainingProcess, job_id: str) -> bool:
        """Heartbeat until the child exits (True), or stop it early (False): when this worker
        stops, or when the job was cancelled or handed on to another worker."""
        while child.poll() is None:
            # Ends early on a notification (a cancel of this job among them) and when the child exits.
            self.wakeups.wait(self.heartbeat_s, done=lambda: child.poll() is not None)
            if self.stop_event.is_set():
                self._abandon(child, job_id)
                return False
            try:
                ours = jobs.heartbeat(self.factory, job_id, self.id) or child.poll() is not None
                ours = ours or self._finished_by_child(job_id)
            except Exception as exc:  # noqa: BLE001 - the job trains on; the next heartbeat tries again
                log.warning(
                    "heartbeat for job %s failed (%s)", job_id, type(exc).__name__, exc_info=not is_unreachable(exc)
                )
                continue
            if not ours:
                # Cancelled, or declared stale and handed on: stop training now, register nothing.
                log.info("job %s is no longer running for %s; stopping its training process", job_id, self.id)
                _stop(child)
                return False
        return True

    def _record_crash(self, job_id: str, returncode: int) -> None:
        """Fail the job of a training process that exited without recording why (killed, OOM, or
        the database was away when it tried). If the database stays away longer than db_retry_s,
        this raises, and stale recovery settles the job once the database is back."""
        error = f"training process exited with code {returncode}"
        retry_unreachable(
            lambda: jobs.mark_failed(self.factory, job_id, error, self.id),
            self.settings.db_retry_s,
            f"recording that job {job_id} failed",
            stop=self.stop_event,
        )

    def _finished_by_child(self, job_id: str) -> bool:
        """Whether the training process itself just finished the job (it is only exiting now)."""
        with self.factory() as session:
            job = jobs.get_job(session, job_id)
        return job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED) and job.worker == self.id

    def _abandon(self, child: TrainingProcess, job_id: str) -> None:
        """Shutting down mid-job: stop the child and give the job back to the queue."""
        _stop(child)
        try:
            jobs.requeue(self.factory, job_id, f"worker {self.id} shut down during the run", self.id)
        except Exception as exc:  # noqa: BLE001 - stopping must not wait for the database
            log.warning("could not re-queue job %s (%s); stale recovery will", job_id, type(exc).__name__)
            return
        log.info("job %s re-queued: worker %s is stopping", job_id, self.id)

    def start_thread(self) -> threading.Thread:
        self.thread = threading.Thread(target=self.run, name="jepa-worker", daemon=True)
        self.thread.start()
        return self.thread

    def stop(self) -> None:
        self.stop_event.set()
