"""The database artifact store on SQLite and PostgreSQL: what one data directory publishes,
another fetches intact, and nothing of a rolled-back transaction is kept."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from sqlalchemy import select

from jepa_model import TrainConfig, __version__, save_checkpoint
from jepa_model.checkpoint import checkpoint_problem
from tests.factories import tiny_model
from training.store import artifacts
from training.store.artifacts import DatabaseStore, FileStore
from training.store.db import SessionFactory
from training.store.models import ArtifactChunkRow, ArtifactRow


def checkpoint(root: Path, relative: str, size: int = 10_000) -> dict[str, bytes]:
    files = {
        f"{relative}/model.safetensors": bytes(range(256)) * (size // 256),
        f"{relative}/config.json": b'{"format": 1}\n',
        f"{relative}/plots/loss.png": b"\x89PNG" + b"x" * 100,
    }
    for key, data in files.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    return files


def test_what_one_host_publishes_another_fetches(
    factory: SessionFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(artifacts, "CHUNK_BYTES", 1_000)  # several chunks per file
    writer, reader = DatabaseStore(tmp_path / "a"), DatabaseStore(tmp_path / "b")
    files = checkpoint(writer.data_dir, "checkpoints/m/job")
    with factory.begin() as session:
        writer.publish(session, "checkpoints/m/job")
    with factory() as session:
        assert reader.keys(session) == set(files)
        assert reader.fetch(session, "checkpoints/m/job") == tmp_path / "b" / "checkpoints/m/job"
    for key, data in files.items():
        assert (reader.data_dir / key).read_bytes() == data

    # A local copy that went bad is fetched again; a single file can be fetched alone.
    (reader.data_dir / "checkpoints/m/job/model.safetensors").write_bytes(b"tampered")
    (reader.data_dir / "checkpoints/m/job/config.json").unlink()
    with factory() as session:
        reader.fetch(session, "checkpoints/m/job/model.safetensors")
        assert not (reader.data_dir / "checkpoints/m/job/config.json").exists()
        reader.fetch(session, "checkpoints/m/job")
    for key, data in files.items():
        assert hashlib.sha256((reader.data_dir / key).read_bytes()).digest() == hashlib.sha256(data).digest()


def test_forget_takes_a_prefix_and_no_lookalike(factory: SessionFactory, tmp_path: Path) -> None:
    store = DatabaseStore(tmp_path)
    checkpoint(tmp_path, "checkpoints/m/job_1")
    checkpoint(tmp_path, "checkpoints/m/jobX1")  # what "job_1" would match if _ were a wildcard
    with factory.begin() as session:
        store.publish(session, "checkpoints/m/job_1")
        store.publish(session, "checkpoints/m/jobX1")
    with factory.begin() as session:
        store.forget(session, "checkpoints/m/job_1")
    with factory() as session:
        assert {key.split("/")[2] for key in store.keys(session)} == {"jobX1"}


def test_a_rolled_back_publish_keeps_nothing(factory: SessionFactory, tmp_path: Path) -> None:
    store = DatabaseStore(tmp_path)
    checkpoint(tmp_path, "checkpoints/m/lost")
    with factory() as session:
        store.publish(session, "checkpoints/m/lost")
        session.rollback()  # the registration's compare-and-set failed: the job was not ours
    with factory() as session:
        assert store.keys(session) == set()


def test_the_file_store_is_the_data_directory(factory: SessionFactory, tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    checkpoint(tmp_path, "checkpoints/m/job")
    with factory.begin() as session:
        store.publish(session, "checkpoints/m/job")
        assert store.keys(session) == set()
        assert store.fetch(session, "checkpoints/m/job") == tmp_path / "checkpoints/m/job"


def test_a_key_leading_out_of_the_data_directory_is_never_written(factory: SessionFactory, tmp_path: Path) -> None:
    store = DatabaseStore(tmp_path / "data")
    key = "checkpoints/m/job/../../../../escaped"
    with factory.begin() as session:
        session.add(ArtifactRow(key=key, sha256=hashlib.sha256(b"x").hexdigest(), size=1))
        session.flush()
        session.add(ArtifactChunkRow(key=key, seq=0, data=b"x"))
    with factory() as session:
        store.fetch(session, "checkpoints/m/job")
    assert not (tmp_path / "escaped").exists()


def test_a_stored_copy_that_fails_its_checksum_is_reported_as_such_not_as_missing(
    factory: SessionFactory, tmp_path: Path
) -> None:
    """Issue 26: a checkpoint whose copy in the database failed its checksum read as
    "model.safetensors is missing"; the reader now says that it does not match its sha256."""
    writer, reader = DatabaseStore(tmp_path / "a"), DatabaseStore(tmp_path / "b")
    sha256 = save_checkpoint(tiny_model(), writer.local("checkpoints/m/job"), TrainConfig(), "seed", __version__)
    key = "checkpoints/m/job/model.safetensors"
    with factory.begin() as session:
        writer.publish(session, "checkpoints/m/job")
    with factory.begin() as session:  # one byte of the stored copy flipped
        chunk = session.scalars(select(ArtifactChunkRow).where(ArtifactChunkRow.key == key)).first()
        assert chunk is not None
        chunk.data = bytes([chunk.data[0] ^ 1]) + chunk.data[1:]
    with factory() as session:
        problem = checkpoint_problem(reader.fetch(session, "checkpoints/m/job"), sha256)
    assert problem is not None and "does not match the recorded" in problem and "missing" not in problem
