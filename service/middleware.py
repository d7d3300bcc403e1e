"""The one ASGI layer around every request: its id, its timing headers, its metrics and its
access-log line.

One layer instead of one per concern, because each layer costs a coroutine, a wrapped `send` and
a context switch per request, and on small requests the event loop's thread is the limit.

- Request ids: every response echoes one in `X-Request-ID` (the caller's own, when it sends a
  sane one), and every log line written while serving the request carries it, so a client's
  error report and the server's log lines can be matched: `request_id` holds it, each log record
  made meanwhile is stamped with it (`stamp_log_records`), and training.logs.JsonFormatter writes
  it. Generated ids are a per-process random prefix and a counter: unique without a uuid4 (and
  its os.urandom call) per request.
- Timing: a successful inference answer carries `X-Queue-Time` (waiting for the inference
  thread), `X-Inference-Time` (forward passes) and `X-Total-Time` (from the request's arrival
  to its answer's first byte), in milliseconds (service.timing says how pieces add up).
- The access log goes to the `jepa.access` logger, whose handler formats and writes on a thread
  of its own (training.logs.BackgroundHandler).
- Disconnects: once an inference request's body is read, a client that disconnects before its
  answer starts cancels the request (logged as 499). Nobody would read the answer, and a large
  request would keep taking turns on the inference thread, and holding its place in
  JEPA_MAX_QUEUE, for nothing.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import os
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.observability import Metrics
from service.timing import RequestTiming, request_timing
from training.logs import BackgroundHandler

SANE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
REQUEST_ID = b"x-request-id"
# Paths whose work a disconnect cancels: inference, which can hold the inference thread for long.
CANCELLED_ON_DISCONNECT = frozenset({"/encode", "/predict", "/similarity", "/score"})
CLIENT_GONE = 499  # nginx's status for a client that closed the connection before the answer

access_log = logging.getLogger("jepa.access")

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def stamp_log_records() -> None:
    """Make every log record carry `request_id` as it is when the record is made: in the caller's
    context, which a handler formatting later on a thread of its own no longer has. Installed
    once per process, however many apps are built."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "stamps_request_id", False):
        return

    def make_record(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.request_id = request_id.get()
        return record

    make_record.stamps_request_id = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(make_record)


class _RequestIds:
    """`<8 random hex digits>-<counter in hex>`: the prefix is drawn again in a forked child."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self.prefix = os.urandom(4).hex()
        self.counter = itertools.count(1)

    def next(self) -> str:
        return f"{self.prefix}-{next(self.counter):x}"


request_ids = _RequestIds()


def _given_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == REQUEST_ID:
            given = value.decode("latin-1")
            return given if SANE_ID.match(given) else None
    return None


def _ms(seconds: float) -> bytes:
    return f"{seconds * 1000:.3f}".encode()


class _DisconnectWatch:
    """Wraps `receive`: once the body has been read whole, waits for the client's disconnect and,
    if it comes before the answer starts, cancels `task` (the one serving the request)."""

    def __init__(self, receive: Receive, task: asyncio.Task[object]) -> None:
        self.receive, self.task = receive, task
        self.watcher: asyncio.Future[Message] | None = None
        self.answering = self.cancelled = False

    async def __call__(self) -> Message:
        if self.watcher is not None:  # the app reads on after its body: what the watcher gets
            return await asyncio.shield(self.watcher)
        message = await self.receive()
        if message["type"] == "http.request" and not message.get("more_body", False):
            self.watcher = asyncio.ensure_future(self._watch())
        return message

    async def _watch(self) -> Message:
        message = await self.receive()
        if message["type"] == "http.disconnect" and not self.answering:
            self.cancelled = True
            self.task.cancel()
        return message

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.cancel()


class RequestMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics
        stamp_log_records()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = _given_id(scope) or request_ids.next()
        id_token = request_id.set(rid)
        timing = RequestTiming()
        timing_token = request_timing.set(timing)
        status = 500
        watch = None
        if scope["method"] == "POST" and scope["path"] in CANCELLED_ON_DISCONNECT:
            task = asyncio.current_task()
            if task is not None:
                receive = watch = _DisconnectWatch(receive, task)

        async def send_wrapped(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                if watch is not None:
                    watch.answering = True
                status = message["status"]
                headers = [*message.get("headers", ()), (REQUEST_ID, rid.encode())]
                if status == 200 and timing.inference_s > 0:
                    headers += [
                        (b"x-queue-time", _ms(timing.queue_s)),
                        (b"x-inference-time", _ms(timing.inference_s)),
                        (b"x-total-time", _ms(time.perf_counter() - started)),
                    ]
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_wrapped)
        except asyncio.CancelledError:
            if watch is None or not watch.cancelled:
                raise
            watch.task.uncancel()  # the client left: nothing to answer, and the server goes on
            status = CLIENT_GONE
        finally:
            if watch is not None:
                watch.close()
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe_request(route, scope["method"], status, elapsed)
            if access_log.isEnabledFor(logging.INFO):
                _log_access(scope, status, elapsed, rid)
            request_timing.reset(timing_token)
            request_id.reset(id_token)


ACCESS_LINE = '%s - "%s %s HTTP/%s" %d %.1fms'


def _log_access(scope: Scope, status: int, elapsed: float, rid: str) -> None:
    client = scope.get("client")
    target = scope["path"] if not scope["query_string"] else f"{scope['path']}?{scope['query_string'].decode()}"
    args = (
        f"{client[0]}:{client[1]}" if client else "-",
        scope["method"],
        target,  # its query string's secrets are redacted by the handler's filter
        scope["http_version"],
        status,
        elapsed * 1000,
    )
    handlers = access_log.handlers
    if len(handlers) == 1 and isinstance(handlers[0], BackgroundHandler):  # as `jepa serve` configures it
        handlers[0].defer(access_log, ACCESS_LINE, args, rid)
    else:
        access_log.info(ACCESS_LINE, *args)
