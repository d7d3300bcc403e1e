"""Log formatting for every process (API, workers, training children): one JSON object per line
(JEPA_LOG_FORMAT=json, the default for `jepa serve` and `jepa worker`) or plain text.

`request_id` holds the id of the request being served, when there is one; the service's
middleware sets it and every line logged meanwhile carries it.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
from datetime import UTC, datetime
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
        if (rid := request_id.get()) is not None:
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
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "default", "filters": ["redact"]}},
        "root": {"handlers": ["default"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"level": level.upper()},
            "uvicorn.error": {"level": level.upper()},
            "uvicorn.access": {"level": level.upper()},
            "alembic.runtime.plugins": {"level": "WARNING"},  # one line per plugin at start otherwise
        },
    }
