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


def test_demo_prints_the_seeds_lines_and_saves_its_plots(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = jepa("demo", "--epochs", "2", "--pattern", "mixed", "--out", str(out), data_dir=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Epoch 0, Loss:" in result.stdout and "Mean similarity:" in result.stdout
    assert "retrieval_ratio" in result.stdout and "probe_kind_acc" in result.stdout
    for name in ("sequences", "loss", "embeddings", "predictions"):
        assert (out / f"{name}.png").read_bytes().startswith(b"\x89PNG")


def test_datasets_upload_and_list(tmp_path: Path) -> None:
    import numpy as np

    np.save(tmp_path / "walks.npy", np.random.default_rng(0).normal(size=(6, 9, 3)).astype(np.float32))
    uploaded = jepa("datasets", "upload", str(tmp_path / "walks.npy"), data_dir=tmp_path)
    assert uploaded.returncode == 0, uploaded.stdout + uploaded.stderr
    assert "6 sequences of 3 features" in uploaded.stdout
    listed = jepa("datasets", "list", data_dir=tmp_path)
    assert "walks" in listed.stdout and "9-9" in listed.stdout
    (tmp_path / "bad.csv").write_text("id,x\n1,2\n")
    refused = jepa("datasets", "upload", str(tmp_path / "bad.csv"), data_dir=tmp_path)
    assert refused.returncode == 2 and "header" in refused.stdout
