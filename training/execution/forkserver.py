"""Start jobs' training processes by forking a process that has already imported the runner.

Importing the runner (torch, SQLAlchemy, the model code) costs about 2 CPU-seconds. Started with
`python -m training.execution.runner`, every job pays it, and so does its wait in the queue.
Instead, `jepa serve` (with one API process) and `jepa worker` import the runner and then fork a
*fork server*, while still single-threaded: before any thread, database connection, torch thread
pool or CUDA context exists. For each job, the worker asks the fork server over a Unix socket
(in a directory only this user can enter), and the fork server forks the job's process.

Each job's process is set up as an exec'd one would be:
- it gets the environment the worker gives it (settings, thread limits) and fresh random seeds;
- it dies with the fork server (PR_SET_PDEATHSIG), and the fork server SIGKILLs it when the worker
  that asked for it disconnects (the worker died): nothing trains on unsupervised;
- the worker sees its exit code, and signals it through the fork server. The fork server holds a
  pidfd and reaps the process only once it has exited, so a signal never reaches a recycled pid.

Elsewhere (not Linux, a Python without pidfds, a worker in a process that forked no fork server:
the tests' in-process apps, the CLI's local mode, `jepa serve --workers N`), and whenever the fork
server cannot be reached, the worker starts `python -m training.execution.runner` as before.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import random
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

log = logging.getLogger("jepa.worker")

# The fork server's socket, in the environment of the process that forked it (and of that
# process's children): what a worker connects to.
FORK_SERVER_ENV = "JEPA_FORK_SERVER_SOCKET"
# How long a worker waits for the fork server to answer with the new process's pid.
CONNECT_TIMEOUT_S = 30.0


def available() -> bool:
    """Linux 5.3 or later (pidfds), and a Python that can use them."""
    if not (sys.platform.startswith("linux") and hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal")):
        return False
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return False
    return True


# What a forked process runs: (the request it was forked for, the fork server's pid) -> its exit
# code. A request is a JSON object: "env", the process's environment, and what the target reads
# (a training job's: "job", "worker"). Every module imported before the fork server was forked is
# imported once: its processes inherit them.
Target = Callable[[Mapping[str, Any], int], int]


def start_fork_server(target: Target, name: str | None = None) -> int | None:
    """Fork the fork server, whose processes run `target` and, if `name` is given, are named so
    (/proc/PID/comm), and name its socket in this process's environment; its pid, or None where
    fork servers are not available. Call it before this process starts any thread."""
    if not available():
        return None

    directory = Path(tempfile.mkdtemp(prefix="jepa-fork-server-"))  # mode 0700: this user only
    path = directory / "socket"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    parent = os.getpid()
    _flush_streams()  # or the child would write out a copy of what is buffered
    pid = os.fork()
    if pid == 0:
        try:
            die_with_parent(parent)
            _prctl(PR_SET_NAME, FORK_SERVER_NAME.encode())
            ForkServer(listener, target, name).serve_forever()
        except BaseException:  # noqa: BLE001 - a fork must never return into its parent's code
            traceback.print_exc()
        finally:
            os._exit(1)
    listener.close()
    os.environ[FORK_SERVER_ENV] = str(path)
    atexit.register(_stop_fork_server, pid, directory)
    return pid


def _stop_fork_server(pid: int, directory: Path) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)  # its jobs' processes die with it; the worker stopped them first
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    shutil.rmtree(directory, ignore_errors=True)


PR_SET_PDEATHSIG = 1  # linux/prctl.h
PR_SET_NAME = 15
# What `ps -o comm`, top and /proc/PID/comm show for these processes (their command line is still
# their parent's, `jepa serve` or `jepa worker`).
FORK_SERVER_NAME = "jepa-forkserver"
TRAINING_PROCESS_NAME = "jepa-train"


def _prctl(option: int, value: object) -> None:
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(option, value)


def die_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL this process when `parent`, the process that started it, dies; exit
    now if it already has. A training process must not run on unsupervised after its worker was
    SIGKILLed, while the job is handed to another worker: its parent is the worker's process, or
    the fork server, which dies with the worker's process in turn."""
    if not sys.platform.startswith("linux"):
        return
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        raise SystemExit(f"process {parent}, which started this one, is gone")


def _flush_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def _send(sock: socket.socket, message: Mapping[str, object]) -> None:
    sock.sendall(json.dumps(message).encode() + b"\n")


@dataclass
class _Job:
    """One connection: a worker's request, then the process started for it."""

    sock: socket.socket
    buffer: bytes = b""
    pid: int | None = None
    pidfd: int | None = None


class ForkServer:
    """The loop in the fork server: one connection per job; each connection's first line asks for
    a process (a request: {"env", ...}), later lines signal it ({"signal"}). It answers {"pid"},
    then {"exit"} with the code Popen would give (negative: killed by that signal)."""

    def __init__(self, listener: socket.socket, target: Target, name: str | None) -> None:
        self.listener = listener
        self.target = target
        self.name = name
        self.selector = selectors.DefaultSelector()
        self.jobs: list[_Job] = []

    def serve_forever(self) -> NoReturn:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the server, which stops its job
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        while True:
            for key, _ in self.selector.select():
                if key.data is None:
                    conn, _ = self.listener.accept()
                    job = _Job(conn)
                    self.jobs.append(job)
                    self.selector.register(conn, selectors.EVENT_READ, ("message", job))
                else:
                    kind, job = key.data
                    (self._read if kind == "message" else self._reap)(job)

    def _read(self, job: _Job) -> None:
        try:
            data = job.sock.recv(1 << 20)
        except OSError:
            data = b""
        if not data:
            self._drop(job)
            return
        job.buffer += data
        while b"\n" in job.buffer:
            line, job.buffer = job.buffer.split(b"\n", 1)
            try:
                self._handle(job, json.loads(line))
            except Exception:  # noqa: BLE001 - a request it cannot serve ends its connection, not the loop
                traceback.print_exc()
                self._drop(job)
                return

    def _handle(self, job: _Job, message: dict[str, object]) -> None:
        if job.pid is None:
            self._start(job, message)
        elif job.pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(job.pidfd, int(message["signal"]))

    def _drop(self, job: _Job) -> None:
        """The connection ended before its process: the worker is gone, so must the process be."""
        self.selector.unregister(job.sock)
        job.sock.close()
        if job.pidfd is None:
            self.jobs.remove(job)
        else:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(job.pidfd, signal.SIGKILL)  # reaped, as ever, once it has exited

    def _start(self, job: _Job, request: dict[str, object]) -> None:
        _flush_streams()
        fork_server = os.getpid()
        pid = os.fork()
        if pid == 0:
            self._become_child(request, fork_server)
        try:
            job.pidfd = os.pidfd_open(pid)
        except OSError:  # not supervisable: it must not train
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise
        job.pid = pid
        self.selector.register(job.pidfd, selectors.EVENT_READ, ("exit", job))
        with contextlib.suppress(OSError):  # a worker already gone: its EOF is read next
            _send(job.sock, {"pid": pid})

    def _reap(self, job: _Job) -> None:
        assert job.pid is not None and job.pidfd is not None
        _, status = os.waitpid(job.pid, 0)
        self.selector.unregister(job.pidfd)
        os.close(job.pidfd)
        self.jobs.remove(job)
        if job.sock.fileno() != -1:
            with contextlib.suppress(OSError):
                _send(job.sock, {"exit": os.waitstatus_to_exitcode(status)})
            self.selector.unregister(job.sock)
            job.sock.close()

    def _become_child(self, request: dict[str, object], fork_server: int) -> NoReturn:
        code = 1
        try:
            die_with_parent(fork_server)
            if self.name is not None:
                _prctl(PR_SET_NAME, self.name.encode())
            for job in self.jobs:  # none of the fork server's connections is this process's business
                job.sock.close()
            self.selector.close()
            self.listener.close()
            env = request["env"]
            assert isinstance(env, dict)
            os.environ.clear()
            os.environ.update(env)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            reseed()
            code = self.target(request, fork_server)
        except BaseException:  # noqa: BLE001 - a fork must never return into the fork server's loop
            traceback.print_exc()
        finally:
            # As an exec'd process exits: the exit handlers (the last log lines), the streams, and
            # none of the fork server's state, which is not this process's to tear down.
            atexit._run_exitfuncs()
            _flush_streams()
            os._exit(code)


def reseed() -> None:
    """Fresh random state, as an exec'd process has: a fork starts with its parent's. (A module
    not imported yet seeds itself when it is.)"""
    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    if "torch" in sys.modules:
        sys.modules["torch"].seed()


class ForkedProcess:
    """A process started by a fork server (a job's training process): the part of Popen a worker
    uses. `request` is what the fork server's target reads, "env" included."""

    def __init__(self, path: str, request: Mapping[str, Any]) -> None:
        # As Popen's args, in messages: what was asked for, but not the environment (it holds secrets).
        self.args = ["fork server", path, json.dumps({k: v for k, v in request.items() if k != "env"})]
        self.returncode: int | None = None
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._buffer = b""
        try:
            self._sock.settimeout(CONNECT_TIMEOUT_S)
            self._sock.connect(path)
            _send(self._sock, {**request, "env": dict(request["env"])})
            while b"\n" not in self._buffer:
                self._receive(0)
            self.pid = int(self._take_line()["pid"])
            # From here on poll() must not wait: a socket with a timeout waits for data even
            # when recv is told not to.
            self._sock.setblocking(False)
        except BaseException:
            self._sock.close()
            raise

    def _receive(self, flags: int) -> None:
        data = self._sock.recv(1 << 16, flags)
        if not data:
            raise ConnectionError("the fork server closed the connection")
        self._buffer += data

    def _take_line(self) -> dict[str, int]:
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def poll(self) -> int | None:
        if self.returncode is not None:
            return self.returncode
        try:
            self._receive(0)
        except BlockingIOError:
            pass
        except OSError:  # the fork server died, and the process with it (PR_SET_PDEATHSIG)
            self._buffer += json.dumps({"exit": -signal.SIGKILL}).encode() + b"\n"
        if b"\n" in self._buffer:
            self.returncode = int(self._take_line()["exit"])
            self._sock.close()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self._sock, selectors.EVENT_READ)
            while self.poll() is None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise subprocess.TimeoutExpired(self.args, timeout or 0)
                selector.select(left)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(OSError):  # the fork server is gone: so is the process
                _send(self._sock, {"signal": int(sig)})

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


TrainingProcess = subprocess.Popen[bytes] | ForkedProcess


def start_training_process(job_id: str, worker: str, env: Mapping[str, str]) -> TrainingProcess:
    """The job's training process: forked by this process's fork server where it has one, else
    `python -m training.execution.runner JOB_ID WORKER`."""
    env = {name: value for name, value in env.items() if name != FORK_SERVER_ENV}
    if path := os.environ.get(FORK_SERVER_ENV):
        try:
            return ForkedProcess(path, {"job": job_id, "worker": worker, "env": env})
        except (OSError, ValueError, KeyError) as exc:
            log.warning("the fork server did not start job %s (%s); starting it with python -m", job_id, exc)
    return subprocess.Popen([sys.executable, "-m", "training.execution.runner", job_id, worker], env=env)
