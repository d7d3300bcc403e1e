"""The background log handler: a deferred access line reads exactly as the same line logged the
ordinary way, whichever path formats it."""

from __future__ import annotations

import io
import logging
from datetime import UTC, datetime

import orjson
import pytest

from training.logs import (
    BackgroundHandler,
    JsonFormatter,
    RedactQuerySecrets,
    _Timestamps,
    flush_background_logs,
)

LINE = '%s - "%s %s HTTP/%s" %d %.1fms'
ARGS = ("127.0.0.1:5555", "POST", "/encode?api_key=s3cret&x=1", "1.1", 200, 1.25)


def quiet_handler(formatter: logging.Formatter, *filters: logging.Filter) -> BackgroundHandler:
    handler = BackgroundHandler(io.StringIO())
    handler._stop.set()  # no writer thread: the test calls write_pending itself
    handler._writer.join()
    handler.setFormatter(formatter)
    for f in filters:
        handler.addFilter(f)
    return handler


@pytest.mark.parametrize("created", [1764541352.0, 1764541352.0009, 1764541352.311, 1764541352.9999])
def test_timestamps_match_datetime_isoformat(created: float) -> None:
    expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    assert _Timestamps().iso(created) == expected


def test_a_deferred_line_reads_as_the_same_line_logged_the_ordinary_way() -> None:
    logger = logging.getLogger("jepa.test.access")
    direct = quiet_handler(JsonFormatter(), RedactQuerySecrets())
    direct.defer(logger, LINE, ARGS, "abc-1")
    created = direct.pending[0][1]
    direct.write_pending()

    ordinary = quiet_handler(JsonFormatter(), RedactQuerySecrets())
    record = logger.makeRecord(logger.name, logging.INFO, __file__, 0, LINE, ARGS, None)
    record.created, record.request_id = created, "abc-1"
    ordinary.pending.append(record)
    ordinary.write_pending()

    line = direct.stream.getvalue()
    assert line == ordinary.stream.getvalue()
    entry = orjson.loads(line)
    assert entry["msg"] == '127.0.0.1:5555 - "POST /encode?api_key=REDACTED&x=1 HTTP/1.1" 200 1.2ms'
    assert entry["request_id"] == "abc-1" and entry["level"] == "info"


def test_a_text_format_still_gets_its_lines_redacted() -> None:
    logger = logging.getLogger("jepa.test.access")
    handler = quiet_handler(logging.Formatter("%(levelname)s %(message)s"), RedactQuerySecrets())
    handler.defer(logger, LINE, ARGS)
    handler.write_pending()
    assert handler.stream.getvalue() == 'INFO 127.0.0.1:5555 - "POST /encode?api_key=REDACTED&x=1 HTTP/1.1" 200 1.2ms\n'


def test_pending_lines_are_written_at_once_when_flushed_for_shutdown() -> None:
    # uvicorn ends a SIGTERM shutdown by dying of the signal, before atexit: the lifespan flushes.
    handler = quiet_handler(JsonFormatter(), RedactQuerySecrets())
    handler.defer(logging.getLogger("jepa.test.access"), LINE, ARGS)
    flush_background_logs()
    assert "/encode?api_key=REDACTED" in handler.stream.getvalue() and not handler.pending
