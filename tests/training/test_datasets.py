import hashlib
import io
import re
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save as save_safetensors

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


# Labels: one class per sequence, never trained on.

LABELLED_CSV = (
    b"sequence_id,t,x,label\n"
    b"s0,0,1,cat\ns0,1,2,cat\n"
    b"s1,1,4,dog\ns1,0,3,dog\n"  # steps in any order; the label is the same on every row
    b"s2,0,5,cat\ns2,1,6,cat\n"
)


def test_labels_parse_from_json_csv_and_a_field_beside_npy_to_the_same_codes() -> None:
    array = np.arange(6, dtype=np.float32).reshape(3, 2, 1) + 1
    names = ["cat", "dog", "cat"]
    csv_sequences, csv_labels = datasets.parse_csv_labelled(LABELLED_CSV)
    npy_sequences = datasets.parse_npy(npy_bytes(array))
    for sequences, labels in (
        (datasets.parse_json(array.tolist()), datasets.parse_labels(names, 3)),
        (csv_sequences, csv_labels),
        (npy_sequences, datasets.parse_label_field('["cat", "dog", "cat"]', 3)),
        (npy_sequences, datasets.parse_label_field(b'["cat", "dog", "cat"]', 3)),
    ):
        assert [s.tolist() for s in sequences] == [s.tolist() for s in array]  # the label is no feature
        assert labels is not None and labels.classes == ["cat", "dog"] and labels.codes.tolist() == [0, 1, 0]
        assert labels.codes.dtype == np.int64
    assert datasets.parse_csv(LABELLED_CSV)[0].tolist() == [[1.0], [2.0]]  # without labels, as before


def test_integer_labels_stay_integers_and_classes_are_sorted() -> None:
    labels = datasets.parse_labels([10, -2, 10, 3], 4)
    assert labels.classes == [-2, 3, 10] and labels.codes.tolist() == [2, 0, 2, 1]
    # In a CSV every cell is text: a label column of integers is read as integers.
    _, from_csv = datasets.parse_csv_labelled(b"sequence_id,t,label,x\na,0,10,1\na,1,10,2\nb,0,-2,3\nb,1,-2,4\n")
    assert from_csv is not None and from_csv.classes == [-2, 10] and from_csv.codes.tolist() == [1, 0]
    _, mixed = datasets.parse_csv_labelled(b"sequence_id,t,label,x\na,0,1,1\na,1,1,2\nb,0,x,3\nb,1,x,4\n")
    assert mixed is not None and mixed.classes == ["1", "x"]
    _, none = datasets.parse_csv_labelled(b"sequence_id,t,x\na,0,1\na,1,2\nb,0,3\nb,1,4\n")
    assert none is None


@pytest.mark.parametrize(
    ("values", "count", "message"),
    [
        (["a", "b"], 3, "got 2 labels for 3 sequences"),
        ([1, "a"], 2, "all strings or all integers; labels[0] is an integer, labels[1] a string"),
        ([1.5, 2], 2, "labels[0] must be a string or an integer, got a float"),
        ([1, 2.0], 2, "labels[1] must be a string or an integer, got a float"),
        ([True, False], 2, "labels[0] must be a string or an integer, got a boolean"),
        ([["a"], "b"], 2, "labels[0] must be a string or an integer, got an array"),
        (["a", {"b": 1}], 2, "labels[1] must be a string or an integer, got an object"),
        ([None, "b"], 2, "labels[0] must be a string or an integer, got null"),
        (["", "b"], 2, "labels[0] must be 1 to 128 characters long, got 0"),
        (["x" * 129, "b"], 2, "labels[0] must be 1 to 128 characters long, got 129"),
        ([2**60, 1], 2, "beyond ±2^53"),
        ("ab", 2, "must be an array of strings or integers"),
        ({"a": 1}, 1, "must be an array of strings or integers, one per sequence; got an object"),
        ([str(i) for i in range(1001)], 1001, "at most 1000 distinct labels, got 1001"),
    ],
)
def test_bad_labels_are_refused_with_what_is_wrong(values: object, count: int, message: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(message)):
        datasets.parse_labels(values, count)


@pytest.mark.parametrize(
    ("parse", "data", "message"),
    [
        (datasets.parse_csv_labelled, b"sequence_id,t,label,x\na,0,p,1\na,1,q,2\nb,0,p,1\nb,1,p,2\n", "same label"),
        (datasets.parse_csv_labelled, b"sequence_id,t,label\na,0,p\na,1,p\n", "header"),
        (datasets.parse_csv_labelled, b"sequence_id,t,label,x,label\na,0,p,1,p\n", "one `label` column"),
        (datasets.parse_csv_labelled, b"sequence_id,t,x,label\na,0,1,\na,1,2,\nb,0,1,p\nb,1,2,p\n", "sequence 'a'"),
        (lambda data: datasets.parse_label_field(data, 2), "cat,dog", "must be a JSON array"),
        (lambda data: datasets.parse_label_field(data, 2), b"\xff", "must be a JSON array"),
        (lambda data: datasets.parse_label_field(data, 2), '"cat"', "got a string"),
        (lambda data: datasets.parse_label_field(data, 2), '["cat"]', "got 1 labels for 2 sequences"),
    ],
)
def test_bad_csv_labels_and_label_fields_are_refused(parse, data, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInput, match=re.escape(message)):
        parse(data)


def test_labels_are_stored_in_the_checksummed_file_and_read_back(factory: SessionFactory, tmp_path: Path) -> None:
    sequences = random_sequences([5, 6, 7, 8], dim=2)
    plain = stored_dataset(factory, tmp_path, sequences)
    labelled = stored_dataset(factory, tmp_path, sequences, labels=["b", "a", "b", "c"])
    again = stored_dataset(factory, tmp_path, sequences, labels=["b", "a", "b", "c"])
    assert (plain.classes, plain.num_classes) == (None, None)
    assert (labelled.classes, labelled.num_classes) == (["a", "b", "c"], 3)
    assert labelled.sha256 == again.sha256 != plain.sha256  # the labels are covered by the sha256
    # An unlabelled file is byte for byte what it was before labels existed.
    values = np.concatenate(sequences).astype(np.float32)
    lengths = np.array([5, 6, 7, 8], dtype=np.int64)
    assert plain.sha256 == hashlib.sha256(save_safetensors({"values": values, "lengths": lengths})).hexdigest()
    with factory() as s:
        loaded, labels = datasets.load_dataset(tmp_path, datasets.get_dataset(s, labelled.id))
        assert [x.tolist() for x in loaded] == [x.tolist() for x in sequences]
        assert labels is not None and labels.classes == ["a", "b", "c"] and labels.codes.tolist() == [1, 0, 1, 2]
        assert datasets.load_dataset(tmp_path, datasets.get_dataset(s, plain.id))[1] is None
        assert datasets.get_dataset(s, labelled.id).classes == ["a", "b", "c"]
    ints = stored_dataset(factory, tmp_path, sequences, labels=[3, 1, 3, 1])
    with factory() as s:
        labels = datasets.load_dataset(tmp_path, datasets.get_dataset(s, ints.id))[1]
        assert labels is not None and labels.classes == [1, 3] and datasets.get_dataset(s, ints.id).classes == [1, 3]


def indexed(n: int) -> list[np.ndarray]:
    """Sequence i holds the value i at every step, so a split can be traced back to the rows."""
    return [np.full((4, 1), float(i), dtype=np.float32) for i in range(n)]


def test_a_labelled_split_holds_out_a_stratified_quarter_and_keeps_labels_aligned() -> None:
    codes = np.array([0] * 24 + [1] * 12 + [2] * 4)  # 40 sequences, classes of 24, 12 and 4
    labels = datasets.Labels(codes=codes, classes=["a", "b", "c"])
    train, held_out, split = datasets.split_for_training(indexed(40), labels, seed=0, max_held_out=1024)
    assert held_out is not None and split is not None and split.classes == ["a", "b", "c"]
    assert (len(train), len(held_out)) == (30, 10)
    train_rows = [int(s[0, 0]) for s in train.data]
    held_rows = [int(s[0, 0]) for s in held_out.data]
    assert set(train_rows).isdisjoint(held_rows) and len(set(train_rows) | set(held_rows)) == 40
    assert split.train.tolist() == codes[train_rows].tolist()
    assert split.held_out.tolist() == codes[held_rows].tolist()
    assert np.bincount(split.held_out, minlength=3).tolist() == [6, 3, 1]  # a quarter of each class
    # The same seed, the same split; the cap holds; under 8 sequences nothing is held out.
    again = datasets.split_for_training(indexed(40), labels, seed=0, max_held_out=1024)
    assert [int(s[0, 0]) for s in again[1].data] == held_rows  # type: ignore[union-attr]
    assert len(datasets.split_for_training(indexed(40), labels, seed=0, max_held_out=4)[1]) == 4  # type: ignore[arg-type]
    small = datasets.Labels(codes=np.array([0, 1] * 3), classes=[0, 1])
    small_train, none, small_split = datasets.split_for_training(indexed(6), small, seed=0, max_held_out=1024)
    assert none is None and len(small_train) == 6 and small_split is not None
    assert small_split.held_out.tolist() == [] and sorted(small_split.train.tolist()) == [0, 0, 0, 1, 1, 1]


def test_a_labelled_split_tops_up_with_random_rows_when_classes_are_small() -> None:
    labels = datasets.Labels(codes=np.arange(12) % 6, classes=list(range(6)))  # six classes of two
    train, held_out, split = datasets.split_for_training(indexed(12), labels, seed=1, max_held_out=1024)
    assert held_out is not None and split is not None and (len(train), len(held_out)) == (9, 3)
    assert split.held_out.tolist() == (np.array([int(s[0, 0]) for s in held_out.data]) % 6).tolist()


def test_an_unlabelled_split_is_the_tenth_as_before() -> None:
    sequences = random_sequences([4] * 50)
    train, held_out, split = datasets.split_for_training(sequences, None, seed=0, max_held_out=1024)
    before_train, before_held = datasets.split_held_out(sequences, seed=0, max_held_out=1024)
    assert split is None and held_out is not None and before_held is not None
    assert [s.tolist() for s in train.data] == [s.tolist() for s in before_train.data]
    assert [s.tolist() for s in held_out.data] == [s.tolist() for s in before_held.data]
