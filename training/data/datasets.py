"""Users' datasets: parsed from JSON, .npy or long-format CSV, checked, stored, and read back.

A dataset is stored once under the data directory as a safetensors file holding every step of
every sequence, `values` (P, D), and each sequence's length, `lengths` (N,), so ragged sequences
need no padding and nothing is ever unpickled. Its sha256 is recorded in the database and checked
whenever a worker reads it back.

A dataset may carry one class label per sequence (strings or integers). They are stored in the
same file, as int64 codes `labels` (N,) with the sorted class names as JSON in its metadata, so the
sha256 covers them too. Labels are never trained on: they only measure how well a version's
embeddings separate the classes, on sequences it never trained on (see `split_for_training`).
"""

from __future__ import annotations

import array
import contextlib
import csv
import hashlib
import io
import json
import os
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors
from sqlalchemy import select
from sqlalchemy.orm import Session

from jepa_model import ModelConfig, SequenceDataset, label_probes
from jepa_model.checkpoint import atomic_write
from jepa_model.data import SHORTEST_PIECE, needs_pieces, training_pieces
from jepa_model.jepa import JEPA
from jepa_model.metrics import embed_sequences
from training.data.arrays import load_npy, read_npy_header
from training.errors import DatasetCorrupt, DatasetNotFound, InvalidInput, StorageFull, preview
from training.settings import StorageSettings
from training.store.artifacts import ArtifactStore
from training.store.db import STORAGE_FULL
from training.store.models import DatasetRow

# A dataset's points have as many features as a model takes: ModelConfig's bound on input_dim.
MODEL_MAX_FEATURES = next(option.metadata["le"] for option in fields(ModelConfig) if option.name == "input_dim")


@dataclass(frozen=True)
class DatasetLimits:
    max_features: int = MODEL_MAX_FEATURES
    max_sequences: int = 200_000
    # Each series' steps: JEPA_MAX_DATASET_LEN, whose default this is; the upload route passes the
    # service's value (`from_settings`).
    max_len: int = StorageSettings.model_fields["max_dataset_len"].default
    max_points: int = 20_000_000  # steps over all sequences
    # Training: batch-normalised encoders need batches of two; one series long enough to be cut
    # into pieces will do.
    min_sequences: int = 2

    @classmethod
    def from_settings(cls, settings: StorageSettings) -> DatasetLimits:
        return cls(max_len=settings.max_dataset_len)


LIMITS = DatasetLimits()
# Reading series to embed rather than to train on: one is enough.
TO_EMBED = DatasetLimits(min_sequences=1)
MAX_CLASSES = 1000  # distinct labels in one dataset
MAX_LABEL_CHARS = 128
MAX_INT_LABEL = 2**53  # integer labels stay exact in JSON and JavaScript


@dataclass(frozen=True)
class Labels:
    """One class per sequence: `codes` (N,) int64 indexing `classes`, which are sorted and either
    all strings or all integers."""

    codes: np.ndarray
    classes: list[str] | list[int]


def check_sequences(sequences: Sequence[np.ndarray], limits: DatasetLimits = LIMITS) -> list[np.ndarray]:
    """float32 (T_i, D) arrays, or InvalidInput naming the first thing wrong."""
    one_long = len(sequences) == 1 and sequences[0].ndim == 2 and len(sequences[0]) >= 2 * SHORTEST_PIECE
    if len(sequences) < limits.min_sequences and not one_long:
        raise InvalidInput(
            f"a dataset needs at least {limits.min_sequences} sequences, or one of at least {2 * SHORTEST_PIECE} "
            f"steps (read as pieces), got {len(sequences)}"
            + (f" of {len(sequences[0])} steps" if len(sequences) == 1 and sequences[0].ndim == 2 else "")
        )
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


def parse_json(sequences: Sequence[Sequence[Sequence[float]]], limits: DatasetLimits = LIMITS) -> list[np.ndarray]:
    arrays = []
    for i, seq in enumerate(sequences):
        try:
            arrays.append(np.asarray(seq, dtype=np.float64))
        except (ValueError, TypeError):
            raise InvalidInput(f"sequences[{i}] must be a list of points with the same number of features") from None
    return check_sequences(arrays, limits)


NPY_FILE = "the file"


def parse_npy(data: bytes, limits: DatasetLimits = LIMITS) -> list[np.ndarray]:
    """A float array (N, T, D) in .npy format, its header checked before anything is allocated."""
    header = read_npy_header(data, NPY_FILE)
    if len(header.shape) != 3:
        raise InvalidInput(f"a .npy dataset must be an array (N, T, D), got shape {header.shape}")
    count, steps, features = header.shape
    if count > limits.max_sequences:  # refused before N arrays are made, each a hundred bytes or so
        raise InvalidInput(f"a dataset holds at most {limits.max_sequences} sequences, got {count}")
    if count * steps > limits.max_points:
        raise InvalidInput(f"a dataset holds at most {limits.max_points} points in all, got {count} × {steps}")
    loaded = load_npy(data, limits.max_points * max(features, 1), NPY_FILE)
    return check_sequences(list(loaded), limits)


CSV_KEYS = ("sequence_id", "t")
CSV_LABEL = "label"
# An integer as an integer is written: no "+", no leading zeros, no "-0". Only a label column of such
# integers, each within ±MAX_INT_LABEL, is read as integers; "01", "+1" and "1" are then three classes.
CANONICAL_INTEGER = re.compile(r"0|-?[1-9][0-9]{0,15}")
MISSING_SHOWN = 5  # missing steps named when a sequence has gaps


def parse_csv(data: bytes, limits: DatasetLimits = LIMITS) -> list[np.ndarray]:
    """The sequences of a long-format CSV (see parse_csv_labelled), without its labels."""
    return parse_csv_labelled(data, limits)[0]


def parse_csv_labelled(data: bytes, limits: DatasetLimits = LIMITS) -> tuple[list[np.ndarray], Labels | None]:
    """Long format: a header `sequence_id, t, <feature>...`, then one row per step.

    Rows may come in any order; within a sequence, t must run 0, 1, ..., T-1 with no gaps.
    Sequences keep the order in which their ids first appear. An optional column named `label`
    (anywhere after `t`) holds each sequence's class: the same value on every row of a sequence;
    when every label is a canonical integer within ±2^53 they are read as integers, otherwise as
    strings, exactly as written (see text_labels).

    `limits` caps the rows (points), sequences, steps and features: the first line to pass one is
    refused, and nothing after it is read. Rows are read one at a time into flat columns (see
    _CsvColumns) and put in place with numpy, so a CSV of millions of rows costs a few dozen bytes
    per row, not Python objects for each.
    """
    rows = _csv_reader(data)
    try:
        columns = _read_csv_columns(rows, limits)
    except csv.Error as exc:
        raise InvalidInput(f"CSV line {rows.line_num} is not valid CSV: {exc}") from None
    except UnicodeDecodeError:
        raise InvalidInput("a CSV dataset must be UTF-8 text") from None
    sequences = _csv_sequences(columns, data)
    ids, raw = list(columns.ids), columns.labels
    del columns  # its row buffers, before check_sequences makes float32 copies of every value
    checked = check_sequences(sequences, limits)
    if raw is None:
        return checked, None
    return checked, parse_labels(text_labels(raw), len(checked), lambda i: f"the label of sequence {preview(ids[i])}")


@dataclass
class _CsvColumns:
    """A long-format CSV's rows as flat columns: 4 bytes for the sequence and for t, 8 per value.

    `ids` maps each sequence id to its code, in order of first appearance; `codes` and `steps`
    hold each row's code and t, `values` its features one after the other; `labels` (None without
    a label column) holds each sequence's label by code.
    """

    ids: dict[str, int]
    codes: array.array[int]
    steps: array.array[int]
    values: array.array[float]
    features: int
    labels: list[str] | None


def _csv_reader(data: bytes) -> Any:  # a csv.reader, whose type is private
    # Decoded as it is read: the text of a large CSV is never held whole beside its bytes.
    return csv.reader(io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline=""))


def _read_csv_columns(rows: Any, limits: DatasetLimits) -> _CsvColumns:
    """The rows of `rows` (a csv.reader at the header), checked and appended to the columns.

    Refuses at the first bad row, and as soon as the rows or sequences pass the limits, without
    reading further: a t past the longest sequence allowed is refused at its line, not listed."""
    header = [h.strip() for h in next(rows, [])]
    label_at = [i for i, h in enumerate(header) if h == CSV_LABEL and i >= 2]
    if tuple(header[:2]) != CSV_KEYS or len(header) - len(label_at) < 3:
        raise InvalidInput("a CSV dataset needs the header `sequence_id,t,<feature>[,<feature>...]` (`label` optional)")
    if len(label_at) > 1:
        raise InvalidInput("a CSV dataset may have one `label` column, not several")
    label = label_at[0] if label_at else None
    features = [i for i in range(2, len(header)) if i != label]
    if len(features) > limits.max_features:
        raise InvalidInput(f"points need 1 to {limits.max_features} features, got {len(features)}")
    width = len(header)
    columns = _CsvColumns({}, array.array("i"), array.array("i"), array.array("d"), len(features), None)
    labels: list[str] = []
    label_lines: list[int] = []  # by code: the line each sequence's label was first given on
    count = 0
    for row in rows:
        if not row:
            continue
        line = rows.line_num
        count += 1
        if count > limits.max_points:
            raise InvalidInput(
                f"a dataset holds at most {limits.max_points} points in all; CSV line {line} is one too many"
            )
        if len(row) != width:
            raise InvalidInput(f"CSV line {line} has {len(row)} columns; the header has {width}")
        try:
            t = int(row[1])
            values = [float(row[i]) for i in features]
        except ValueError:
            raise InvalidInput(f"CSV line {line}: t must be an integer and every feature a number") from None
        if not 0 <= t < limits.max_len:
            raise InvalidInput(
                f"CSV line {line}: t must be 0 to {limits.max_len - 1} (a sequence has at most {limits.max_len} "
                f"steps), got {preview(row[1].strip())}"
            )
        sequence_id = row[0].strip()
        code = columns.ids.get(sequence_id)
        if code is None:
            if len(columns.ids) >= limits.max_sequences:
                raise InvalidInput(
                    f"a dataset holds at most {limits.max_sequences} sequences; CSV line {line} starts one more"
                )
            code = columns.ids[sequence_id] = len(columns.ids)
            if label is not None:
                labels.append(row[label].strip())
                label_lines.append(line)
        elif label is not None and (value := row[label].strip()) != labels[code]:
            first, first_line = labels[code], label_lines[code]
            raise InvalidInput(
                f"CSV line {line}: sequence {preview(sequence_id)} has label {preview(value)}, "
                f"but {preview(first)} on line {first_line}; every row of a sequence must carry the same label"
            )
        columns.codes.append(code)
        columns.steps.append(t)
        columns.values.extend(values)
    if label is not None:
        columns.labels = labels
    return columns


def _csv_sequences(columns: _CsvColumns, data: bytes) -> list[np.ndarray]:
    """The float32 (T_i, D) sequences in code order, or InvalidInput naming a repeated t or a gap.

    Once each sequence's steps are known to be 0..T-1, row i belongs at starts[code_i] + t_i: one
    scatter puts every value in place, with no sort, and an index and a flag per row as temporaries.
    """
    if not columns.ids:
        return []
    codes = np.frombuffer(columns.codes, dtype=np.intc)
    steps = np.frombuffer(columns.steps, dtype=np.intc)
    lengths = np.bincount(codes, minlength=len(columns.ids))
    last = np.zeros(len(lengths), dtype=np.intc)
    np.maximum.at(last, codes, steps)  # each sequence's largest t
    if (last != lengths - 1).any():  # a largest t other than T-1 means a gap or a repeated t
        raise InvalidInput(_steps_problem(columns, data))
    ends = np.cumsum(lengths)
    slots = (ends - lengths).astype(np.int32 if len(codes) < 2**31 else np.int64)[codes]
    slots += steps
    filled = np.zeros(len(codes), dtype=bool)
    filled[slots] = True
    if not filled.all():  # every t is below T, so an empty slot means another was hit twice
        raise InvalidInput(_steps_problem(columns, data))
    del filled
    values = np.empty((len(codes), columns.features), dtype=np.float32)
    with np.errstate(over="ignore"):  # values beyond float32 become inf, which check_sequences refuses
        values[slots] = np.frombuffer(columns.values, dtype=np.float64).reshape(values.shape)
    return np.split(values, ends[:-1])


def _steps_problem(columns: _CsvColumns, data: bytes) -> str:
    """What is wrong with the sequences' steps: the first repeated t in file order, else the first
    sequence (in code order) with a gap. Only called once something is known to be wrong."""
    names = list(columns.ids)
    codes = np.frombuffer(columns.codes, dtype=np.intc)
    steps = np.frombuffer(columns.steps, dtype=np.intc)
    order = np.lexsort((steps, codes))  # by sequence, then t; stable, so a repeated t keeps file order
    sorted_codes, sorted_steps = codes[order], steps[order]
    repeated = (sorted_codes[1:] == sorted_codes[:-1]) & (sorted_steps[1:] == sorted_steps[:-1])
    if repeated.any():
        row = int(order[1:][repeated].min())  # the first row, in file order, whose t came before
        return f"CSV line {_csv_line_of(data, row)}: sequence {preview(names[codes[row]])} has t={steps[row]} twice"
    lengths = np.bincount(sorted_codes, minlength=len(names))
    ends = np.cumsum(lengths)
    # Sorted, distinct and non-negative, a sequence's steps are 0..T-1 exactly when the last is T-1.
    code = int(np.argmax(sorted_steps[ends - 1] != lengths - 1))
    missing = _first_missing(sorted_steps[ends[code] - lengths[code] : ends[code]])
    return f"sequence {preview(names[code])} must have t = 0..T-1 with no gaps; missing t={missing}"


def _first_missing(present: np.ndarray, most: int = MISSING_SHOWN) -> list[int]:
    """The first `most` integers of 0..max(present) absent from `present` (sorted, distinct, >= 0),
    read off the gaps between neighbours: a huge t never becomes a range to list."""
    bounds = np.concatenate(([-1], present.astype(np.int64)))
    missing: list[int] = []
    for k in np.flatnonzero(np.diff(bounds) > 1):
        low, high = int(bounds[k]) + 1, int(bounds[k + 1])
        missing.extend(range(low, min(high, low + most - len(missing))))
        if len(missing) >= most:
            break
    return missing


def _csv_line_of(data: bytes, row: int) -> int:
    """The line on which data row `row` (from 0, blank lines skipped) ends. The CSV is read again:
    only an error names a row's line, so no line number is kept for every row."""
    rows = _csv_reader(data)
    next(rows)
    for index, _ in enumerate(record for record in rows if record):
        if index == row:
            return int(rows.line_num)
    raise ValueError(f"the CSV has no data row {row}")


def text_labels(values: Sequence[str]) -> list[str] | list[int]:
    """Labels read from text (CSV cells): integers when every one of them is a canonical integer
    (as `str(int)` writes it) within ±MAX_INT_LABEL, otherwise the text exactly as written.

    So no two different cells ever become one class ("01", "+1" and "1" stay three), and a cell
    that looks like an integer but could not be one (past 2^53, thousands of digits) is a text
    class, checked like any other (at most MAX_LABEL_CHARS characters)."""
    if values and all(_integer_label(v) for v in values):
        return [int(v) for v in values]
    return list(values)


def _integer_label(text: str) -> bool:
    # At most 16 digits before int() is called: int() of thousands of digits raises (Python's
    # conversion limit), and 16 digits cover ±2^53.
    return CANONICAL_INTEGER.fullmatch(text) is not None and abs(int(text)) <= MAX_INT_LABEL


def _json_kind(value: object) -> str:
    names = {str: "a string", int: "an integer", bool: "a boolean", float: "a float", dict: "an object"}
    names |= {list: "an array", tuple: "an array", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def parse_labels(values: object, count: int, name: Callable[[int], str] = lambda i: f"labels[{i}]") -> Labels:
    """One label per sequence, strings or integers (not a mix), checked and coded.

    `count` is the number of sequences; `name(i)` names label i in error messages.
    """
    if not isinstance(values, list | tuple):
        kind = _json_kind(values)
        raise InvalidInput(f"labels must be an array of strings or integers, one per sequence; got {kind}")
    if len(values) != count:
        raise InvalidInput(f"got {len(values)} labels for {count} sequences; give exactly one label per sequence")
    kinds: dict[type, int] = {}
    for i, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise InvalidInput(f"{name(i)} must be a string or an integer, got {_json_kind(value)}")
        if isinstance(value, str) and not 1 <= len(value) <= MAX_LABEL_CHARS:
            raise InvalidInput(f"{name(i)} must be 1 to {MAX_LABEL_CHARS} characters long, got {len(value)}")
        if isinstance(value, int) and abs(value) > MAX_INT_LABEL:
            raise InvalidInput(f"{name(i)} is an integer beyond ±2^53; use a string for such a class name")
        kinds.setdefault(type(value), i)
    if len(kinds) > 1:
        raise InvalidInput(
            f"labels must be all strings or all integers; {name(kinds[int])} is an integer, {name(kinds[str])} a string"
        )
    classes = sorted(set(values))
    if len(classes) > MAX_CLASSES:
        raise InvalidInput(f"a dataset may have at most {MAX_CLASSES} distinct labels, got {len(classes)}")
    index = {c: code for code, c in enumerate(classes)}
    codes = np.fromiter((index[v] for v in values), dtype=np.int64, count=len(values))
    return Labels(codes=codes, classes=classes)


def parse_label_field(data: str | bytes, count: int) -> Labels:
    """The `labels` part of a multipart upload: a JSON array of strings or integers."""
    try:
        values = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput(
            'the `labels` part must be a JSON array of strings or integers, one per sequence, e.g. ["a", "b"]'
        ) from None
    return parse_labels(values, count)


LABELS_TENSOR = "labels"
CLASSES_KEY = "classes"


def _file_bytes(sequences: list[np.ndarray], labels: Labels | None = None) -> bytes:
    tensors = {
        "values": np.concatenate(sequences).astype(np.float32),  # (P, D)
        "lengths": np.array([len(s) for s in sequences], dtype=np.int64),  # (N,)
    }
    if labels is None:
        return save_safetensors(tensors)
    tensors[LABELS_TENSOR] = labels.codes.astype(np.int64)  # (N,)
    return save_safetensors(tensors, metadata={CLASSES_KEY: json.dumps(labels.classes)})


def store_dataset(
    session: Session, store: ArtifactStore, name: str, sequences: list[np.ndarray], labels: Labels | None = None
) -> DatasetRow:
    """Write the file, then the row: a crash in between leaves an orphan file, never a bad row.
    The store publishes the file in the row's transaction.

    StorageFull when the data directory has no room for the file; nothing written is left behind.
    """
    data_dir = store.data_dir
    if labels is not None and len(labels.codes) != len(sequences):
        raise InvalidInput(f"got {len(labels.codes)} labels for {len(sequences)} sequences")
    dataset_id = uuid.uuid4().hex
    relative = Path("datasets") / f"{dataset_id}.safetensors"
    data = _file_bytes(sequences, labels)
    _write_file(data_dir / relative, data)
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
        classes=None if labels is None else list(labels.classes),
    )
    try:
        session.add(row)
        session.flush()
        store.publish(session, relative)
    except Exception:
        _remove_written(data_dir / relative)  # no row will ever name it
        raise
    return row


def _write_file(path: Path, data: bytes) -> None:
    """atomic_write, or StorageFull (its message names no server path) when there is no room."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data)
    except OSError as exc:
        _remove_written(path)
        if exc.errno in STORAGE_FULL:
            reason = os.strerror(exc.errno)  # e.g. "No space left on device": no path in it
            raise StorageFull(
                f"the server has no room left to store this dataset ({reason}); nothing was stored"
            ) from exc
        raise


def _remove_written(path: Path) -> None:
    """`path` and any temporary file atomic_write left beside it (named `.<name>.*`): the name
    holds a fresh uuid, so nothing else matches, and a failed upload must not keep its space."""
    for leftover in [path, *path.parent.glob(f".{path.name}.*")]:
        with contextlib.suppress(OSError):
            leftover.unlink(missing_ok=True)


def get_dataset(session: Session, dataset_id: str) -> DatasetRow:
    row = session.get(DatasetRow, dataset_id)
    if row is None:
        raise DatasetNotFound(f"dataset {dataset_id!r} not found")
    return row


def list_datasets(session: Session, limit: int = 100) -> list[DatasetRow]:
    return list(session.scalars(select(DatasetRow).order_by(DatasetRow.created_at.desc()).limit(limit)))


def load_sequences(data_dir: Path, row: DatasetRow) -> list[np.ndarray]:
    """The stored sequences, after checking the file against its recorded sha256."""
    return load_dataset(data_dir, row)[0]


def load_dataset(data_dir: Path, row: DatasetRow) -> tuple[list[np.ndarray], Labels | None]:
    """The stored sequences and their labels (None when unlabelled), checked against the sha256."""
    path = data_dir / row.path
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetCorrupt(f"dataset {row.id!r} is missing its file {row.path}") from None
    if hashlib.sha256(data).hexdigest() != row.sha256:
        raise DatasetCorrupt(f"dataset {row.id!r} does not match its recorded sha256")
    tensors = load_safetensors(data)
    offsets = np.cumsum(tensors["lengths"])[:-1]
    sequences = list(np.split(tensors["values"], offsets))
    if LABELS_TENSOR not in tensors:
        return sequences, None
    # The header is JSON after its 8-byte little-endian length; load_safetensors has just parsed it.
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    classes = json.loads(header.get("__metadata__", {}).get(CLASSES_KEY, "null"))
    codes = tensors[LABELS_TENSOR]
    if not isinstance(classes, list) or codes.shape != (len(sequences),) or not (codes >= 0).all():
        raise DatasetCorrupt(f"dataset {row.id!r} has labels that do not fit its sequences")
    if len(codes) and codes.max() >= len(classes):
        raise DatasetCorrupt(f"dataset {row.id!r} has labels that do not fit its sequences")
    return sequences, Labels(codes=codes.astype(np.int64), classes=classes)


def split_held_out(
    sequences: list[np.ndarray], seed: int, max_held_out: int
) -> tuple[SequenceDataset, SequenceDataset | None]:
    """(train, held out): a tenth of the sequences, at most `max_held_out`, never trained on.

    Under 20 sequences a tenth is too few to measure anything: nothing is held out (None).
    """
    order = np.random.default_rng(seed).permutation(len(sequences))
    count = min(len(sequences) // 10, max_held_out) if len(sequences) >= 20 else 0
    cut = needs_pieces([len(x) for x in sequences])
    train, _ = as_pieces([sequences[i] for i in order[count:]], cut)
    return train, as_pieces([sequences[i] for i in order[:count]], cut)[0] if count else None


def as_pieces(sequences: list[np.ndarray], cut: bool) -> tuple[SequenceDataset, np.ndarray]:
    """A dataset of the sequences, as training pieces when `cut` (jepa_model.data.training_pieces),
    and each row's source sequence."""
    if not cut:
        return SequenceDataset(sequences), np.arange(len(sequences))
    pieces, sources = training_pieces(sequences)
    return SequenceDataset(pieces, whole=sequences), sources


# Labelled datasets hold out a quarter of their sequences from this many on, so that the label
# metrics have sequences to score even when the dataset is too small for the tenth above.
LABELLED_MIN_SEQUENCES = 8
LABELLED_HELD_OUT_FRACTION = 0.25
# The label probes are fitted on the embeddings of at most this many training sequences.
LABEL_PROBE_FIT = 4096


@dataclass(frozen=True)
class LabelSplit:
    """The labels of a split: `train` (N_train,) and `held_out` (N_held,) codes into `classes`,
    row for row with the training and held-out SequenceDatasets."""

    classes: list[str] | list[int]
    train: np.ndarray
    held_out: np.ndarray


def split_for_training(
    sequences: list[np.ndarray], labels: Labels | None, seed: int, max_held_out: int
) -> tuple[SequenceDataset, SequenceDataset | None, LabelSplit | None]:
    """(train, held out or None, their labels): split_held_out's split when unlabelled.

    With labels and at least LABELLED_MIN_SEQUENCES sequences, a quarter of them (rounded down, at
    most `max_held_out`) is held out instead, stratified: each class gives its share (rounded
    down) and the rows still missing are drawn at random from the rest. Under that many sequences
    nothing is held out. The labels only choose the split; the sequences are trained on exactly as
    unlabelled ones.
    """
    if labels is None:
        return (*split_held_out(sequences, seed, max_held_out), None)
    n = len(sequences)
    rng = np.random.default_rng(seed)
    target = min(int(n * LABELLED_HELD_OUT_FRACTION), max_held_out) if n >= LABELLED_MIN_SEQUENCES else 0
    shares = [np.zeros(0, dtype=np.int64)]
    for code in range(len(labels.classes)):
        members = rng.permutation(np.flatnonzero(labels.codes == code))
        shares.append(members[: len(members) * target // n])
    held_rows = np.concatenate(shares)
    rest = rng.permutation(np.setdiff1d(np.arange(n), held_rows))
    held_rows = rng.permutation(np.concatenate([held_rows, rest[: target - len(held_rows)]]))
    is_held = np.zeros(n, dtype=bool)
    is_held[held_rows] = True
    train_rows = rng.permutation(np.flatnonzero(~is_held))
    cut = needs_pieces([len(x) for x in sequences])  # pieces keep their sequence's label
    train, train_sources = as_pieces([sequences[i] for i in train_rows], cut)
    held_out, held_sources = as_pieces([sequences[i] for i in held_rows], cut) if len(held_rows) else (None, None)
    split = LabelSplit(
        classes=labels.classes,
        train=labels.codes[train_rows][train_sources],
        held_out=labels.codes[held_rows][held_sources] if held_sources is not None else labels.codes[:0],
    )
    return train, held_out, split


def label_metrics(
    model: JEPA, train: SequenceDataset, held_out: SequenceDataset | None, split: LabelSplit, seed: int = 0
) -> dict[str, float]:
    """How well the version's embeddings (as /encode serves them) separate the labelled classes.

    `label_classes` and `label_held_out` always; with a held-out split and two classes or more,
    the held-out accuracy of a linear probe and of 1-NN fitted on (at most LABEL_PROBE_FIT)
    training sequences' embeddings, and of always answering the commonest class.
    """
    metrics: dict[str, float] = {"label_classes": len(split.classes), "label_held_out": len(split.held_out)}
    if held_out is None or len(split.classes) < 2:
        return metrics
    rows = np.arange(len(train))
    if len(rows) > LABEL_PROBE_FIT:
        rows = np.sort(np.random.default_rng(seed).choice(len(rows), LABEL_PROBE_FIT, replace=False))
    model.eval()
    fitted = embed_sequences(model, [train.data[i] for i in rows])  # (N_fit, R)
    scored = embed_sequences(model, held_out.data)  # (N_held, R)
    return metrics | label_probes.label_metrics(fitted, split.train[rows], scored, split.held_out, len(split.classes))
