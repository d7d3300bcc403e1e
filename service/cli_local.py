"""The `jepa` command without --url: the service's own app, run in this process, behind a JEPAClient.

A local command sends the same requests as a remote one, to `service.app.create_app`, so its
answers are a server's by construction: the same routes, validation, limits, row shapes and errors.
Only two settings differ from `jepa serve`'s: no first-start training job, and a training worker
only for a command that waits for a job to train.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import signal
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx

from service.settings import Settings

if TYPE_CHECKING:
    from anyio.from_thread import BlockingPortal
    from fastapi import FastAPI

    from service.client import JEPAClient

# The in-process client's base URL: never resolved, the transport hands every request to the app.
LOCAL_URL = "http://jepa.local"


class InProcessTransport(httpx.BaseTransport):
    """httpx's ASGITransport for a synchronous client: each request runs on the app's event loop,
    in the thread of a blocking portal, and its answer is read whole there."""

    def __init__(self, app: FastAPI, portal: BlockingPortal) -> None:
        self.asgi = httpx.ASGITransport(app=app)
        self.portal = portal

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()  # the body as bytes, which the async side can stream as well
        status, headers, body = self.portal.call(self._send, request)
        return httpx.Response(status, headers=headers, stream=httpx.ByteStream(body))

    async def _send(self, request: httpx.Request) -> tuple[int, httpx.Headers, bytes]:
        response = await self.asgi.handle_async_request(request)
        body = b"".join([chunk async for chunk in response.aiter_raw()])  # raw: the client decodes it
        await response.aclose()
        return response.status_code, response.headers, body


def local_settings(settings: Settings, trains: bool) -> Settings:
    """The in-process app's settings: no first-start job (a command does what it was asked and
    nothing else) and a worker only where the command trains."""
    update: dict[str, Any] = {"bootstrap": False, "embedded_worker": trains}
    if "log_format" not in settings.model_fields_set:
        update["log_format"] = "text"  # the training process's log lines reach this terminal: for people
    return settings.model_copy(update=update)


@contextlib.contextmanager
def local_client(settings: Settings, trains: bool = False) -> Iterator[JEPAClient]:
    """A JEPAClient of the app, its lifespan (database, inference engine, worker) run around it.

    Why not Starlette's TestClient, which does the same: it is an httpx2 client where httpx2 is
    installed, and JEPAClient is built on httpx. Why a portal: the app must serve every request on
    the event loop its lifespan started the inference engine on, which a fresh loop per call (or
    an async client driven by asyncio.run) would not give."""
    from anyio.from_thread import start_blocking_portal

    from service.app import create_app
    from service.client import JEPAClient

    app = create_app(local_settings(settings, trains))
    key = settings.api_key.get_secret_value() if settings.api_key else None
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with contextlib.ExitStack() as stack:
        with _sigint_blocked_in_new_threads():
            portal = stack.enter_context(start_blocking_portal())
        stack.callback(_restore_process_tuning, sys.getswitchinterval())
        with _quiet("jepa.app"):
            stack.enter_context(portal.wrap_async_context_manager(app.router.lifespan_context(app)))
        http = httpx.Client(base_url=LOCAL_URL, headers=headers, transport=InProcessTransport(app, portal))
        # No deadline: the app is this process, and nothing slower than its own work can answer.
        yield stack.enter_context(JEPAClient.over(http, deadline_s=math.inf))


@contextlib.contextmanager
def _sigint_blocked_in_new_threads() -> Iterator[None]:
    """Threads started meanwhile never take SIGINT: the app's event loop, the threads it starts
    (the training worker's among them) and the training process that worker starts, since a
    blocked signal stays blocked across fork and exec. Ctrl-C at a terminal signals the whole
    foreground process group, and the training process would die of it mid-epoch with a
    traceback; instead this command cancels the job, and the worker stops that process cleanly."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Only errors from logger `name` meanwhile. The lifespan warns that a service without
    JEPA_API_KEY is open to whoever can reach it; nothing can reach the one in this process."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _restore_process_tuning(switch_interval: float) -> None:
    """Undo what the lifespan tunes for a long-lived server (the GIL's switch interval, a frozen
    heap): this process carries on as a command, or as a test that called one."""
    sys.setswitchinterval(switch_interval)
    gc.unfreeze()
