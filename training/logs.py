"""Log formatting for every process (API, workers, training children): one JSON object per line
(JEPA_LOG_FORMAT=json, the default for `jepa serve` and `jepa worker`) or plain text.

A record's `request_id` attribute, when it has one, goes into its JSON line: the service stamps
each record made while it serves a request with that request's id (service.middleware).
"""

from __future__ import annotations

import atexit
import logging
import re
import sys
import threading
import time
import weakref
from collections import deque
from datetime import UTC, datetime
from typing import Any

import orjson


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", None)
        exc = self.formatException(record.exc_info) if record.exc_info else None
        return self.line(record.created, record.levelname.lower(), record.name, record.getMessage(), rid, exc)

    def line(
        self, created: float, level: str, logger: str, msg: str, rid: str | None = None, exc: str | None = None
    ) -> str:
        entry: dict[str, Any] = {"ts": _timestamps.iso(created), "level": level, "logger": logger, "msg": msg}
        if rid is not None:
            entry["request_id"] = rid
        if exc is not None:
            entry["exc"] = exc
        return orjson.dumps(entry, default=str).decode()


class _Timestamps:
    """ISO 8601 UTC with milliseconds, the date and time up to the second built once per second:
    on the access log's path a datetime per line was a fifth of the line's cost."""

    def __init__(self) -> None:
        self._second, self._prefix = -1, ""

    def iso(self, created: float) -> str:
        second = int(created)
        if second != self._second:  # two threads may both rebuild it: harmless, both get the same
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = second
        return f"{self._prefix}.{int((created - second) * 1000):03d}+00:00"


_timestamps = _Timestamps()


# A query parameter whose name says it holds a credential (?api_key=, ?token=, ?access_token=...).
SECRET_QUERY = re.compile(r"([?&][^=&#]*(?:key|token|secret|password|auth)[^=&#]*=)[^&#]*", re.IGNORECASE)


def redact_query(target: str) -> str:
    if "=" not in target:  # no query value at all: most lines, so skip the regular expression
        return target
    return SECRET_QUERY.sub(r"\1REDACTED", target)


class RedactQuerySecrets(logging.Filter):
    """Access-log lines show the request target; a key a client put in its query string must
    not reach the log with it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = redact_args(record.args)
        return True


def redact_args(args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(redact_query(arg) if isinstance(arg, str) else arg for arg in args)


class BackgroundHandler(logging.Handler):
    """A stream handler whose filtering, formatting and writing happen on a thread of its own,
    a batch at a time: the caller (the event loop, for the access log) only appends the record
    to a bounded buffer.

    Batches, not a queue that wakes the writer per record: under the GIL a wake-up per request
    made the writer contend with the event loop each time, and cost 29% of single-sequence
    throughput in one A/B run. The writer wakes every FLUSH_S and writes what has gathered in
    one call. When the buffer is full, because whatever reads the stream has stalled, records
    are dropped and counted rather than letting memory or the caller's latency grow.
    """

    MAX_PENDING = 10_000
    FLUSH_S = 0.2
    instances: weakref.WeakSet[BackgroundHandler] = weakref.WeakSet()  # for flush_background_logs

    def __init__(self, stream: Any = None) -> None:
        super().__init__()
        self.stream = stream if stream is not None else sys.stderr
        self.pending: deque[logging.LogRecord | tuple[Any, ...]] = deque()
        self.dropped = 0
        self._stop = threading.Event()
        self._writer = threading.Thread(target=self._run, name="jepa-log-writer", daemon=True)
        self._writer.start()
        atexit.register(self.close)  # writes what is still pending when the process exits
        BackgroundHandler.instances.add(self)

    def handle(self, record: logging.LogRecord) -> bool:  # type: ignore[override]
        if len(self.pending) >= self.MAX_PENDING:
            self.dropped += 1
        else:
            self.pending.append(record)  # deque.append is atomic: no lock on the caller's side
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self.handle(record)

    def defer(self, logger: logging.Logger, msg: str, args: tuple[Any, ...], rid: str | None = None) -> None:
        """`logger.info(msg, *args)`, its line carrying the request id `rid`, with even the record
        built on the writer's thread: the logging call itself (finding the caller's frame,
        building the record) cost the event loop about 10 us a line, more than formatting and
        writing it."""
        if len(self.pending) >= self.MAX_PENDING:
            self.dropped += 1
        else:
            self.pending.append((logger, time.time(), rid, msg, args))  # type: ignore[arg-type]

    def write_pending(self) -> None:
        lines = []
        # Deferred lines skip the LogRecord (building one is half a line's cost) where nothing
        # needs it: JSON lines whose only filter is the redaction, as `jepa serve` configures it.
        direct = isinstance(self.formatter, JsonFormatter) and all(
            isinstance(f, RedactQuerySecrets) for f in self.filters
        )
        while self.pending:
            record = self.pending.popleft()
            if isinstance(record, tuple):  # deferred: build it now, as of when it was logged
                if direct:
                    logger, created, rid, msg, args = record
                    lines.append(self.formatter.line(created, "info", logger.name, msg % redact_args(args), rid))  # type: ignore[union-attr]
                    continue
                record = _deferred_record(*record)
            try:
                if self.filter(record):
                    lines.append(self.format(record))
            except Exception:  # noqa: BLE001 - logging's own rule: report, never raise
                self.handleError(record)
        if lines:
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.FLUSH_S):
            self.write_pending()

    def close(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self._writer.join(5)
            self.write_pending()
        super().close()


def flush_background_logs() -> None:
    """Write every BackgroundHandler's pending lines now. uvicorn ends a graceful shutdown by
    raising the SIGTERM it caught again, with the default handler: the process dies there, before
    atexit, so the lifespan's shutdown calls this to keep the last requests' lines."""
    for handler in list(BackgroundHandler.instances):
        handler.write_pending()


def _deferred_record(
    logger: logging.Logger, created: float, rid: str | None, msg: str, args: tuple[Any, ...]
) -> logging.LogRecord:
    record = logger.makeRecord(logger.name, logging.INFO, "(deferred)", 0, msg, args, None)
    record.created, record.msecs = created, (created - int(created)) * 1000
    record.request_id = rid
    return record


def log_config(level: str, fmt: str) -> dict[str, Any]:
    """A logging.config dict for uvicorn and the app alike: JSON lines, or plain text."""
    formatter = (
        {"()": JsonFormatter} if fmt == "json" else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "filters": {"redact": {"()": RedactQuerySecrets}},
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": "default", "filters": ["redact"]},
            "background": {"()": BackgroundHandler, "formatter": "default", "filters": ["redact"]},
        },
        "root": {"handlers": ["default"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"level": level.upper()},
            "uvicorn.error": {"level": level.upper()},
            # One line per request, written by the service's middleware off the event loop
            # (uvicorn's own access log is off: it formats and writes on the event loop).
            "jepa.access": {"level": level.upper(), "handlers": ["background"], "propagate": False},
            "alembic.runtime.plugins": {"level": "WARNING"},  # one line per plugin at start otherwise
        },
    }
