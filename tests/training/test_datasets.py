import io
import re
from pathlib import Path

import numpy as np
import pytest

from tests.factories import random_sequences, stored_dataset
from training import datasets
from training.db import SessionFactory
from training.errors import DatasetCorrupt, DatasetNotFound, InvalidInput
from training.spec import TrainingSpec


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_json_npy_and_csv_parse_to_the_same_sequences() -> None:
    array = np.arange(3 * 4 * 2, dtype=np.float32).reshape(3, 4, 2)
    # Steps may come in any order; sequences keep the order in which they first appear.
    steps = [(i, t) for i in range(3) for t in (2, 0, 3, 1)]
    rows = ["sequence_id,t,x,y"] + [f"s{i},{t},{array[i, t, 0]},{array[i, t, 1]}" for i, t in steps]
    for parsed in (
        datasets.parse_json(array.tolist()),
        datasets.parse_npy(npy_bytes(array)),
        datasets.parse_csv("\n".join(rows).encode()),
    ):
        assert [s.tolist() for s in parsed] == [s.tolist() for s in array]
        assert all(s.dtype == np.float32 for s in parsed)


def test_csv_sequences_may_differ_in_length_and_have_one_feature() -> None:
    parsed = datasets.parse_csv(b"sequence_id,t,v\na,0,1\na,1,2\na,2,3\nb,0,5\nb,1,6\n")
    assert [s.shape for s in parsed] == [(3, 1), (2, 1)]


@pytest.mark.parametrize(
    ("parse", "data", "message"),
    [
        (datasets.parse_npy, b"not an npy file", "not a readable .npy"),
        (datasets.parse_npy, npy_bytes(np.zeros((4, 3))), "(N, T, D)"),
        (datasets.parse_npy, npy_bytes(np.array([[[1.0, np.nan]] * 2] * 2)), "NaN"),
        (datasets.parse_npy, npy_bytes(np.zeros((2, 3, 65))), "1 to 64 features"),
        (datasets.parse_npy, npy_bytes(np.array([{"a": 1}], dtype=object)), "not a readable .npy"),
        (datasets.parse_csv, b"id,time,x\n", "header"),
        (datasets.parse_csv, b"sequence_id,t,x\na,0,1\na,2,2\nb,0,1\nb,1,1\n", "no gaps"),
        (datasets.parse_csv, b"sequence_id,t,x,y\na,0,1,2\na,1,1\nb,0,1,1\n", "columns"),
        (datasets.parse_csv, b"sequence_id,t,x\na,0,one\n", "number"),
        (datasets.parse_csv, b"sequence_id,t,x\na,0,1\na,0,2\n", "twice"),
        (datasets.parse_csv, b"sequence_id,t,x\na,0,1\na,1,2\n", "at least 2 sequences"),
        (datasets.parse_json, [[[1.0, 2.0], [1.0]], [[1.0, 2.0], [3.0, 4.0]]], "same number of features"),
        (datasets.parse_json, [[[1.0, 2.0]], [[1.0, 2.0], [3.0, 4.0]]], "needs 2 to"),
        (datasets.parse_json, [[[1.0, 2.0], [1.0, 2.0]], [[1.0], [3.0]]], "features; sequences[0] has 2"),
    ],
)
def test_bad_uploads_are_refused_with_what_is_wrong(parse, data, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInput, match=re.escape(message)):
        parse(data)


def test_a_stored_dataset_reads_back_exactly_and_is_checked(factory: SessionFactory, tmp_path: Path) -> None:
    sequences = random_sequences([5, 9, 3], dim=4)
    row = stored_dataset(factory, tmp_path, sequences, name="walks")
    assert (row.num_sequences, row.input_dim, row.min_len, row.max_len) == (3, 4, 3, 9)
    with factory() as s:
        loaded = datasets.load_sequences(tmp_path, datasets.get_dataset(s, row.id))
        assert [x.tolist() for x in loaded] == [x.tolist() for x in sequences]
        assert [d.id for d in datasets.list_datasets(s)] == [row.id]
        with pytest.raises(DatasetNotFound):
            datasets.get_dataset(s, "0" * 32)

    path = tmp_path / row.path
    path.write_bytes(path.read_bytes()[:-4] + b"\0\0\0\0")
    with factory() as s, pytest.raises(DatasetCorrupt, match="sha256"):
        datasets.load_sequences(tmp_path, datasets.get_dataset(s, row.id))
    path.unlink()
    with factory() as s, pytest.raises(DatasetCorrupt, match="missing"):
        datasets.load_sequences(tmp_path, datasets.get_dataset(s, row.id))


def test_a_spec_on_a_stored_dataset_takes_its_shape(factory: SessionFactory, tmp_path: Path) -> None:
    row = stored_dataset(factory, tmp_path, random_sequences([6, 8], dim=3))

    def spec(context_len: int) -> TrainingSpec:
        config = {"context_len": context_len, "target_len": 2}
        return TrainingSpec.model_validate({"model": "m", "dataset": {"id": row.id}, "config": config})

    with factory() as s:
        assert datasets.resolve_spec(s, spec(4)).configs()[0].input_dim == 3
        with pytest.raises(InvalidInput, match="shortest sequence's length 6"):
            datasets.resolve_spec(s, spec(5))


def test_the_held_out_split_is_a_tenth_and_disjoint() -> None:
    sequences = random_sequences([4] * 50)
    train, held_out = datasets.split_held_out(sequences, seed=0, max_held_out=1024)
    assert held_out is not None and (len(train), len(held_out)) == (45, 5)
    seen = {s.numpy().tobytes() for s in train.data}
    assert not any(s.numpy().tobytes() in seen for s in held_out.data)
    small_train, none = datasets.split_held_out(sequences[:10], seed=0, max_held_out=1024)
    assert none is None and len(small_train) == 10
