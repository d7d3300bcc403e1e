import errno
import hashlib
import io
import os
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save as save_safetensors
from sqlalchemy.orm import Session

from tests.factories import random_sequences, stored_dataset
from training.data import datasets
from training.errors import DatasetCorrupt, DatasetNotFound, InvalidInput, StorageFull
from training.execution.jobs import resolve_spec
from training.execution.spec import TrainingSpec
from training.store.artifacts import FileStore
from training.store.db import SessionFactory


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
        assert resolve_spec(s, spec(4)).configs()[0].input_dim == 3
        with pytest.raises(InvalidInput, match="shortest sequence's length 6"):
            resolve_spec(s, spec(5))


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


def labelled_csv(*labels: str) -> bytes:
    rows = "".join(f"s{i},{t},{label},{t}\n" for i, label in enumerate(labels) for t in range(2))
    return ("sequence_id,t,label,x\n" + rows).encode()


def test_csv_labels_are_integers_only_when_written_as_integers_and_text_is_kept_exactly() -> None:
    """Issue 26: "01", "1" and "+1" were one class; an integer past 2^53 could not be sent at all,
    and one of 4,301 digits or more was a 500 (int() past Python's digit limit)."""
    _, spelled = datasets.parse_csv_labelled(labelled_csv("01", "1", "+1", "1"))
    assert spelled is not None and spelled.classes == ["+1", "01", "1"] and spelled.codes.tolist() == [1, 2, 0, 2]
    big = str(2**53 + 1)  # a float64 would round it to 2^53
    _, exact = datasets.parse_csv_labelled(labelled_csv(big, "7", big))
    assert exact is not None and exact.classes == ["7", big] and exact.codes.tolist() == [1, 0, 1]
    _, edge = datasets.parse_csv_labelled(labelled_csv(str(2**53), str(-(2**53)), "0"))
    assert edge is not None and edge.classes == [-(2**53), 0, 2**53]
    _, minus_zero = datasets.parse_csv_labelled(labelled_csv("-0", "0"))
    assert minus_zero is not None and minus_zero.classes == ["-0", "0"]
    with pytest.raises(InvalidInput, match="the label of sequence 's0' must be 1 to 128 characters long, got 4301"):
        datasets.parse_csv_labelled(labelled_csv("9" * 4301, "1"))


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


# Hostile or huge uploads: refused with InvalidInput (422) or StorageFull (507), never a 500.


def test_a_huge_or_negative_t_is_refused_at_its_line_without_listing_a_range() -> None:
    # This t once made the parser build set(range(t + 1)): the server ran out of memory.
    most = datasets.LIMITS.max_len
    huge = b"sequence_id,t,x\na,0,1\na,99999999999999999999,2\nb,0,1\nb,1,2\n"
    refusal = f"CSV line 3: t must be 0 to {most - 1} (a sequence has at most {most}"
    with pytest.raises(InvalidInput, match=re.escape(refusal)):
        datasets.parse_csv(huge)
    for t in ("-1", str(most)):
        with pytest.raises(InvalidInput, match=f"CSV line 3: t must be 0 to {most - 1} .*, got '{t}'$"):
            datasets.parse_csv(f"sequence_id,t,x\na,0,1\na,{t},2\nb,0,1\nb,1,2\n".encode())
    small = datasets.DatasetLimits(max_len=64)
    longest = b"sequence_id,t,x\na,63,1\nb,0,1\nb,1,2\n" + b"".join(f"a,{t},0\n".encode() for t in range(63))
    assert [s.shape for s in datasets.parse_csv(longest, small)] == [(64, 1), (2, 1)]


def test_one_long_series_is_a_dataset_and_trains_as_pieces() -> None:
    t = np.arange(100_000)
    csv = "sequence_id,t,x\n" + "".join(f"log,{i},{np.sin(i / 7):.4f}\n" for i in t)
    (series,) = datasets.parse_csv(csv.encode())
    assert series.shape == (100_000, 1)
    assert datasets.parse_json([series.tolist()])[0].shape == (100_000, 1)  # JSON takes it as CSV does
    for short in ([np.zeros((127, 1))], [np.zeros((127, 1), np.float32)]):
        with pytest.raises(InvalidInput, match="at least 2 sequences, or one of at least 128 steps .* of 127 steps"):
            datasets.check_sequences(short)
    train, held_out = datasets.split_held_out([series], seed=0, max_held_out=1024)
    assert held_out is None and train.whole is not None and train.series()[0].shape == (100_000, 1)
    assert len(train) > 64 and {len(x) for x in train.data} == {512}
    labelled = [series[:5000], series[5000:9000], *[series[i * 100 : i * 100 + 50] for i in range(8)]]
    labels = datasets.Labels(np.array([0, 1] + [0] * 8), ["a", "b"])
    train, held_out, split = datasets.split_for_training(labelled, labels, seed=0, max_held_out=1024)
    assert len(split.train) == len(train) and len(split.held_out) == (len(held_out) if held_out else 0)
    assert len(train) > len(labelled)  # the two long ones became pieces, each keeping its label


def test_a_gap_names_at_most_five_missing_steps() -> None:
    gap = b"sequence_id,t,x\nb,0,1\nb,1,2\na,0,1\na,4000,2\na,7,3\n"
    with pytest.raises(
        InvalidInput, match=re.escape("sequence 'a' must have t = 0..T-1 with no gaps; missing t=[1, 2, 3, 4, 5]")
    ):
        datasets.parse_csv(gap)
    # Read off the gaps between the steps present, not a range as long as the largest of them.
    assert datasets._first_missing(np.array([0, 10**18])) == [1, 2, 3, 4, 5]
    assert datasets._first_missing(np.array([0, 2, 5, 9])) == [1, 3, 4, 6, 7]
    assert datasets._first_missing(np.array([3])) == [0, 1, 2]


def test_a_repeated_t_names_its_line_counting_blank_lines_and_quoted_newlines() -> None:
    data = b'sequence_id,t,x\na,0,1\n\nb,0,"1\n"\na,1,2\nb,1,3\nb,0,4\na,1,5\n'
    with pytest.raises(InvalidInput, match=re.escape("CSV line 8: sequence 'b' has t=0 twice")):
        datasets.parse_csv(data)
    labelled = b"sequence_id,t,x,label\na,0,1,p\n\nb,0,1,q\na,1,2,r\n"
    with pytest.raises(InvalidInput, match=re.escape("CSV line 5: sequence 'a' has label 'r', but 'p' on line 2")):
        datasets.parse_csv_labelled(labelled)


def test_csv_rows_in_any_order_give_sequences_in_order_of_first_appearance() -> None:
    rng = np.random.default_rng(0)
    sequences = [rng.normal(size=(int(n), 3)).astype(np.float32) for n in rng.integers(2, 30, size=40)]
    rows = [(i, t) for i, s in enumerate(sequences) for t in range(len(s))]
    shuffled = [rows[k] for k in rng.permutation(len(rows))]
    appearance = list(dict.fromkeys(i for i, _ in shuffled))
    lines = ["sequence_id,t,a,b,label,c"] + [
        f"s{i},{t},{float(sequences[i][t, 0])!r},{float(sequences[i][t, 1])!r},{i % 3},{float(sequences[i][t, 2])!r}"
        for i, t in shuffled
    ]
    parsed, labels = datasets.parse_csv_labelled("\n".join(lines).encode())
    assert [s.tolist() for s in parsed] == [sequences[i].tolist() for i in appearance]
    assert labels is not None and labels.classes == [0, 1, 2]
    assert labels.codes.tolist() == [i % 3 for i in appearance]


def test_csv_limits_refuse_as_soon_as_they_are_passed() -> None:
    limits = datasets.DatasetLimits(max_points=4, max_sequences=2, max_len=3)
    rows = b"sequence_id,t,x\na,0,1\na,1,2\nb,0,3\nb,1,4\n"
    assert len(datasets.parse_csv(rows, limits)) == 2
    # The fifth row is refused; the rest, bad as it is, is never read.
    with pytest.raises(InvalidInput, match=re.escape("at most 4 points in all; CSV line 6 is one too many")):
        datasets.parse_csv(rows + b"b,2,5\n" + b"not,even,a,row\n" * 1000, limits)
    with pytest.raises(InvalidInput, match=re.escape("at most 2 sequences; CSV line 4 starts one more")):
        datasets.parse_csv(b"sequence_id,t,x\na,0,1\nb,0,2\nc,0,3\n" + b"not,a,row,at,all\n", limits)
    with pytest.raises(InvalidInput, match=re.escape("CSV line 2: t must be 0 to 2")):
        datasets.parse_csv(b"sequence_id,t,x\na,3,1\n", limits)
    header = ",".join(["sequence_id", "t"] + [f"f{i}" for i in range(65)])
    with pytest.raises(InvalidInput, match=re.escape("points need 1 to 64 features, got 65")):
        datasets.parse_csv(header.encode() + b"\n")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"sequence_id,t,x\na,0,1\na,1," + b"9" * 131_073 + b"\n", "CSV line 3 is not valid CSV: field larger than"),
        (b'sequence_id,t,x\na,0,"' + b"9" * 200_000, "CSV line 2 is not valid CSV: field larger than"),
        (b"sequence_id,t,x\na,0,1\na,1,\x002\n", "CSV line 3: t must be an integer"),
        (b"sequence_id,t,x\na,\x00,1\n", "CSV line 2: t must be an integer"),
        (b"sequence_\x00id,t,x\n", "header"),
        (b"\x00\x00\x00", "header"),
        (b"sequence_id,t,x\na,0,1\na,1,\xff\n", "UTF-8"),
        (b"\xff\xfe" + "sequence_id,t,x\n".encode("utf-16-le"), "UTF-8"),
        (b"sequence_id,t,x\na,0,1e999\na,1,1\nb,0,1\nb,1,1\n", "infinite"),
        (b"sequence_id,t,x\na,0,nan\na,1,1\nb,0,1\nb,1,1\n", "NaN"),
        (b"sequence_id,t,x\na," + b"1" * 5000 + b",1\n", "CSV line 2: t must be an integer"),
        (b"sequence_id,t,x\r\na,0,1\r\r\nb,0", "columns"),
    ],
)
def test_malformed_csv_is_invalid_input_with_its_line(data: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(message)):
        datasets.parse_csv(data)


def test_an_id_or_label_of_any_length_is_cut_short_in_messages() -> None:
    long = "x" * 100_000
    with pytest.raises(InvalidInput) as raised:
        datasets.parse_csv(f"sequence_id,t,v\n{long},0,1\n{long},0,2\n".encode())
    assert "twice" in str(raised.value) and len(str(raised.value)) < 200


def test_csv_parsing_keeps_a_few_dozen_bytes_per_row() -> None:
    # Each row once cost a dict entry, a list and a Python float (over 200 bytes): a 64 MB CSV
    # took gigabytes. tracemalloc sees numpy's buffers as well as Python's objects.
    rows = 20_000
    data = ("sequence_id,t,x\n" + "".join(f"s{i // 1000},{i % 1000},{i % 7}\n" for i in range(rows))).encode()
    tracemalloc.start()
    try:
        parsed = datasets.parse_csv(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(parsed) == 20 and peak / rows < 80, f"{peak / rows:.0f} bytes per row"


def test_an_npy_header_claiming_a_huge_shape_is_refused_before_loading() -> None:
    def claiming(shape: tuple[int, ...]) -> bytes:
        buffer = io.BytesIO()
        np.lib.format.write_array_header_1_0(buffer, {"descr": "<f8", "fortran_order": False, "shape": shape})
        return buffer.getvalue()

    # np.load raised numpy's _ArrayMemoryError on these: a 500.
    with pytest.raises(InvalidInput, match=re.escape("at most 200000 sequences, got 1000000")):
        datasets.parse_npy(claiming((10**6, 10**6, 2)))
    with pytest.raises(InvalidInput, match=re.escape("at most 20000000 points in all, got 1000 × 1000000")):
        datasets.parse_npy(claiming((1000, 10**6, 2)))
    with pytest.raises(InvalidInput, match=re.escape("promises 1600000000000 bytes of data")):
        datasets.parse_npy(claiming((2, 2, 5 * 10**10)))
    with pytest.raises(InvalidInput, match="at most 200000 sequences, got 1000000"):
        datasets.parse_npy(npy_bytes(np.zeros((10**6, 2, 1), dtype=np.int8)))
    good = npy_bytes(np.zeros((2, 3, 1), dtype=np.float32))
    for bad, problem in ((good[:-4], "but 20 bytes follow"), (good + b"\0", "but 25 bytes follow")):
        with pytest.raises(InvalidInput, match=f"the file is not a readable .npy array: .*{problem}"):
            datasets.parse_npy(bad)
    with pytest.raises(InvalidInput, match="not a readable .npy array: dtype complex128"):
        datasets.parse_npy(npy_bytes(np.zeros((2, 3, 1), dtype=complex)))
    assert [s.dtype for s in datasets.parse_npy(npy_bytes(np.ones((2, 3, 1), dtype=">i2")))] == [np.float32] * 2


def fail_on_fsync_call(monkeypatch: pytest.MonkeyPatch, number: int, code: int) -> None:
    """Make the `number`-th os.fsync from now on fail with `code`: 1 is the data file's, 2 its directory's."""
    real, calls = os.fsync, []

    def fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == number:
            raise OSError(code, os.strerror(code))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG])
@pytest.mark.parametrize("failing_fsync", [1, 2])
def test_a_full_disk_is_storage_full_and_leaves_no_file(
    factory: SessionFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, failing_fsync: int
) -> None:
    stored_dataset(factory, tmp_path, random_sequences([4, 4]))  # the directory exists, with one dataset
    before = sorted(p.name for p in (tmp_path / "datasets").iterdir())
    fail_on_fsync_call(monkeypatch, failing_fsync, code)
    with pytest.raises(StorageFull) as raised:
        stored_dataset(factory, tmp_path, random_sequences([5, 6]))
    assert os.strerror(code) in str(raised.value) and str(tmp_path) not in str(raised.value)
    assert sorted(p.name for p in (tmp_path / "datasets").iterdir()) == before
    with factory() as s:
        assert len(datasets.list_datasets(s)) == 1


def test_other_write_errors_still_raise_but_leave_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fail_on_fsync_call(monkeypatch, 1, errno.EIO)
    with pytest.raises(OSError) as raised:
        datasets.store_dataset(Session(), FileStore(tmp_path), "d", random_sequences([3, 3]))
    assert raised.type is OSError and raised.value.errno == errno.EIO
    assert list((tmp_path / "datasets").iterdir()) == []


def test_a_failed_row_removes_its_file(tmp_path: Path) -> None:
    class Broken(Session):
        def flush(self, objects: object = None) -> None:
            raise RuntimeError("the database is gone")

    with pytest.raises(RuntimeError):
        datasets.store_dataset(Broken(), FileStore(tmp_path), "d", random_sequences([3, 3]))
    assert list((tmp_path / "datasets").iterdir()) == []


STORE_UNDER_A_FILE_SIZE_LIMIT = """
import resource, sys
from pathlib import Path
from sqlalchemy.orm import Session
from training.data import datasets
from training.store.artifacts import FileStore
from training.errors import StorageFull

sequences, labels = datasets.parse_csv_labelled(sys.stdin.buffer.read())
# Python ignores SIGXFSZ: a write past the limit fails with EFBIG instead of killing the process.
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    datasets.store_dataset(Session(), FileStore(Path(sys.argv[1])), "big", sequences, labels)
except StorageFull as exc:
    print("StorageFull:", exc)
"""


def test_a_real_write_past_the_file_size_limit_is_storage_full(tmp_path: Path) -> None:
    lines = ["sequence_id,t,a,b,c,d,label"] + [f"s{i},{t},1,2,3,4,{i % 2}" for i in range(20) for t in range(50)]
    result = subprocess.run(
        [sys.executable, "-c", STORE_UNDER_A_FILE_SIZE_LIMIT, str(tmp_path)],
        input="\n".join(lines).encode(),
        capture_output=True,
        cwd=Path(__file__).resolve().parents[3],
        timeout=120,
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    out = result.stdout.decode()
    assert out.startswith("StorageFull: the server has no room left to store this dataset (File too large)"), out
    assert str(tmp_path) not in out
    assert list((tmp_path / "datasets").iterdir()) == []


def test_messages_about_stored_files_name_no_server_path(factory: SessionFactory, tmp_path: Path) -> None:
    row = stored_dataset(factory, tmp_path, random_sequences([3, 3]))
    (tmp_path / row.path).unlink()
    with factory() as s, pytest.raises(DatasetCorrupt) as raised:
        datasets.load_dataset(tmp_path, datasets.get_dataset(s, row.id))
    assert str(tmp_path) not in str(raised.value) and row.id in str(raised.value)


CSV_ISH = st.text(alphabet=',\n\r"\x00 -+.e0123456789abtlx\xe9', max_size=200)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["", "sequence_id,t,x\n", "sequence_id,t,x,label\n"]).flatmap(
        lambda header: CSV_ISH.map(lambda body: (header + body).encode())
    )
    | st.binary(max_size=200)
)
def test_any_bytes_parse_as_csv_or_are_refused(data: bytes) -> None:
    try:
        sequences, _ = datasets.parse_csv_labelled(data)
    except InvalidInput:
        return
    assert len(sequences) >= 2 and all(s.dtype == np.float32 and s.ndim == 2 for s in sequences)


def test_one_sequence_is_enough_to_embed_but_not_to_train_on() -> None:
    one = b"sequence_id,t,x\na,0,1\na,1,2\na,2,3\n"
    assert [s.shape for s in datasets.parse_csv(one, datasets.TO_EMBED)] == [(3, 1)]
    with pytest.raises(InvalidInput, match="at least 2 sequences"):
        datasets.parse_csv(one)


def test_a_series_embedding_too_narrow_for_its_pooled_blocks_is_refused_with_the_way_out(
    factory: SessionFactory, tmp_path: Path
) -> None:
    row = stored_dataset(factory, tmp_path, random_sequences([90, 120], dim=1))  # default picks series

    def spec(**config: object) -> TrainingSpec:
        return TrainingSpec.model_validate({"model": "m", "dataset": {"id": row.id}, "config": config})

    with factory() as s:
        with pytest.raises(InvalidInput, match="ask for at least 648, or pool_blocks 0"):
            resolve_spec(s, spec(repr_dim=64))
        assert resolve_spec(s, spec(repr_dim=64, pool_blocks=0)).configs()[0].step_dim == 8
