"""Real processes for end-to-end tests: `jepa serve` and `jepa worker` subprocesses."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

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


@dataclass
class Process:
    """A `jepa` subprocess whose output goes to a log file, shown when a test fails."""

    args: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] = field(init=False)

    def __post_init__(self) -> None:
        self.log_file = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", *self.args],
            env=self.env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
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
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


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


def server_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JEPA_")}
    return {**env, **FAST_ENV, "JEPA_DATA_DIR": str(data_dir), **extra}


StartServer = Callable[..., Server]


def wait_for_job(client: httpx.Client, job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise TimeoutError(f"job {job_id} did not finish: {job}")
