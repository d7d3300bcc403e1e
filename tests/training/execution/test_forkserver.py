"""The fork server starts each job's process as `python -m training.execution.runner` would:
the environment it is sent, fresh random seeds, its exit code or signal back to the worker, and
no process left running once its worker or the fork server is gone. Real training through it is
what every e2e server does (`jepa serve`, `jepa worker`)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from training.execution import forkserver
from training.execution.forkserver import FORK_SERVER_ENV, ForkedProcess, start_training_process

pytestmark = pytest.mark.skipif(not forkserver.available(), reason="fork servers need Linux pidfds")
ROOT = Path(__file__).resolve().parents[3]


class Host:
    """A process running a fork server of stand-in jobs (fork_server_host.py)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.training.execution.fork_server_host"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        started = json.loads(self.proc.stdout.readline())
        self.socket, self.pid = started["socket"], started["pid"]

    def start(self, job: str, **env: str) -> ForkedProcess:
        return ForkedProcess(self.socket, {"job": job, "worker": "host:1", "env": env})

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.communicate(timeout=10)


@pytest.fixture(scope="module")
def host() -> Iterator[Host]:
    host = Host()
    yield host
    host.close()


def running(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie (one whose parent died waits for init to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_each_process_gets_the_environment_it_is_sent_fresh_seeds_and_a_name(host: Host, tmp_path: Path) -> None:
    seen = []
    for mark in ("a", "b"):
        report = tmp_path / f"{mark}.json"
        process = host.start(f"report:{report}", MARK=mark)
        assert process.wait(30) == 0
        seen.append(json.loads(report.read_text()))
    assert [s["env"] for s in seen] == ["a", "b"]  # the environment sent, not the fork server's
    assert all(s["fork_server_env"] is None for s in seen)
    assert seen[0]["random"] != seen[1]["random"]
    assert all(s["parent"] == s["fork_server"] == host.pid and s["name"] == "jepa-train" for s in seen)
    assert all(s["worker"] == "host:1" for s in seen)


def test_the_worker_gets_the_exit_code_and_signals_reach_the_process(host: Host) -> None:
    assert host.start("exit:7").wait(30) == 7
    for stop, sig in ((ForkedProcess.terminate, signal.SIGTERM), (ForkedProcess.kill, signal.SIGKILL)):
        process = host.start("sleep")
        assert process.poll() is None
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(0.2)
        stop(process)
        assert process.wait(30) == -sig  # as Popen reports a process killed by a signal
        assert gone(process.pid)


def test_a_worker_that_disconnects_takes_its_process_with_it(host: Host) -> None:
    process = host.start("sleep")
    process._sock.close()  # what the worker's process dying does to its end
    assert gone(process.pid), "the process outlived the worker that asked for it"
    assert host.start("exit:0").wait(30) == 0  # and the fork server serves on


def test_a_process_dies_with_the_fork_server_and_the_worker_hears_of_it() -> None:
    host = Host()
    try:
        process = host.start("sleep")
        os.kill(host.proc.pid, signal.SIGKILL)  # the fork server dies with it, then its job's process
        assert gone(host.pid) and gone(process.pid)
        assert process.wait(30) == -signal.SIGKILL
    finally:
        host.close()


def test_without_a_fork_server_the_runner_starts_with_python_m(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(FORK_SERVER_ENV, str(tmp_path / "no-such-socket"))
    with caplog.at_level(logging.WARNING, logger="jepa.worker"):
        process = start_training_process("some-job", "host:1", {**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert isinstance(process, subprocess.Popen)
        assert process.args[1:] == ["-m", "training.execution.runner", "some-job", "host:1"]
        assert "the fork server did not start job some-job" in caplog.text
    finally:
        process.wait(60)  # its parent is not host 1: it refuses to train
    assert process.returncode != 0
