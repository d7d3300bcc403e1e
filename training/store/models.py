"""Registry tables (SQLAlchemy 2.0). The schema itself is owned by the alembic migrations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend; SQLite would otherwise hand back naive ones."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}


class JobStatus:
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ACTIVE = (QUEUED, RUNNING)


class ModelRow(Base):
    __tablename__ = "models"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    versions: Mapped[list[VersionRow]] = relationship(
        back_populates="model", order_by="VersionRow.number", cascade="all, delete-orphan"
    )
    aliases: Mapped[list[AliasRow]] = relationship(back_populates="model", cascade="all, delete-orphan")


class JobRow(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    model_name: Mapped[str] = mapped_column(String(128), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True, default=JobStatus.QUEUED)
    spec: Mapped[dict[str, Any]]  # the validated TrainingSpec, as JSON
    progress: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(256))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]

    version: Mapped[VersionRow | None] = relationship(back_populates="job", uselist=False)


class JobEpochRow(Base):
    """One finished epoch of one attempt of a job: the history behind GET /jobs/{id}/metrics."""

    __tablename__ = "job_epochs"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    attempt: Mapped[int] = mapped_column(primary_key=True)
    epoch: Mapped[int] = mapped_column(primary_key=True)  # 1-based
    loss: Mapped[float] = mapped_column(Float)
    metrics: Mapped[dict[str, Any]]
    seconds: Mapped[float] = mapped_column(Float)  # since the attempt started training
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DatasetRow(Base):
    """An uploaded dataset; its sequences live in a safetensors file under the data directory."""

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    num_sequences: Mapped[int]
    input_dim: Mapped[int]
    min_len: Mapped[int]
    max_len: Mapped[int]
    sha256: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(1024))  # relative to the data directory
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    # The sorted class names of a labelled dataset (its file holds each sequence's code); None if unlabelled.
    classes: Mapped[list[Any] | None] = mapped_column(JSON)

    @property
    def num_classes(self) -> int | None:
        return None if self.classes is None else len(self.classes)


class VersionRow(Base):
    __tablename__ = "versions"
    __table_args__ = (UniqueConstraint("model_id", "number", name="uq_versions_model_number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    number: Mapped[int]
    config: Mapped[dict[str, Any]]  # the checkpoint's config.json
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    sha256: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(1024))  # relative to the data directory
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), unique=True)

    model: Mapped[ModelRow] = relationship(back_populates="versions")
    job: Mapped[JobRow | None] = relationship(back_populates="version")


class AliasRow(Base):
    __tablename__ = "aliases"

    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="CASCADE"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    model: Mapped[ModelRow] = relationship(back_populates="aliases")
    version: Mapped[VersionRow] = relationship()


class IdempotencyRow(Base):
    """The answer to a state-changing request sent with an `Idempotency-Key`: a retry with the
    same key and request gets it again instead of acting twice (service.idempotency)."""

    __tablename__ = "idempotency_keys"

    scope: Mapped[str] = mapped_column(String(32), primary_key=True)  # the route: "train", "datasets"
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))  # sha256 of the request, as the route defines it
    status_code: Mapped[int]
    body: Mapped[dict[str, Any]]
    location: Mapped[str | None] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


# The largest id an INTEGER column holds on PostgreSQL: a cursor past it is refused, not sent to the
# database (where comparing with it fails).
MAX_INTEGER_ID = 2**31 - 1


class JobLogRow(Base):
    """One log line of a job's training process (training.execution.job_logs), for GET /jobs/{id}/logs."""

    __tablename__ = "job_logs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)  # increasing: the paging cursor
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    level: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)


class ArtifactRow(Base):
    """An artifact kept in the database (JEPA_ARTIFACT_STORE=database): its path relative to a data
    directory, the sha256 of its bytes, and its size; the bytes are its ArtifactChunkRows."""

    __tablename__ = "artifacts"

    key: Mapped[str] = mapped_column(String(1024), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ArtifactChunkRow(Base):
    __tablename__ = "artifact_chunks"

    key: Mapped[str] = mapped_column(ForeignKey("artifacts.key", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
