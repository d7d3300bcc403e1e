"""Request ids in log lines: every record made while a request is served carries its id, also
when a handler formats it later, on a thread of its own, outside the request's context."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest
from fastapi.testclient import TestClient
from starlette.types import Receive, Scope, Send

from service.middleware import RequestMiddleware
from service.observability import Metrics
from training.logs import BackgroundHandler, JsonFormatter

log = logging.getLogger("jepa.test.request_ids")


async def logging_app(scope: Scope, receive: Receive, send: Send) -> None:
    log.info("serving %s", scope["path"])
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def handlers() -> Iterator[tuple[logging.StreamHandler[io.StringIO], BackgroundHandler]]:
    direct = logging.StreamHandler(io.StringIO())
    background = BackgroundHandler(io.StringIO())
    background._stop.set()  # no writer thread: the test writes the pending lines itself, later
    background._writer.join()
    for handler in (direct, background):
        handler.setFormatter(JsonFormatter())
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    yield direct, background
    for handler in (direct, background):
        log.removeHandler(handler)


def test_every_record_made_while_serving_carries_the_requests_id(
    handlers: tuple[logging.StreamHandler[io.StringIO], BackgroundHandler],
) -> None:
    direct, background = handlers
    client = TestClient(RequestMiddleware(logging_app, Metrics()))
    answer = client.get("/traced", headers={"X-Request-ID": "trace-7"})
    assert answer.headers["x-request-id"] == "trace-7"
    background.write_pending()  # formatted here, outside the request's context
    for stream in (direct.stream, background.stream):
        entry = orjson.loads(stream.getvalue())
        assert entry["msg"] == "serving /traced" and entry["request_id"] == "trace-7"


def test_a_record_made_outside_any_request_has_no_id(
    handlers: tuple[logging.StreamHandler[io.StringIO], BackgroundHandler],
) -> None:
    RequestMiddleware(logging_app, Metrics())  # installs the stamping, as building the app does
    log.info("worker started")
    assert "request_id" not in orjson.loads(handlers[0].stream.getvalue())
