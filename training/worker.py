"""The worker loop: claim a queued job, train it in a child process, heartbeat while it runs.

`jepa worker` runs this in the foreground; `jepa serve` runs one in a background thread (the
embedded worker) so the one-command setup still trains. Either way the training itself happens
in a separate process.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading

from training import jobs
from training.db import SessionFactory
from training.models import JobStatus
from training.settings import StorageSettings

log = logging.getLogger("jepa.worker")


def _stop(child: subprocess.Popen[bytes]) -> None:
    child.terminate()
    try:
        child.wait(timeout=10)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


class Worker:
    def __init__(
        self,
        settings: StorageSettings,
        factory: SessionFactory,
        poll_s: float = 1.0,
        heartbeat_s: float = 1.0,
    ) -> None:
        self.settings = settings
        self.factory = factory
        self.poll_s = poll_s
        self.heartbeat_s = heartbeat_s
        self.id = jobs.worker_id()
        self.stop_event = threading.Event()

    def run(self) -> None:
        log.info("worker %s polling %s", self.id, self.settings.safe_database_url)
        while not self.stop_event.is_set():
            try:
                jobs.recover_stale(self.factory, self.settings.job_stale_s, self.settings.job_max_attempts)
                job_id = jobs.claim_next(self.factory, self.id)
            except Exception:  # noqa: BLE001 - a database hiccup must not kill the loop
                log.exception("worker %s could not poll the queue", self.id)
                job_id = None
            if job_id is None:
                self.stop_event.wait(self.poll_s)
                continue
            self.run_one(job_id)

    def run_one(self, job_id: str) -> int:
        log.info("worker %s starts job %s", self.id, job_id)
        child = subprocess.Popen(
            [sys.executable, "-m", "training.runner", job_id, self.id],
            env={**os.environ, **self._child_env()},
        )
        while child.poll() is None:
            if self.stop_event.wait(self.heartbeat_s):
                return self._abandon(child, job_id)
            try:
                still_ours = jobs.heartbeat(self.factory, job_id, self.id)
            except Exception:  # noqa: BLE001
                log.exception("heartbeat for job %s failed", job_id)
                continue
            if not still_ours and child.poll() is None and not self._finished_by_child(job_id):
                # Cancelled, or declared stale and handed on: stop training now, register nothing.
                log.info("job %s is no longer running for %s; stopping its training process", job_id, self.id)
                _stop(child)
                return child.returncode
        if child.returncode not in (0, 3):
            # The runner records its own failures; this catches the ones it could not (killed, OOM).
            jobs.mark_failed(self.factory, job_id, f"training process exited with code {child.returncode}", self.id)
        log.info("job %s finished with exit code %s", job_id, child.returncode)
        return child.returncode

    def _finished_by_child(self, job_id: str) -> bool:
        """Whether the training process itself just finished the job (it is only exiting now)."""
        with self.factory() as session:
            job = jobs.get_job(session, job_id)
        return job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED) and job.worker == self.id

    def _abandon(self, child: subprocess.Popen[bytes], job_id: str) -> int:
        """Shutting down mid-job: stop the child and give the job back to the queue."""
        _stop(child)
        jobs.requeue(self.factory, job_id, f"worker {self.id} shut down during the run", self.id)
        log.info("job %s re-queued: worker %s is stopping", job_id, self.id)
        return child.returncode

    def _child_env(self) -> dict[str, str]:
        # The child rebuilds StorageSettings from the environment: hand it the resolved values.
        return {
            "JEPA_DATA_DIR": str(self.settings.data_dir.resolve()),
            "JEPA_DATABASE_URL": self.settings.resolved_database_url,
            "JEPA_TRAIN_THREADS": str(self.settings.train_threads),
            "JEPA_LOG_FORMAT": self.settings.log_format,
        }

    def start_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="jepa-worker", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self.stop_event.set()
