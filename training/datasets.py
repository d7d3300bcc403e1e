"""Users' datasets: parsed from JSON, .npy or long-format CSV, checked, stored, and read back.

A dataset is stored once under the data directory as a safetensors file holding every step of
every sequence, `values` (P, D), and each sequence's length, `lengths` (N,), so ragged sequences
need no padding and nothing is ever unpickled. Its sha256 is recorded in the database and checked
whenever a worker reads it back.
"""

from __future__ import annotations

import csv
import hashlib
import io
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import ValidationError
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors
from sqlalchemy import select
from sqlalchemy.orm import Session

from jepa_model import SequenceDataset
from jepa_model.checkpoint import atomic_write
from training.errors import DatasetCorrupt, DatasetNotFound, InvalidInput
from training.models import DatasetRow
from training.spec import StoredDataset, TrainingSpec


@dataclass(frozen=True)
class DatasetLimits:
    max_features: int = 64
    max_sequences: int = 200_000
    max_len: int = 4096
    max_points: int = 20_000_000  # steps over all sequences


LIMITS = DatasetLimits()
MIN_SEQUENCES = 2  # batch-normalised encoders need batches of two


def check_sequences(sequences: Sequence[np.ndarray], limits: DatasetLimits = LIMITS) -> list[np.ndarray]:
    """float32 (T_i, D) arrays, or InvalidInput naming the first thing wrong."""
    if len(sequences) < MIN_SEQUENCES:
        raise InvalidInput(f"a dataset needs at least {MIN_SEQUENCES} sequences, got {len(sequences)}")
    if len(sequences) > limits.max_sequences:
        raise InvalidInput(f"a dataset holds at most {limits.max_sequences} sequences, got {len(sequences)}")
    checked, dim, points = [], None, 0
    for i, seq in enumerate(sequences):
        if seq.ndim != 2:
            raise InvalidInput(f"sequences[{i}] must be a list of points (T, D), got {seq.ndim} dimension(s)")
        if not np.issubdtype(seq.dtype, np.number) or np.issubdtype(seq.dtype, np.complexfloating):
            raise InvalidInput(f"sequences[{i}] must hold real numbers, got {seq.dtype}")
        steps, features = seq.shape
        dim = features if dim is None else dim
        if features != dim:
            raise InvalidInput(f"sequences[{i}] has {features} features; sequences[0] has {dim}")
        if not 1 <= features <= limits.max_features:
            raise InvalidInput(f"points need 1 to {limits.max_features} features, got {features}")
        if not 2 <= steps <= limits.max_len:
            raise InvalidInput(f"sequences[{i}] has {steps} steps; a sequence needs 2 to {limits.max_len}")
        values = seq.astype(np.float32)
        if not np.isfinite(values).all():
            raise InvalidInput(f"sequences[{i}] holds NaN or infinite values (or values beyond float32)")
        points += steps
        if points > limits.max_points:
            raise InvalidInput(f"a dataset holds at most {limits.max_points} points in all")
        checked.append(values)
    return checked


def parse_json(sequences: Sequence[Sequence[Sequence[float]]]) -> list[np.ndarray]:
    arrays = []
    for i, seq in enumerate(sequences):
        try:
            arrays.append(np.asarray(seq, dtype=np.float64))
        except (ValueError, TypeError):
            raise InvalidInput(f"sequences[{i}] must be a list of points with the same number of features") from None
    return check_sequences(arrays)


def parse_npy(data: bytes) -> list[np.ndarray]:
    """A float array (N, T, D) in .npy format."""
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InvalidInput(f"not a readable .npy array: {exc}") from None
    if not isinstance(array, np.ndarray) or array.ndim != 3:
        shape = getattr(array, "shape", "?")
        raise InvalidInput(f"a .npy dataset must be an array (N, T, D), got shape {shape}")
    return check_sequences(list(array))


CSV_KEYS = ("sequence_id", "t")


def parse_csv(data: bytes) -> list[np.ndarray]:
    """Long format: a header `sequence_id, t, <feature>...`, then one row per step.

    Rows may come in any order; within a sequence, t must run 0, 1, ..., T-1 with no gaps.
    Sequences keep the order in which their ids first appear.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput("a CSV dataset must be UTF-8 text") from None
    rows = csv.reader(io.StringIO(text))
    header = [h.strip() for h in next(rows, [])]
    if tuple(header[:2]) != CSV_KEYS or len(header) < 3:
        raise InvalidInput("a CSV dataset needs the header `sequence_id,t,<feature>[,<feature>...]`")
    width = len(header)
    steps: dict[str, dict[int, list[float]]] = {}
    for line, row in enumerate(rows, start=2):
        if not row:
            continue
        if len(row) != width:
            raise InvalidInput(f"CSV line {line} has {len(row)} columns; the header has {width}")
        try:
            t = int(row[1])
            values = [float(v) for v in row[2:]]
        except ValueError:
            raise InvalidInput(f"CSV line {line}: t must be an integer and every feature a number") from None
        sequence = steps.setdefault(row[0].strip(), {})
        if t in sequence:
            raise InvalidInput(f"CSV line {line}: sequence {row[0]!r} has t={t} twice")
        sequence[t] = values
    sequences = []
    for sequence_id, by_t in steps.items():
        if sorted(by_t) != list(range(len(by_t))):
            missing = sorted(set(range(max(by_t) + 1)) - set(by_t))[:5]
            raise InvalidInput(f"sequence {sequence_id!r} must have t = 0..T-1 with no gaps; missing t={missing}")
        sequences.append(np.array([by_t[t] for t in range(len(by_t))], dtype=np.float64))
    return check_sequences(sequences)


def _file_bytes(sequences: list[np.ndarray]) -> bytes:
    values = np.concatenate(sequences).astype(np.float32)  # (P, D)
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)  # (N,)
    return save_safetensors({"values": values, "lengths": lengths})


def store_dataset(session: Session, data_dir: Path, name: str, sequences: list[np.ndarray]) -> DatasetRow:
    """Write the file, then the row: a crash in between leaves an orphan file, never a bad row."""
    dataset_id = uuid.uuid4().hex
    relative = Path("datasets") / f"{dataset_id}.safetensors"
    data = _file_bytes(sequences)
    (data_dir / relative).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(data_dir / relative, data)
    lengths = [len(s) for s in sequences]
    row = DatasetRow(
        id=dataset_id,
        name=name,
        num_sequences=len(sequences),
        input_dim=int(sequences[0].shape[1]),
        min_len=min(lengths),
        max_len=max(lengths),
        sha256=hashlib.sha256(data).hexdigest(),
        path=str(relative),
    )
    session.add(row)
    session.flush()
    return row


def get_dataset(session: Session, dataset_id: str) -> DatasetRow:
    row = session.get(DatasetRow, dataset_id)
    if row is None:
        raise DatasetNotFound(f"dataset {dataset_id!r} not found")
    return row


def list_datasets(session: Session, limit: int = 100) -> list[DatasetRow]:
    return list(session.scalars(select(DatasetRow).order_by(DatasetRow.created_at.desc()).limit(limit)))


def load_sequences(data_dir: Path, row: DatasetRow) -> list[np.ndarray]:
    """The stored sequences, after checking the file against its recorded sha256."""
    path = data_dir / row.path
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetCorrupt(f"dataset {row.id!r} is missing its file {row.path}") from None
    if hashlib.sha256(data).hexdigest() != row.sha256:
        raise DatasetCorrupt(f"dataset {row.id!r} does not match its recorded sha256")
    tensors = load_safetensors(data)
    offsets = np.cumsum(tensors["lengths"])[:-1]
    return list(np.split(tensors["values"], offsets))


def resolve_spec(session: Session, spec: TrainingSpec) -> TrainingSpec:
    """`spec` with its stored dataset's shape filled in, checked again now that it is known."""
    if not isinstance(spec.dataset, StoredDataset):
        return spec
    row = get_dataset(session, spec.dataset.id)
    data = spec.model_dump(mode="json")
    data["dataset"] |= {"input_dim": row.input_dim, "min_len": row.min_len}
    try:
        return TrainingSpec.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput("; ".join(error["msg"] for error in exc.errors())) from None


def split_held_out(
    sequences: list[np.ndarray], seed: int, max_held_out: int
) -> tuple[SequenceDataset, SequenceDataset | None]:
    """(train, held out): a tenth of the sequences, at most `max_held_out`, never trained on.

    Under 20 sequences a tenth is too few to measure anything: nothing is held out (None).
    """
    order = np.random.default_rng(seed).permutation(len(sequences))
    count = min(len(sequences) // 10, max_held_out) if len(sequences) >= 20 else 0
    train = SequenceDataset([sequences[i] for i in order[count:]])
    return train, SequenceDataset([sequences[i] for i in order[:count]]) if count else None
