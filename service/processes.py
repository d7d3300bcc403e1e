"""Several API processes on one port: `jepa serve --workers N` (JEPA_WORKERS).

uvicorn's supervisor starts N processes that accept on one socket, and restarts any that dies.
What must not be multiplied is arranged here, through a directory the supervisor makes for the
group and names in the environment its processes inherit:

- The embedded training worker runs in exactly one process: the one holding an exclusive lock
  on a file in that directory. The others try again each second, so when the holder dies (and
  the kernel drops its lock) a survivor or the holder's replacement takes the worker over.
- Prometheus counters and histograms are written per process to files in that directory
  (prometheus-client's multiprocess mode, chosen by PROMETHEUS_MULTIPROC_DIR) and summed at each
  scrape, whichever process answers it.

A single process (the default) uses none of this: no directory, no lock, in-memory metrics.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:  # the supervisor imports this module and must stay small: no torch there
    from training.worker import Worker

log = logging.getLogger("jepa.processes")

# Where the supervisor tells its processes the group directory is; set by `prepare_group` only.
GROUP_DIR_ENV = "JEPA_SERVE_GROUP_DIR"
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's own name for it


def prepare_group(workers: int) -> Path | None:
    """In the supervisor, before its processes start: the group's directory, or None for one
    process. The caller removes it with `remove_group` once they have all exited."""
    if workers <= 1:
        return None
    _remove_orphaned_groups()
    group = Path(tempfile.mkdtemp(prefix=f"jepa-serve-{os.getpid()}-"))
    (group / "metrics").mkdir()
    os.environ[GROUP_DIR_ENV] = str(group)
    os.environ[METRICS_DIR_ENV] = str(group / "metrics")
    return group


def remove_group(group: Path | None) -> None:
    if group is not None:
        shutil.rmtree(group, ignore_errors=True)


def _remove_orphaned_groups() -> None:
    """Groups whose supervisor was killed before it could remove them (SIGKILL, OOM)."""
    for group in Path(tempfile.gettempdir()).glob("jepa-serve-*-*"):
        pid = group.name.split("-")[2]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(group, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's
    return True


def group_dir() -> Path | None:
    """The group this process belongs to, when it is one of several."""
    value = os.environ.get(GROUP_DIR_ENV)
    return Path(value) if value else None


class WorkerLease:
    """Runs `worker` in this process once it holds the group's worker lock; see the module doc."""

    RETRY_S = 1.0

    def __init__(self, group: Path, worker: Worker) -> None:
        self.path = group / "embedded-worker.lock"
        self.worker = worker
        self._stop = threading.Event()
        self._lock_file: IO[bytes] | None = None
        self.thread = threading.Thread(target=self._run, name="jepa-worker-lease", daemon=True)

    @property
    def held(self) -> bool:
        return self._lock_file is not None

    def start(self) -> threading.Thread:
        self.thread.start()
        return self.thread

    def stop(self) -> None:
        self._stop.set()
        self.worker.stop()

    def _try_lock(self) -> bool:
        lock_file = self.path.open("ab")
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            return False
        self._lock_file = lock_file  # kept open: closing it (or dying) releases the lock
        return True

    def _run(self) -> None:
        while not self._try_lock():
            if self._stop.wait(self.RETRY_S):
                return
        if self._stop.is_set():
            return
        log.info("process %d runs the embedded training worker", os.getpid())
        self.worker.thread = self.thread  # so worker.problem() sees this thread
        try:
            self.worker.run()
        finally:
            assert self._lock_file is not None
            self._lock_file.close()
