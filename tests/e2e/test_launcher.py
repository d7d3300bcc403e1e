"""The launcher's forked commands (tests/e2e/launcher.py) answer as exec'd ones do: the same exit
code and the same output, each stream its own, in the directory and environment asked for."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e import servers
from tests.e2e.servers import run_jepa

pytestmark = pytest.mark.skipif(not servers.forked(), reason="JEPA_TEST_PROCESSES=exec, or no fork servers here")


def exec_jepa(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "service.cli", *args]
    return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "args",
    [["--help"], ["train", "--help"], ["no-such-command"], ["datasets"], ["gc", "--dry-run"]],
    ids=["help", "train-help", "unknown", "datasets", "gc"],
)
def test_a_forked_command_answers_as_an_exec_d_one(args: list[str], tmp_path: Path) -> None:
    # A relative data dir: both must resolve it against the directory asked for; COLUMNS: both
    # must read it at run time (the launcher imported the CLI without it).
    env = {k: v for k, v in os.environ.items() if not k.startswith("JEPA_")}
    env |= {"COLUMNS": "150", "JEPA_DATA_DIR": "relative-data"}
    forked = run_jepa(args, env, cwd=tmp_path)
    made_forked = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    shutil.rmtree(tmp_path / "relative-data", ignore_errors=True)
    execd = exec_jepa(args, env, tmp_path)
    assert (forked.returncode, forked.stdout, forked.stderr) == (execd.returncode, execd.stdout, execd.stderr)
    assert made_forked == sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
