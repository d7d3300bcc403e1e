"""A process with a fork server whose jobs are the test's stand-ins for training, chosen by the
job id: `exit:N` returns N; `report:PATH` writes what the process sees to PATH; `sleep` waits to
be signalled. It prints the fork server's socket and pid, then lives until its stdin closes.
`python -m tests.training.execution.fork_server_host`."""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from training.execution.forkserver import FORK_SERVER_ENV, TRAINING_PROCESS_NAME, start_fork_server


def stand_in(request: Mapping[str, Any], fork_server: int) -> int:
    kind, _, argument = str(request["job"]).partition(":")
    if kind == "exit":
        return int(argument)
    if kind == "report":
        seen = {
            "env": os.environ.get("MARK"),
            "fork_server_env": os.environ.get(FORK_SERVER_ENV),
            "random": random.random(),
            "parent": os.getppid(),
            "fork_server": fork_server,
            "worker": request["worker"],
            "name": Path("/proc/self/comm").read_text().strip(),
        }
        Path(argument).write_text(json.dumps(seen))
        return 0
    while True:  # sleep: until a signal ends it
        time.sleep(1)


if __name__ == "__main__":
    pid = start_fork_server(stand_in, TRAINING_PROCESS_NAME)
    print(json.dumps({"socket": os.environ.get(FORK_SERVER_ENV), "pid": pid}), flush=True)
    sys.stdin.read()
