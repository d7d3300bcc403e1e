"""Artifact removal stays inside the data directory, whatever path a row names."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.lifecycle import remove_artifact


@pytest.mark.parametrize("relative", ["..", "../outside", "/etc", ".", "checkpoints/../.."])
def test_a_path_outside_the_data_directory_is_refused(tmp_path: Path, relative: str) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (tmp_path / "outside").write_text("keep me")
    with pytest.raises(ValueError, match="not inside the data directory"):
        remove_artifact(data_dir, relative)
    assert (tmp_path / "outside").read_text() == "keep me" and data_dir.is_dir()


def test_a_directory_or_a_file_goes_and_its_size_is_reported(tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoints" / "m" / "job"
    checkpoint.mkdir(parents=True)
    (checkpoint / "model.safetensors").write_bytes(b"x" * 100)
    (checkpoint / "plots").mkdir()
    (checkpoint / "plots" / "loss.png").write_bytes(b"y" * 20)
    assert remove_artifact(tmp_path, "checkpoints/m/job") == 120
    assert not checkpoint.exists()
    assert remove_artifact(tmp_path, "checkpoints/m/job") == 0  # already gone: nothing to free
