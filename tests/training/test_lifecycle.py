"""Artifact removal stays inside the data directory, whatever path a row names, and `jepa gc`
collects what no row names, on disk and in the database store."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.lifecycle import collect_garbage, remove_artifact
from training.store.artifacts import DatabaseStore
from training.store.db import SessionFactory
from training.store.models import ModelRow, VersionRow


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


def test_gc_forgets_published_artifacts_no_row_names(factory: SessionFactory, tmp_path: Path) -> None:
    store = DatabaseStore(tmp_path)
    for relative in ("checkpoints/m/kept", "checkpoints/m/orphan"):
        (tmp_path / relative).mkdir(parents=True)
        (tmp_path / relative / "model.safetensors").write_bytes(b"w" * 64)
    with factory.begin() as session:
        store.publish(session, "checkpoints/m/kept")
        store.publish(session, "checkpoints/m/orphan")
        model = ModelRow(name="m")
        session.add(model)
        session.flush()
        session.add(VersionRow(model_id=model.id, number=1, config={}, sha256="0" * 64, path="checkpoints/m/kept"))
    with factory() as session:
        report = collect_garbage(session, store, min_age_s=3600)
    assert report.removed == ["checkpoints/m/orphan/model.safetensors (in the database)"]
    assert report.kept_young == 1  # the local copy of the orphan, too new to remove
    with factory() as session:
        assert store.keys(session) == {"checkpoints/m/kept/model.safetensors"}
