"""The client and the remote CLI against a hostile server: a real HTTP server in a thread that
answers garbage, wrongly shaped JSON, endless or drip-fed bodies, unknown job states, a log
cursor that never moves and control characters. Each must end, quickly, in a typed client error,
or for the CLI in one `error:` line and exit code 1: never a traceback, a hang or a memory blow-up."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import json
import socket
import socketserver
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

import service.client
from service import cli
from service.client import (
    AsyncJEPAClient,
    BadResponse,
    DeadlineExceeded,
    JEPAClient,
    JEPAError,
    ResponseTooLarge,
)

JOB_ID = "a" * 32
Handler = Callable[[socket.socket, str], None]  # writes an answer to the socket, given the request's target


def head(status: int = 200, content_type: str | None = "application/json", length: int | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status} X", "Connection: close"]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def answer(body: object, content_type: str | None = "application/json", status: int = 200) -> Handler:
    """A whole answer: `body` as is when bytes, else as JSON."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()

    def send(conn: socket.socket, target: str) -> None:
        conn.sendall(head(status, content_type, len(data)) + data)

    return send


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


class HostileServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Request)
        self.routes: dict[str, Handler] = {}
        self.sent = 0  # bytes of the endless answer written before the client went away
        self.stop = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def endless(self, chunk: int = 64 * 1024, total: int = 256 * 2**20) -> Handler:
        """A JSON answer of `total` bytes without a Content-Length, written until the client leaves."""

        def send(conn: socket.socket, target: str) -> None:
            conn.sendall(head())
            block = b'{"limits": "' + b"x" * (chunk - 12)
            while self.sent < total and not self.stop.is_set():
                conn.sendall(block)
                self.sent += len(block)
                block = b"x" * chunk

        return send

    def drip(self, prefix: bytes, every_s: float = 0.25, for_s: float = 20.0) -> Handler:
        """`prefix`, then one more byte every `every_s` seconds: never a whole answer."""

        def send(conn: socket.socket, target: str) -> None:
            conn.sendall(prefix)
            end = time.monotonic() + for_s
            while time.monotonic() < end and not self.stop.is_set():
                time.sleep(every_s)
                conn.sendall(b" ")

        return send


class Request(socketserver.BaseRequestHandler):
    server: HostileServer

    def handle(self) -> None:
        conn: socket.socket = self.request
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        request_head, body = data.split(b"\r\n\r\n", 1)
        lines = request_head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        length = next((int(v) for k, _, v in (h.partition(":") for h in lines[1:]) if k.lower() == "content-length"), 0)
        while len(body) < length:
            body += conn.recv(65536)
        route = self.server.routes.get(f"{method} {target.split('?')[0]}")
        with contextlib.suppress(OSError):  # the client hanging up is what several tests want
            (route or answer({"detail": "not found", "type": "not_found"}, status=404))(conn, target)


@pytest.fixture
def server() -> Iterator[HostileServer]:
    hostile = HostileServer()
    thread = threading.Thread(target=hostile.serve_forever, daemon=True)
    thread.start()
    yield hostile
    hostile.stop.set()
    hostile.shutdown()
    hostile.server_close()


def job(status: str = "running", **fields: object) -> dict[str, object]:
    progress = {"epoch": 1, "epochs": 3, "loss": 0.5}
    return {"id": JOB_ID, "status": status, "model": "m", "progress": progress, "version": None,
            "created_at": "2024-01-01T00:00:00", "error": None, **fields}  # fmt: skip


def log_line(n: int, message: str = "epoch done") -> dict[str, object]:
    return {"id": n, "attempt": 1, "created_at": "2024-01-01T00:00:00", "level": "info", "message": message}


# --- the client ---------------------------------------------------------------------------------

GARBAGE: dict[str, tuple[Callable[[JEPAClient], object], str, Handler]] = {
    "info not JSON": (lambda c: c.info(), "GET /info", answer(b"\xff\xfe{garbage")),
    "info an array": (lambda c: c.info(), "GET /info", answer([1, 2])),
    "info without limits": (lambda c: c.info(), "GET /info", answer({"version": "1"})),
    "info limits not numbers": (lambda c: c.info(), "GET /info", answer({"limits": {"max_batch": "lots"}})),
    "info as .npy": (lambda c: c.info(), "GET /info", answer(npy(np.zeros(3)), "application/x-npy")),
    "info as HTML": (lambda c: c.info(), "GET /info", answer(b"<html>hi</html>", "text/html")),
    "info nested for ever": (lambda c: c.info(), "GET /info", answer(b"[" * 100_000)),
    "models wrongly shaped": (lambda c: c.models(), "GET /models", answer([{"name": 3}])),
    "jobs wrongly shaped": (lambda c: c.jobs(), "GET /jobs", answer({"jobs": []})),
    "datasets missing keys": (lambda c: c.datasets(), "GET /datasets", answer([{"id": "x"}])),
    "job id not an id": (lambda c: c.train({"pattern": "circle"}), "POST /train", answer({"job_id": "../../x"})),
    "job progress not an object": (lambda c: c.job(JOB_ID), f"GET /jobs/{JOB_ID}", answer(job(progress=[]))),
    "logs lines without ids": (
        lambda c: c.job_logs(JOB_ID),
        f"GET /jobs/{JOB_ID}/logs",
        answer({"lines": [{"message": "x"}], "next_since": 1}),
    ),
    "embeddings garbage .npy": (
        lambda c: c.encode(np.zeros((2, 5, 2))),
        "POST /encode",
        answer(b"\x93NUMPY garbage", "application/x-npy"),
    ),
    ".npy of the wrong rows": (
        lambda c: c.encode(np.zeros((2, 5, 2))),
        "POST /encode",
        answer(npy(np.zeros((3, 4), np.float32)), "application/x-npy"),
    ),
    ".npy header bigger than its data": (
        lambda c: c.encode(np.zeros((2, 5, 2))),
        "POST /encode",
        answer(npy(np.zeros((2, 4), np.float32)).replace(b"(2, 4)", b"(2, 9)"), "application/x-npy"),
    ),
    "embeddings of strings": (
        lambda c: c.encode([np.zeros((5, 2)), np.zeros((3, 2))]),
        "POST /encode",
        answer({"embeddings": [["a"], ["b"]]}),
    ),
    "fewer scored series": (
        lambda c: c.score([np.zeros((9, 2))]),
        "POST /score",
        answer({"series": []}),
    ),
    "similarities of the wrong shape": (
        lambda c: c.similarity(np.zeros((2, 5, 2)), np.zeros((1, 5, 2))),
        "POST /similarity",
        answer({"similarities": [[1.0]]}),
    ),
}


@pytest.mark.parametrize("case", list(GARBAGE))
def test_a_garbage_or_misshapen_answer_is_a_bad_response(case: str, server: HostileServer) -> None:
    call, route, handler = GARBAGE[case]
    server.routes[route] = handler
    with JEPAClient(server.url) as client, pytest.raises(BadResponse) as caught:
        call(client)
    assert route.split()[1] in caught.value.detail  # it names the request
    assert isinstance(caught.value, JEPAError)


def test_an_endless_answer_stops_at_the_cap_with_memory_bounded(server: HostileServer) -> None:
    server.routes["GET /info"] = server.endless()
    tracemalloc.start()
    try:
        with JEPAClient(server.url, max_response_bytes=2**20) as client, pytest.raises(ResponseTooLarge) as caught:
            client.info()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "1048576-byte limit" in caught.value.detail
    assert peak < 8 * 2**20, peak  # the cap (1 MiB) and a few chunks, not the 256 MiB sent at it
    time.sleep(0.2)
    assert server.sent < 64 * 2**20  # the client hung up near the cap (plus the sockets' buffers)


def test_a_declared_length_over_the_cap_is_refused_unread(server: HostileServer) -> None:
    server.routes["GET /models"] = lambda conn, _: conn.sendall(head(length=2**40) + b"[")
    with JEPAClient(server.url, max_response_bytes=2**20) as client, pytest.raises(ResponseTooLarge):
        client.models()


@pytest.mark.parametrize("where", ["body", "headers"])
def test_a_drip_fed_answer_ends_at_the_deadline(where: str, server: HostileServer) -> None:
    prefix = head() + b"[" if where == "body" else b"HTTP/1.1 200 OK\r\nX-Slow: "
    server.routes["GET /models"] = server.drip(prefix)
    started = time.monotonic()
    with JEPAClient(server.url, deadline_s=1.0) as client, pytest.raises(DeadlineExceeded) as caught:
        client.models()
    assert time.monotonic() - started < 3.0  # not the 20 s the server would drip for
    assert "1 s deadline" in caught.value.detail


def test_the_async_client_has_the_same_limits(server: HostileServer) -> None:
    server.routes["GET /models"] = server.drip(head() + b"[")
    server.routes["GET /info"] = server.endless()
    server.routes["GET /jobs"] = answer({"not": "a list"})

    async def scenario() -> None:
        async with AsyncJEPAClient(server.url, deadline_s=1.0, max_response_bytes=2**20) as client:
            started = time.monotonic()
            with pytest.raises(DeadlineExceeded):
                await client.models()
            assert time.monotonic() - started < 3.0
            with pytest.raises(ResponseTooLarge):
                await client.info()
            with pytest.raises(BadResponse):
                await client.jobs()

    asyncio.run(scenario())


def test_waiting_ends_on_an_unknown_job_status_and_after_its_timeout(server: HostileServer) -> None:
    server.routes[f"GET /jobs/{JOB_ID}"] = answer(job(status=None))
    with JEPAClient(server.url) as client:
        with pytest.raises(BadResponse, match="answer.status is null, not str"):
            client.wait_for_job(JOB_ID, timeout=10, poll_s=0.05)
        server.routes[f"GET /jobs/{JOB_ID}"] = answer(job(status="paused"))
        with pytest.raises(BadResponse, match="unknown job status 'paused'"):
            client.wait_for_job(JOB_ID, timeout=10, poll_s=0.05)
        server.routes[f"GET /jobs/{JOB_ID}"] = answer(job(status="running"))
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            client.wait_for_job(JOB_ID, timeout=0.5, poll_s=0.05)
        assert time.monotonic() - started < 2.0


def test_a_429_with_a_garbage_retry_after_is_still_overloaded(server: HostileServer) -> None:
    def busy(conn: socket.socket, _: str) -> None:
        body = b'{"detail": "busy", "type": "overloaded"}'
        conn.sendall(head(429, length=len(body)).replace(b"\r\n\r\n", b"\r\nRetry-After: soon\r\n\r\n") + body)

    server.routes["GET /models"] = busy
    with JEPAClient(server.url) as client, pytest.raises(service.client.Overloaded) as caught:
        client.models()
    assert caught.value.retry_after is None


# --- the CLI ------------------------------------------------------------------------------------


def jepa(monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    """`jepa ARGS` run in this process (its client's limits small): exit code, stdout, stderr.
    An exception other than the exit would fail the test: that is a traceback for a user."""
    small = functools.partial(service.client.JEPAClient, deadline_s=1.0, max_response_bytes=2**20)
    monkeypatch.setattr(service.client, "JEPAClient", small)
    monkeypatch.setattr(cli.console, "width", 300)
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            cli.app(list(args), prog_name="jepa")
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def one_error(code: int, err: str) -> str:
    """The one `error:` line of a failed command (exit code 1), and nothing else on stderr."""
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def walks(tmp_path: Path) -> Path:
    path = tmp_path / "walks.npy"
    np.save(path, np.zeros((4, 6, 2), np.float32))
    return path


CLI_GARBAGE: dict[str, tuple[list[str], str, Handler]] = {
    "models not JSON": (["models"], "GET /models", answer(b"\x00\x1b[2J garbage")),
    "models as .npy": (["models"], "GET /models", answer(npy(np.zeros(3)), "application/x-npy")),
    "jobs wrongly shaped": (["jobs"], "GET /jobs", answer([{"id": JOB_ID}])),
    "datasets an object": (["datasets"], "GET /datasets", answer({"rows": []})),
    "encode without limits": (["encode", "{walks}", "--out", "{out}"], "GET /info", answer({})),
    "train's job id missing": (["train", "--no-wait"], "POST /train", answer({"queued": True})),
    "logs of the wrong shape": (["logs", JOB_ID], f"GET /jobs/{JOB_ID}/logs", answer({"lines": "x"})),
    "score as HTML": (["score", "{walks}"], "POST /score", answer(b"<html></html>", "text/html")),
    "upload answered with a list": (["datasets", "upload", "{walks}"], "POST /datasets", answer([])),
}


@pytest.mark.parametrize("case", list(CLI_GARBAGE))
def test_the_cli_says_one_error_line_for_a_garbage_answer(
    case: str, server: HostileServer, walks: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args, route, handler = CLI_GARBAGE[case]
    server.routes[route] = handler
    server.routes["GET /info"] = server.routes.get("GET /info", answer({"limits": {"max_batch": 8}}))
    args = [a.format(walks=walks, out=walks.parent / "out.npy") for a in args]
    code, _, err = jepa(monkeypatch, *args, "--url", server.url)
    line = one_error(code, err)
    assert f"unusable answer from {server.url}: {route}" in line, line
    assert "\x1b" not in err


def test_the_cli_stops_an_endless_answer_at_the_cap(
    server: HostileServer, walks: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.routes["GET /info"] = server.endless()
    code, _, err = jepa(monkeypatch, "encode", str(walks), "--out", str(walks.parent / "z.npy"), "--url", server.url)
    assert "over the 1048576-byte limit" in one_error(code, err)
    time.sleep(0.2)
    assert server.sent < 64 * 2**20


@pytest.mark.parametrize("command", ["encode", "logs"])
def test_the_cli_ends_a_drip_fed_answer_at_the_deadline(
    command: str, server: HostileServer, walks: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.routes["GET /info"] = server.drip(head() + b"{")
    server.routes[f"GET /jobs/{JOB_ID}/logs"] = server.drip(head() + b"{")
    args = ["encode", str(walks), "--out", str(walks.parent / "z.npy")] if command == "encode" else ["logs", JOB_ID]
    started = time.monotonic()
    code, _, err = jepa(monkeypatch, *args, "--url", server.url)
    assert "within the 1 s deadline" in one_error(code, err)
    assert time.monotonic() - started < 4.0


def test_jepa_train_ends_on_an_unknown_job_status(server: HostileServer, monkeypatch: pytest.MonkeyPatch) -> None:
    server.routes["POST /train"] = answer({"job_id": JOB_ID, "status": "queued"})
    server.routes[f"GET /jobs/{JOB_ID}"] = answer(job(status="paused"))
    started = time.monotonic()
    code, out, err = jepa(monkeypatch, "train", "--url", server.url)
    assert "unknown job status 'paused'" in one_error(code, err)
    assert f"job {JOB_ID} queued" in out and time.monotonic() - started < 5.0


def test_jepa_train_stops_waiting_after_its_timeout(server: HostileServer, monkeypatch: pytest.MonkeyPatch) -> None:
    server.routes["POST /train"] = answer({"job_id": JOB_ID, "status": "queued"})
    server.routes[f"GET /jobs/{JOB_ID}"] = answer(job(status="running"))
    started = time.monotonic()
    code, _, err = jepa(monkeypatch, "train", "--wait-timeout", "1", "--url", server.url)
    assert "did not finish within --wait-timeout 1 s" in one_error(code, err)
    assert time.monotonic() - started < 5.0


def test_jepa_logs_escapes_control_characters(server: HostileServer, monkeypatch: pytest.MonkeyPatch) -> None:
    evil = "title\x1b]2;owned\x07 clear\x1b[2J back\rover \x9b31m bidi\u202e done"
    lines = [log_line(1, evil), log_line(2, "two\nlines")]
    server.routes[f"GET /jobs/{JOB_ID}/logs"] = answer({"lines": lines, "next_since": 2})
    server.routes[f"GET /jobs/{JOB_ID}"] = answer(job(status="succeeded", model="m\x1b[31m"))
    code, out, err = jepa(monkeypatch, "logs", JOB_ID, "--url", server.url)
    assert code == 0, err
    for raw in ("\x1b", "\x07", "\r", "\x9b", "\u202e"):
        assert raw not in out
    assert "title\\x1b]2;owned\\x07 clear\\x1b[2J back\\x0dover \\x9b31m bidi\\u202e done" in out
    assert "two\nlines" in out  # newlines stay


def test_jepa_logs_follow_prints_each_line_once_when_the_cursor_is_stuck(
    server: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every page answers the same two lines and a cursor that never moves; the job runs for ever.
    stuck = {"lines": [log_line(1, "first"), log_line(2, "second")], "next_since": 0}
    server.routes[f"GET /jobs/{JOB_ID}/logs"] = answer(stuck)
    server.routes[f"GET /jobs/{JOB_ID}"] = answer(job(status="running"))
    started = time.monotonic()
    code, out, err = jepa(monkeypatch, "logs", JOB_ID, "--follow", "--url", server.url)
    assert "already printed" in one_error(code, err)
    assert out.count("first") == 1 and out.count("second") == 1
    assert time.monotonic() - started < 5.0


def test_jepa_logs_follow_ends_on_an_unknown_status_and_after_its_timeout(
    server: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.routes[f"GET /jobs/{JOB_ID}/logs"] = answer({"lines": [], "next_since": 0})
    server.routes[f"GET /jobs/{JOB_ID}"] = answer(job(status="zombie"))
    code, _, err = jepa(monkeypatch, "logs", JOB_ID, "--follow", "--url", server.url)
    assert "status 'zombie'" in one_error(code, err)

    server.routes[f"GET /jobs/{JOB_ID}"] = answer(job(status="running"))
    started = time.monotonic()
    code, _, err = jepa(monkeypatch, "logs", JOB_ID, "--follow", "--wait-timeout", "1", "--url", server.url)
    assert "after --wait-timeout 1 s" in one_error(code, err)
    assert time.monotonic() - started < 5.0


def test_listings_escape_what_the_server_names(server: HostileServer, monkeypatch: pytest.MonkeyPatch) -> None:
    server.routes["GET /jobs"] = answer([job(model="[bold]m\x1b[2J", progress={"loss": "NaN?", "epoch": "\x1b"})])
    code, out, err = jepa(monkeypatch, "jobs", "--url", server.url)
    assert code == 0, err
    assert "\x1b" not in out and "[bold]m\\x1b[2J" in out
