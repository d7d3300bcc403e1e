"""`python -m tests.e2e.launcher`: the end-to-end tests' `jepa` processes, forked instead of exec'd.

`python -m service.cli serve` spends about 3 CPU-seconds importing torch, FastAPI and SQLAlchemy
before it does anything, and the e2e tests start such processes by the dozen. This host
imports the CLI and what `jepa serve` and `jepa worker` import once, then runs a fork server
(training.execution.forkserver: what `jepa serve` does for its jobs' processes) whose children
each run the CLI on the arguments, environment, directory and output files a test asks for
(tests/e2e/servers.py: servers and workers, and CLI commands run to completion).

A child is the command exec'd, but for its imports: its environment is the one asked for (plus what
importing set, as it would have), its stdio are the files asked for, sys.argv is the command's,
its random state is fresh, and its exit code is the CLI's. It dies with the host, which exits when
the tests' process closes its stdin. It prints {"socket"} once it is ready.
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import signal
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# What `jepa serve` and `jepa worker` import, most of it only once they run (service/cli.py).
PRELOADED = (
    "service.cli",
    "service.app",
    "service.processes",
    "service.protocol",
    "training.execution.runner",
    "training.worker",
    "uvicorn",
    "uvicorn.lifespan.on",
    "uvicorn.loops.auto",
    "uvicorn.protocols.http.auto",
)
# Variables the imports set (service.engine: ONEDNN_PRIMITIVE_CACHE_CAPACITY): an exec'd command
# sets them too, unless its environment already has them.
SET_BY_IMPORTS: dict[str, str] = {}


def exit_code(code: object) -> int:
    """The exit status of `sys.exit(code)`, as the interpreter would give it."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def run_cli(request: Mapping[str, Any], fork_server: int) -> int:
    """The child: `jepa ARGS` in "cwd", stdin from /dev/null, its output appended to the "stdout"
    and "stderr" files (which may be one)."""
    for fd, path, flags in (
        (0, os.devnull, os.O_RDONLY),
        (1, request["stdout"], os.O_WRONLY | os.O_APPEND | os.O_CREAT),
        (2, request["stderr"], os.O_WRONLY | os.O_APPEND | os.O_CREAT),
    ):
        opened = os.open(path, flags, 0o644)
        os.dup2(opened, fd)
        os.close(opened)
    if request.get("cwd"):
        os.chdir(request["cwd"])
    for name, value in SET_BY_IMPORTS.items():
        os.environ.setdefault(name, value)
    cli = sys.modules["service.cli"]
    # As `python -m service.cli` has them: click names the program after both ("python -m service.cli").
    sys.modules["__main__"] = cli
    sys.argv = [str(cli.__file__), *request["args"]]
    try:
        cli.app()
    except SystemExit as exc:
        return exit_code(exc.code)
    except KeyboardInterrupt:
        # As the interpreter does with an uncaught Ctrl-C: its exit handlers, then death by SIGINT.
        atexit._run_exitfuncs()
        sys.stdout.flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    return 0


def main() -> None:
    from training.execution.forkserver import FORK_SERVER_ENV, start_fork_server

    before = dict(os.environ)
    for module in PRELOADED:
        importlib.import_module(module)
    SET_BY_IMPORTS.update({k: v for k, v in os.environ.items() if before.get(k) != v})
    # A fork copies only the forking thread: a Python thread started by an import would be missing
    # from every child. (Importing torch starts a native thread, idle; `jepa serve` forks past it too.)
    assert threading.active_count() == 1, f"threads before the fork: {threading.enumerate()}"
    # Its children carry this process's name, as an exec'd interpreter would (not the fork server's).
    name = Path("/proc/self/comm").read_text().strip()
    if start_fork_server(run_cli, name) is None:
        raise SystemExit("fork servers are not available here")
    print(json.dumps({"socket": os.environ[FORK_SERVER_ENV]}), flush=True)
    sys.stdin.read()  # until the tests' process closes it, or dies


if __name__ == "__main__":
    main()
