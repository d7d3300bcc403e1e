"""Where checkpoints, datasets and plots are kept, behind one interface (JEPA_ARTIFACT_STORE).

Every process reads and writes artifacts as files under its own data directory, at paths
relative to it (`checkpoints/<model>/<job>/...`, `datasets/<id>.safetensors`), the paths the
registry's rows record. The store decides what else that takes:

- `file` (the default): the data directory is the store. Processes on several hosts must then
  share it (one volume, NFS); only the database is shared otherwise.
- `database`: the artifacts also go into the registry database (PostgreSQL or SQLite), chunked,
  each with its sha256. `publish` uploads them in the caller's transaction, the one that
  registers the version or the dataset, so a row is never committed without its artifacts, and
  a training process that lost its job (its registration's compare-and-set fails) leaves nothing
  behind. `fetch` brings an artifact into the local data directory when it is missing there or
  differs from its recorded sha256: that directory is each process's read cache, and hosts share
  nothing but the database. A stored copy that fails its sha256 is brought over as it is, for
  the reader's own check to report (a checkpoint's or a dataset's "does not match its sha256").

Another backend (an object store) is one more subclass: publish, fetch, forget and keys.
"""

from __future__ import annotations

import hashlib
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Literal

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from jepa_model.checkpoint import atomic_write, sha256_file
from training.store.models import ArtifactChunkRow, ArtifactRow

StoreKind = Literal["file", "database"]
CHUNK_BYTES = 4 << 20  # PostgreSQL's bytea and SQLite's blobs take far more; small chunks bound memory per row


class ArtifactStore(ABC):
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def local(self, relative: str | Path) -> Path:
        """Where the artifact is written, and read, in this process's data directory."""
        return self.data_dir / relative

    @abstractmethod
    def publish(self, session: Session, relative: str | Path) -> None:
        """Make the local artifact at `relative` (a file, or every file under a directory)
        readable by every process, as part of `session`'s transaction."""

    @abstractmethod
    def fetch(self, session: Session, relative: str | Path) -> Path:
        """The artifact's local path, brought there first if this process lacks it."""

    @abstractmethod
    def forget(self, session: Session, relative: str | Path) -> None:
        """Drop the published copy, in `session`'s transaction; the caller removes local files."""

    @abstractmethod
    def keys(self, session: Session) -> set[str]:
        """Every artifact the store holds beyond local files (relative paths)."""


class FileStore(ArtifactStore):
    """The data directory itself: nothing to publish, fetch or forget."""

    def publish(self, session: Session, relative: str | Path) -> None:
        pass

    def fetch(self, session: Session, relative: str | Path) -> Path:
        return self.local(relative)

    def forget(self, session: Session, relative: str | Path) -> None:
        pass

    def keys(self, session: Session) -> set[str]:
        return set()


class DatabaseStore(ArtifactStore):
    """Artifacts as rows of the registry database: `artifacts` (key, sha256, size) and their
    `artifact_chunks`."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self._fetching = threading.Lock()  # one download at a time per process: no two writers of a file

    def publish(self, session: Session, relative: str | Path) -> None:
        root = self.local(relative)
        files = [root] if not root.is_dir() else sorted(p for p in root.rglob("*") if p.is_file())
        files = [p for p in files if not p.name.startswith(".")]  # no half-written temporary file
        self.forget(session, relative)
        for path in files:
            data = path.read_bytes()
            key = path.relative_to(self.data_dir).as_posix()
            session.add(ArtifactRow(key=key, sha256=hashlib.sha256(data).hexdigest(), size=len(data)))
            session.flush()
            for seq, start in enumerate(range(0, max(len(data), 1), CHUNK_BYTES)):
                session.add(ArtifactChunkRow(key=key, seq=seq, data=data[start : start + CHUNK_BYTES]))
            session.flush()

    def fetch(self, session: Session, relative: str | Path) -> Path:
        with self._fetching:
            root = self.data_dir.resolve()
            for row in session.scalars(select(ArtifactRow).where(_under(relative))):
                path = self.data_dir / row.key
                if not path.resolve().is_relative_to(root):
                    continue  # a key no publish writes ("../"): never written outside the data directory
                if path.is_file() and path.stat().st_size == row.size and sha256_file(path) == row.sha256:
                    continue
                chunks = session.scalars(
                    select(ArtifactChunkRow.data).where(ArtifactChunkRow.key == row.key).order_by(ArtifactChunkRow.seq)
                )
                data = b"".join(chunks)
                # A stored copy that fails its checksum is written all the same: the reader checks
                # every artifact against the sha256 its own row records, and so says that the file
                # does not match it. Left out, the file read as missing, which it is not.
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(path, data)
        return self.local(relative)

    def forget(self, session: Session, relative: str | Path) -> None:
        keys = select(ArtifactRow.key).where(_under(relative))
        session.execute(delete(ArtifactChunkRow).where(ArtifactChunkRow.key.in_(keys)))
        session.execute(delete(ArtifactRow).where(_under(relative)))

    def keys(self, session: Session) -> set[str]:
        return set(session.scalars(select(ArtifactRow.key)))


def _under(relative: str | Path):  # type: ignore[no-untyped-def]
    """Rows of the artifact at `relative`, or of every artifact under it when it is a directory."""
    key = Path(relative).as_posix()
    prefix = key.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%"
    return or_(ArtifactRow.key == key, ArtifactRow.key.like(prefix, escape="\\"))


def open_store(kind: StoreKind, data_dir: Path) -> ArtifactStore:
    return DatabaseStore(data_dir) if kind == "database" else FileStore(data_dir)
