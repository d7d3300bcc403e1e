"""Real processes for end-to-end tests: `jepa serve` and `jepa worker` subprocesses, and CLI
commands run to completion.

Each is forked from this test process's launcher (tests/e2e/launcher.py), which has imported the
CLI once, rather than exec'd as `python -m service.cli`: the same command, without the 3 CPU-seconds
of imports it would start with.
Exec'd still: a process under a memory limit (pages shared with the launcher would be charged to
the launcher's cgroup, not the limited one), and every process with JEPA_TEST_PROCESSES=exec.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import sqlalchemy as sa

from bench.wakeups import training_processes  # noqa: F401 - tests import it from here
from tests.postgres import admin_engine, create_database, drop_databases, url_of
from training.execution import forkserver
from training.execution.forkserver import ForkedProcess

REPO = Path(__file__).resolve().parents[2]
# "fork" (the default): the e2e processes are forked from a launcher; "exec": each is exec'd.
PROCESSES = os.environ.get("JEPA_TEST_PROCESSES", "fork")
if PROCESSES not in ("fork", "exec"):
    raise ValueError(f"JEPA_TEST_PROCESSES must be fork or exec, not {PROCESSES!r}")

# Small enough that the first-start training job takes a couple of seconds.
FAST_ENV = {
    "JEPA_BOOTSTRAP_EPOCHS": "2",
    "JEPA_BOOTSTRAP_NUM_SAMPLES": "64",
    "JEPA_WORKER_POLL_S": "0.2",
    "JEPA_LOG_LEVEL": "info",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MemoryLimit:
    """A memory cgroup (v1 or v2, under this process's own) capping a server and its children;
    where none can be made, `prlimit --as` on the address space, a coarser cap."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.cgroup = self._make_cgroup(limit_bytes)

    @staticmethod
    def _make_cgroup(limit_bytes: int) -> Path | None:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for root, limit_file in (
                (
                    Path("/sys/fs/cgroup/memory") if "memory" in controllers.split(",") else None,
                    "memory.limit_in_bytes",
                ),
                (Path("/sys/fs/cgroup") if controllers == "" else None, "memory.max"),
            ):
                if root is None or not (root / path.lstrip("/") / limit_file).exists():
                    continue
                group = root / path.lstrip("/") / f"jepa-test-{os.getpid()}-{time.monotonic_ns()}"
                try:
                    group.mkdir()
                    (group / limit_file).write_text(str(limit_bytes))
                    return group
                except OSError:
                    continue
        return None

    def command(self, argv: list[str]) -> list[str]:
        if self.cgroup is not None:
            return argv
        return ["prlimit", f"--as={self.limit_bytes * 4}", *argv]  # torch reserves far more than it touches

    def enter(self) -> None:
        """Runs in the child before exec: join the cgroup, so every process it starts is in it too."""
        if self.cgroup is not None:
            (self.cgroup / "cgroup.procs").write_text(str(os.getpid()))

    def peak_bytes(self) -> int | None:
        """The cgroup's peak usage (v1), or None where the cgroup cannot say."""
        if self.cgroup is None:
            return None
        for name in ("memory.max_usage_in_bytes", "memory.peak"):
            if (self.cgroup / name).exists():
                return int((self.cgroup / name).read_text())
        return None

    def remove(self) -> None:
        if self.cgroup is not None:
            with contextlib.suppress(OSError):
                self.cgroup.rmdir()


def peak_rss_bytes(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for {pid}")


class Launcher:
    """This process's launcher (tests/e2e/launcher.py), started on first use; it ends, and every
    process it forked with it, when this process exits."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.host: subprocess.Popen[bytes] | None = None
        self.socket = ""

    def start(
        self, args: list[str], env: dict[str, str], stdout: Path, stderr: Path, cwd: Path | None = None
    ) -> ForkedProcess:
        """`jepa ARGS`, forked: see tests/e2e/launcher.py."""
        with self.lock:
            if self.host is None or self.host.poll() is not None:
                self._start_host()
        request = {"args": args, "env": env, "stdout": str(stdout), "stderr": str(stderr), "cwd": cwd and str(cwd)}
        return ForkedProcess(self.socket, request)

    def _start_host(self) -> None:
        # Its imports see this environment, less what a library would fix at import time that the
        # tests vary per command: COLUMNS and LINES (xdist sets them; rich's consoles would keep
        # them and ignore a command's own). A command's environment is its own (launcher.run_cli).
        env = {k: v for k, v in os.environ.items() if k not in IMPORT_TIME_VARIABLES}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
        self.host = subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.launcher"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert self.host.stdout is not None
        ready = self.host.stdout.readline()
        if not ready:
            raise RuntimeError(f"the launcher exited with {self.host.wait()} before it was ready")
        self.socket = json.loads(ready)["socket"]
        atexit.register(self.close)

    def close(self) -> None:
        if self.host is not None and self.host.poll() is None:
            self.host.communicate(timeout=30)  # its stdin closed: it stops


IMPORT_TIME_VARIABLES = ("COLUMNS", "LINES")
launcher = Launcher()


def forked() -> bool:
    return PROCESSES == "fork" and forkserver.available()


@dataclass
class Process:
    """A `jepa` subprocess whose output goes to a log file, shown when a test fails."""

    args: list[str]
    env: dict[str, str]
    log_path: Path
    memory_limit: MemoryLimit | None = None
    proc: subprocess.Popen[bytes] | ForkedProcess = field(init=False)

    def __post_init__(self) -> None:
        limit = self.memory_limit
        self.log_file = self.log_path.open("ab")  # there from the start, as the test may read it at once
        if limit is None and forked():
            self.proc = launcher.start(self.args, self.env, self.log_path, self.log_path)
            return
        argv = [sys.executable, "-m", "service.cli", *self.args]
        self.proc = subprocess.Popen(
            limit.command(argv) if limit else argv,
            env=self.env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=limit.enter if limit else None,
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()
        assert self.proc.returncode is not None
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def run_jepa(
    args: list[str], env: dict[str, str], cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`jepa ARGS` run to completion, as `subprocess.run(..., capture_output=True, text=True)`
    would: forked from the launcher (or exec'd, as Process decides), its output read back."""
    argv = [sys.executable, "-m", "service.cli", *args]
    if not forked():
        return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    with tempfile.TemporaryDirectory(prefix="jepa-cli-") as tmp:
        stdout, stderr = Path(tmp) / "stdout", Path(tmp) / "stderr"
        stdout.touch()
        stderr.touch()
        proc = launcher.start(args, env, stdout, stderr, cwd)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        return subprocess.CompletedProcess(argv, code, stdout.read_text(), stderr.read_text())


@dataclass
class Server(Process):
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=30)

    def wait_for(self, path: str, status: int = 200, timeout: float = 120) -> httpx.Response:
        deadline = time.monotonic() + timeout
        last: object = None
        with self.client() as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
                try:
                    response = client.get(path)
                    if response.status_code == status:
                        return response
                    last = response.status_code
                except httpx.TransportError as exc:
                    last = exc
                time.sleep(0.2)
        raise TimeoutError(f"{path} never answered {status} (last: {last}):\n{self.log()}")


# The registry of the e2e tests' processes: "sqlite" (the default), each data dir's own jepa.db; or
# "postgres", a PostgreSQL database per data dir (JEPA_TEST_E2E_DATABASE=postgres: a full e2e run
# on PostgreSQL). Either way, a test that sets JEPA_DATABASE_URL itself keeps it.
E2E_DATABASE = os.environ.get("JEPA_TEST_E2E_DATABASE", "sqlite")
if E2E_DATABASE not in ("sqlite", "postgres"):
    raise ValueError(f"JEPA_TEST_E2E_DATABASE must be sqlite or postgres, not {E2E_DATABASE!r}")


class DataDirDatabases:
    """PostgreSQL databases on JEPA_TEST_POSTGRES_URL's server, one per data directory, created on
    first use: every process started on one data dir (a server, its restart, a worker, the CLI)
    shares its registry, as they share the jepa.db inside it on SQLite. `drop_all` drops them
    (the e2e session's end, or this process's exit)."""

    KIND = "e2e_"  # in each name, after tests.postgres.PREFIX

    def __init__(self) -> None:
        self.names: dict[Path, str] = {}
        self._admin: sa.Engine | None = None

    def url(self, data_dir: Path) -> str:
        key = Path(data_dir).resolve()
        if key not in self.names:
            self.names[key] = self._create()
        return url_of(self.names[key])

    def copy(self, source: Path, dest: Path) -> None:
        """Give `dest` a copy of `source`'s database (none if no process ever ran on `source`). The
        copy needs no connection open to the source: every process on it must have stopped."""
        template = self.names.get(Path(source).resolve())
        key = Path(dest).resolve()
        if key in self.names:
            raise RuntimeError(f"{dest} already has a database: a copy onto it would shadow it")
        if template is not None:
            self.names[key] = self._create(template)

    def drop_all(self) -> None:
        if self._admin is None:
            return
        drop_databases(self._admin, list(self.names.values()))
        self.names.clear()
        self._admin.dispose()
        self._admin = None

    def _create(self, template: str | None = None) -> str:
        if self._admin is None:
            self._admin = admin_engine()
            atexit.register(self.drop_all)  # a backstop: the session's end drops them first
        return create_database(self._admin, self.KIND, template)


databases = DataDirDatabases()


def registry_env(data_dir: Path) -> dict[str, str]:
    """What a local process (`jepa encode` without --url) needs to read the registry of the server on
    `data_dir`: the data dir, and in postgres mode that server's database."""
    env = {"JEPA_DATA_DIR": str(data_dir)}
    if E2E_DATABASE == "postgres":
        env["JEPA_DATABASE_URL"] = databases.url(data_dir)
    return env


def server_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JEPA_")}
    if E2E_DATABASE == "postgres" and "JEPA_DATABASE_URL" not in extra:
        env["JEPA_DATABASE_URL"] = databases.url(data_dir)
    return {**env, **FAST_ENV, "JEPA_DATA_DIR": str(data_dir), **extra}


def copy_data_dir(source: Path, dest: Path) -> None:
    """A copy of a stopped server's data dir, and in postgres mode of its database: an equivalent
    registry, since the paths the registry holds are relative to the data dir."""
    shutil.copytree(source, dest)
    if E2E_DATABASE == "postgres":
        databases.copy(source, dest)


StartServer = Callable[..., Server]


def wait_for_job(client: httpx.Client, job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise TimeoutError(f"job {job_id} did not finish: {job}")
