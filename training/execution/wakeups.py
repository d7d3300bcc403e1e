"""Waking workers when something happens, instead of when their next poll comes round.

On PostgreSQL, `POST /train` (and a re-queue) sends NOTIFY on CHANNEL in the transaction that
queues the job, and a cancel sends one naming the job; PostgreSQL delivers them at commit. Each
worker LISTENs on a connection of its own, so an idle worker claims a new job at once, and a
busy one stops a cancelled job's training process at once. On SQLite there is no such thing,
and workers keep polling: `Wakeups.wait` is then a plain sleep. Polling also stays the fallback
on PostgreSQL: a lost listening connection is reopened, and meanwhile the wait is a sleep.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import make_url, text
from sqlalchemy.orm import Session

log = logging.getLogger("jepa.wakeups")

CHANNEL = "jepa_jobs"
QUEUED = "queued"
CANCEL = "cancel:"  # + the job's id
RECONNECT_S = 5.0
# How often a wait checks `stop` and its `done`: a tenth of a second is nothing to a waitpid.
DONE_CHECK_S = 0.1


def notify(session: Session, payload: str) -> None:
    """Send `payload` to every listening worker when `session`'s transaction commits (PostgreSQL)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": payload})


class Wakeups:
    """A worker's ear: `wait(timeout)` returns the payloads that arrived (a QUEUED or a
    CANCEL + id), or [] after `timeout` (or at once when `stop` is set)."""

    def __init__(self, database_url: str, stop: threading.Event) -> None:
        self.stop = stop
        url = make_url(database_url)
        self.dsn = url.set(drivername="postgresql").render_as_string(hide_password=False) if self._pg(url) else None
        self.conn: Any = None
        self.failed_at = 0.0

    @staticmethod
    def _pg(url: Any) -> bool:
        return url.get_backend_name() == "postgresql"

    @property
    def listening(self) -> bool:
        return self.conn is not None

    def wait(self, timeout: float, done: Callable[[], bool] | None = None) -> list[str]:
        """`done`, when given, ends the wait early too once it answers True (checked every
        DONE_CHECK_S): a worker waits so on its training process, and starts the next job as soon
        as that process exits rather than at its next heartbeat."""
        deadline = time.monotonic() + timeout
        conn = self._connection()
        if conn is None:
            while not self.stop.is_set() and (left := deadline - time.monotonic()) > 0:
                if done is not None and done():
                    break
                self.stop.wait(min(left, DONE_CHECK_S) if done is not None else left)
            return []
        payloads: list[str] = []
        # In short slices, so that `stop` (and `done`) is seen within DONE_CHECK_S.
        while not payloads and not self.stop.is_set() and (left := deadline - time.monotonic()) > 0:
            if done is not None and done():
                break
            try:
                payloads = [n.payload for n in conn.notifies(timeout=min(left, DONE_CHECK_S), stop_after=1)]
                payloads += [n.payload for n in conn.notifies(timeout=0)]  # and whatever came with it
            except Exception as exc:  # noqa: BLE001 - a lost connection: sleep out the wait, reconnect later
                log.warning("lost the connection listening for jobs (%s); polling until it is back", type(exc).__name__)
                self.close()
                self.failed_at = time.monotonic()
                self.stop.wait(max(deadline - time.monotonic(), 0))
                return []
        return payloads

    def _connection(self) -> Any:
        if self.conn is not None or self.dsn is None or time.monotonic() - self.failed_at < RECONNECT_S:
            return self.conn
        import psycopg

        try:
            self.conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
            self.conn.execute(f"LISTEN {CHANNEL}")
            log.info("listening for new jobs and cancels (PostgreSQL channel %s)", CHANNEL)
        except Exception as exc:  # noqa: BLE001 - polling carries on; try again after RECONNECT_S
            log.warning("cannot listen for jobs (%s); polling instead", type(exc).__name__)
            self.close()
            self.failed_at = time.monotonic()
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        self.conn = None
