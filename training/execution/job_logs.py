"""A job's log lines in the registry database, so that GET /jobs/{id}/logs shows them from any
replica, whichever worker host ran the job.

The training process adds a `JobLogHandler` to its root logger. Records are buffered and written
in one insert every FLUSH_S and when the process exits, so logging never waits on the database.
Writing is best effort: while the database is unreachable, lines are dropped and counted (the
process's stderr still has them), and an attempt keeps at most MAX_LINES.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from training.store.db import SessionFactory
from training.store.models import JobLogRow, utcnow

FLUSH_S = 1.0
MAX_LINES = 5_000  # per attempt: a job logs a line or two per epoch
MAX_MESSAGE_CHARS = 8_192
# Loggers whose lines say nothing about the job, or would write to the database about writing.
QUIET = ("sqlalchemy", "alembic", "matplotlib", "PIL")


class JobLogHandler(logging.Handler):
    def __init__(self, factory: SessionFactory, job_id: str, attempt: int) -> None:
        super().__init__(logging.INFO)
        self.factory, self.job_id, self.attempt = factory, job_id, attempt
        self.pending: list[dict[str, Any]] = []
        self.kept = self.dropped = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._writer = threading.Thread(target=self._run, name="jepa-job-logs", daemon=True)
        self._writer.start()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(QUIET):
            return
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
        with self._lock:
            if self.kept >= MAX_LINES:
                self.dropped += 1
                return
            self.kept += 1
            self.pending.append(
                {
                    "job_id": self.job_id,
                    "attempt": self.attempt,
                    "created_at": utcnow(),
                    "level": record.levelname.lower(),
                    "message": message[:MAX_MESSAGE_CHARS],
                }
            )

    def flush(self) -> None:
        with self._lock:
            rows, self.pending = self.pending, []
        if not rows:
            return
        try:
            with self.factory.begin() as session:
                session.execute(insert(JobLogRow), rows)
        except Exception:  # noqa: BLE001 - best effort: the process's stderr has every line
            with self._lock:
                self.dropped += len(rows)

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_S):
            self.flush()

    def close(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self._writer.join(5)
            if self.kept >= MAX_LINES and self.dropped:
                self.pending.append(
                    {
                        "job_id": self.job_id,
                        "attempt": self.attempt,
                        "created_at": utcnow(),
                        "level": "warning",
                        "message": f"{self.dropped} more lines not kept (at most {MAX_LINES} an attempt)",
                    }
                )
            self.flush()
        super().close()


def read_logs(session: Session, job_id: str, since: int, limit: int) -> list[JobLogRow]:
    """The job's lines after cursor `since` (a line's id), oldest first, at most `limit`."""
    query = select(JobLogRow).where(JobLogRow.job_id == job_id, JobLogRow.id > since)
    return list(session.scalars(query.order_by(JobLogRow.id).limit(limit)))
