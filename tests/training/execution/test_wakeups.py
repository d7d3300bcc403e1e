"""Wakeups.wait without PostgreSQL (a sleep) and its `done`, which ends the wait early."""

import threading
import time
from pathlib import Path

from training.execution.wakeups import DONE_CHECK_S, Wakeups


def test_a_wait_ends_once_done_answers_true_not_at_its_timeout(tmp_path: Path) -> None:
    wakeups = Wakeups(f"sqlite:///{tmp_path / 'jepa.db'}", threading.Event())
    finished_at = time.monotonic() + 0.3
    started = time.monotonic()
    assert wakeups.wait(5.0, done=lambda: time.monotonic() >= finished_at) == []
    assert 0.3 <= time.monotonic() - started < 0.3 + 5 * DONE_CHECK_S


def test_without_done_it_sleeps_out_its_timeout_unless_stopped(tmp_path: Path) -> None:
    stop = threading.Event()
    wakeups = Wakeups(f"sqlite:///{tmp_path / 'jepa.db'}", stop)
    started = time.monotonic()
    assert wakeups.wait(0.3) == []
    assert time.monotonic() - started >= 0.3
    threading.Timer(0.1, stop.set).start()
    started = time.monotonic()
    assert wakeups.wait(5.0) == []
    assert time.monotonic() - started < 1.0
