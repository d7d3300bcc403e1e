import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.factories import TINY_CONFIG


def jepa(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JEPA_")}
    env["JEPA_DATA_DIR"] = str(data_dir)
    env["COLUMNS"] = "200"  # rich wraps tables to the terminal width
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_train_from_a_config_file_with_flag_overrides(tmp_path: Path) -> None:
    config = tmp_path / "job.json"
    config.write_text(
        json.dumps({"model": "cli", "dataset": {"num_samples": 64, "seq_len": 12}, "config": TINY_CONFIG})
    )
    result = jepa("train", "--config", str(config), "--epochs", "3", "--pattern", "linear", data_dir=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "registered cli version 1" in result.stdout
    assert "epoch 3/3" in result.stdout  # the progress bar reached the end

    listing = jepa("models", data_dir=tmp_path)
    assert "cli" in listing.stdout
    jobs = jepa("jobs", data_dir=tmp_path)
    assert "succeeded" in jobs.stdout and "3/3" in jobs.stdout

    weights = list((tmp_path / "checkpoints" / "cli").glob("*/model.safetensors"))
    assert len(weights) == 1
    cfg = json.loads((weights[0].parent / "config.json").read_text())
    assert cfg["train"]["epochs"] == 3 and cfg["model"]["hidden_dim"] == TINY_CONFIG["hidden_dim"]


def test_train_refuses_a_config_that_cannot_work(tmp_path: Path) -> None:
    result = jepa("train", "--seq-len", "6", "--context-len", "8", data_dir=tmp_path)
    assert result.returncode == 2
    assert "exceeds the shortest sequence's length" in result.stdout
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("command", ["serve", "worker", "train", "models", "jobs"])
def test_every_command_explains_itself(command: str, tmp_path: Path) -> None:
    result = jepa(command, "--help", data_dir=tmp_path)
    assert result.returncode == 0 and "Usage" in result.stdout
