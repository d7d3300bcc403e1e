import io

import numpy as np
import pytest

from service.engine import ServedVersion
from service.payloads import RequestLimits, npy_sequences, parse_json, to_sequences
from training.errors import InvalidInput

SERVED = ServedVersion(model="toy", number=1, version_id=1, sha256="", path="", input_dim=2, repr_dim=8)
LIMITS = RequestLimits(max_batch=8, max_seq_len=16)


def test_equal_lengths_become_one_array_and_ragged_ones_a_list() -> None:
    rectangular = to_sequences("s", [[[0, 1], [2, 3.5]], [[4, 5], [6, 7]]], SERVED, LIMITS)
    assert isinstance(rectangular, np.ndarray) and rectangular.shape == (2, 2, 2) and rectangular.dtype == np.float32
    ragged = to_sequences("s", [[[0, 1]], [[2, 3], [4, 5]]], SERVED, LIMITS)
    assert isinstance(ragged, list) and [a.shape for a in ragged] == [(1, 2), (2, 2)]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([[[0.0, 1.0, 2.0]]], "s[0][0] has 3 features; model 'toy' v1 expects 2"),
        ([[[0.0, 1.0], [1.0]]], "s[0][1] has 1 features"),
        ([[[0.0, 1.0]], []], "s[1] is empty"),
        ([[[0.0, 1e39]]], "s[0][0][1] holds a value beyond float32 range"),
        ([[[0.0, 10**400]]], "s[0][0][1] holds a value beyond float32 range"),
        ([[[True, 1.0]]], "s[0][0][0] must be a number, got bool"),
        ([[["1", 1.0]]], "s[0][0][0] must be a number, got str"),
        ([[0.0, 1.0]], "s[0][0] must be a list of 2 numbers, got float"),
        ([1.0], "s[0] must be a list of points [T][D], got float"),
        ([], "s must be a non-empty list"),
        ({"a": 1}, "s must be a non-empty list"),
        ([[[0.0, 1.0]]] * 9, "s holds 9 sequences; at most 8 per request"),
        ([[[0.0, 1.0]], [[0.0, 1.0]] * 17], "s[1] has 17 steps; at most 16"),
    ],
)
def test_bad_sequences_say_where(value: object, message: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        to_sequences("s", value, SERVED, LIMITS)
    assert message in str(raised.value)


def test_npy_bodies_are_read_without_pickle() -> None:
    def npy(array: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        np.save(buffer, array)
        return buffer.getvalue()

    assert npy_sequences(npy(np.ones((3, 4, 2))), SERVED, LIMITS).dtype == np.float32
    for body, message in [
        (npy(np.array([{"a": 1}], dtype=object)), "not a readable .npy"),
        (npy(np.ones((3, 4))), "(N, T, D)"),
        (npy(np.ones((3, 4, 5))), "5 features"),
        (npy(np.full((1, 2, 2), np.nan)), "NaN"),
        (b"garbage", "not a readable .npy"),
    ]:
        with pytest.raises(InvalidInput) as raised:
            npy_sequences(body, SERVED, LIMITS)
        assert message in str(raised.value)


def test_json_must_be_an_object_without_nan() -> None:
    assert parse_json(b'{"a": 1}') == {"a": 1}
    for body in (b"[1]", b'{"a": NaN}', b"nope"):
        with pytest.raises(InvalidInput):
            parse_json(body)
