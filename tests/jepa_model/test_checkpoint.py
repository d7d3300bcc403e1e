import errno
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from jepa_model import CheckpointCorrupt, CheckpointMissing, TrainConfig, load_checkpoint, save_checkpoint
from jepa_model.checkpoint import CONFIG_FILE, WEIGHTS_FILE, atomic_write, sha256_file
from tests.factories import tiny_model


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, str]:
    model = tiny_model(input_dim=3)
    model.update_target(0.5)  # make the two encoders differ
    sha = save_checkpoint(model, tmp_path / "ckpt", TrainConfig(context_len=5, target_len=3), "seed", "9.9.9")
    return tmp_path / "ckpt", sha


def test_round_trip_reproduces_outputs_exactly(saved: tuple[Path, str]) -> None:
    directory, sha = saved
    original = tiny_model(input_dim=3)
    original.update_target(0.5)
    loaded = load_checkpoint(directory, expected_sha256=sha)
    x = torch.randn(4, 7, 3)
    with torch.no_grad():
        for encoder in ("context", "target"):
            assert torch.equal(original.encode(x, encoder=encoder), loaded.model.encode(x, encoder=encoder))
        assert torch.equal(original.predict(x), loaded.model.predict(x))
    assert loaded.model_config == original.config
    assert loaded.train_config == TrainConfig(context_len=5, target_len=3)
    assert loaded.meta["preset"] == "seed" and loaded.meta["package_version"] == "9.9.9"


def test_config_json_holds_what_rebuilds_the_model(saved: tuple[Path, str]) -> None:
    config = json.loads((saved[0] / CONFIG_FILE).read_text())
    assert config["model"]["input_dim"] == 3 and config["model"]["hidden_dim"] == 16
    assert config["train"]["context_len"] == 5 and config["train"]["target_len"] == 3
    assert config["preset"] == "seed" and config["package_version"] == "9.9.9"


def test_recorded_sha256_is_the_weights_files(saved: tuple[Path, str]) -> None:
    directory, sha = saved
    assert sha256_file(directory / WEIGHTS_FILE) == sha
    assert sorted(p.name for p in directory.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]  # no temp files left


def test_a_wrong_checksum_is_refused(saved: tuple[Path, str]) -> None:
    with pytest.raises(CheckpointCorrupt, match="sha256"):
        load_checkpoint(saved[0], expected_sha256="0" * 64)


def test_a_truncated_file_is_refused(saved: tuple[Path, str]) -> None:
    weights = saved[0] / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(CheckpointCorrupt):
        load_checkpoint(saved[0])


def test_a_missing_file_is_refused(saved: tuple[Path, str]) -> None:
    (saved[0] / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointMissing):
        load_checkpoint(saved[0])


def test_a_config_that_disagrees_with_the_weights_is_refused(saved: tuple[Path, str]) -> None:
    config_path = saved[0] / CONFIG_FILE
    config = json.loads(config_path.read_text())
    config["model"]["hidden_dim"] = 32
    config_path.write_text(json.dumps(config))
    with pytest.raises(CheckpointCorrupt, match="disagrees"):
        load_checkpoint(saved[0], expected_sha256=saved[1])


def test_loading_never_unpickles(saved: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("unpickling on the load path")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    assert load_checkpoint(saved[0], expected_sha256=saved[1]).model is not None


def no_space(*_args: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "file.bin"
    atomic_write(target, b"old")
    monkeypatch.setattr(os, "fsync", no_space)  # the data is written; making it durable fails
    with pytest.raises(OSError) as caught:
        atomic_write(target, b"new" * 1000)
    assert caught.value.errno == errno.ENOSPC
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"] and target.read_bytes() == b"old"


def test_a_failed_checkpoint_leaves_no_partial_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError):
        save_checkpoint(tiny_model(), tmp_path / "ckpt", TrainConfig(), "seed", "9.9.9")
    assert not (tmp_path / "ckpt").exists()  # it made the directory, so it takes it away again

    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "notes.txt").write_text("not the checkpoint's")
    with pytest.raises(OSError):
        save_checkpoint(tiny_model(), tmp_path / "kept", TrainConfig(), "seed", "9.9.9")
    assert [p.name for p in (tmp_path / "kept").iterdir()] == ["notes.txt"]  # someone else's: only its own files go


FILE_SIZE_LIMIT_SCRIPT = """
import resource, sys
from jepa_model import TrainConfig, save_checkpoint
from tests.factories import tiny_model

model = tiny_model(input_dim=3)  # its weights file is about 36 KB
resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, resource.RLIM_INFINITY))
try:
    save_checkpoint(model, sys.argv[1], TrainConfig(), "seed", "9.9.9")
except OSError as exc:
    print(exc.errno)
"""


def test_a_real_write_past_the_file_size_limit_cleans_up(tmp_path: Path) -> None:
    """RLIMIT_FSIZE makes the kernel refuse the write itself (Python ignores SIGXFSZ): EFBIG."""
    directory = tmp_path / "ckpt"
    result = subprocess.run(
        [sys.executable, "-c", FILE_SIZE_LIMIT_SCRIPT, str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[2],
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(errno.EFBIG)
    assert list(tmp_path.iterdir()) == []
