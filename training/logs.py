"""Log formatting for every process (API, workers, training children): one JSON object per line
(JEPA_LOG_FORMAT=json, the default for `jepa serve` and `jepa worker`) or plain text.

`request_id` holds the id of the request being served, when there is one; the service's
middleware sets it and every line logged meanwhile carries it.
"""

from __future__ import annotations

import atexit
import contextvars
import json
import logging
import queue
import re
from datetime import UTC, datetime
from logging.handlers import QueueHandler, QueueListener
from typing import Any

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        # A record written by a BackgroundHandler carries its request's id: the thread that
        # formats it runs outside that request's context.
        if (rid := getattr(record, "request_id", None) or request_id.get()) is not None:
            entry["request_id"] = rid
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


# A query parameter whose name says it holds a credential (?api_key=, ?token=, ?access_token=...).
SECRET_QUERY = re.compile(r"([?&][^=&#]*(?:key|token|secret|password|auth)[^=&#]*=)[^&#]*", re.IGNORECASE)


def redact_query(target: str) -> str:
    return SECRET_QUERY.sub(r"\1REDACTED", target)


class RedactQuerySecrets(logging.Filter):
    """Access-log lines show the request target; a key a client put in its query string must
    not reach the log with it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_query(arg) if isinstance(arg, str) else arg for arg in record.args)
        return True


class BackgroundHandler(QueueHandler):
    """A stream handler whose formatting and writing happen on a thread of its own: the caller
    (the event loop, for the access log) only appends the record to a bounded queue.

    Formatters and filters set on it (by logging.config) apply in that thread. When the queue is
    full, because whatever reads the stream has stalled, records are dropped and counted rather
    than letting memory or the caller's latency grow.
    """

    QUEUE_SIZE = 10_000

    def __init__(self) -> None:
        super().__init__(queue.Queue(self.QUEUE_SIZE))
        self.target = logging.StreamHandler()
        self.dropped = 0
        self.listener = QueueListener(self.queue, self.target)
        self.listener.start()
        atexit.register(self.close)  # writes what is still queued when the process exits

    def close(self) -> None:
        if self.listener._thread is not None:  # stop() twice would fail: it joins a thread it dropped
            self.listener.stop()
        super().close()

    def setFormatter(self, fmt: logging.Formatter | None) -> None:
        self.target.setFormatter(fmt)

    def addFilter(self, filter: Any) -> None:  # noqa: A002 - logging's own name
        self.target.addFilter(filter)

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # QueueHandler formats here, in the caller's thread; that is the cost this class moves.
        record.request_id = request_id.get()
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1


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
