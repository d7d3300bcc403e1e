import io

import numpy as np
import orjson
import pytest

from service.engine import ServedVersion
from service.payloads import RequestLimits, decode_fields, npy_sequences, parse_json, to_sequences
from training.errors import InvalidInput

SERVED = ServedVersion(
    model="toy",
    number=1,
    version_id=1,
    sha256="",
    path="",
    input_dim=2,
    repr_dim=8,
    context_len=8,
    target_len=4,
    calibration=None,
    step_dim=8,
)
LIMITS = RequestLimits(max_batch=8, max_seq_len=16, max_points=1000)


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


def test_a_too_long_array_names_its_field_and_the_setting_that_caps_it() -> None:
    """Issue 26: a too-long /score .npy said `sequences[0]` and JEPA_MAX_SEQ_LEN; it is `series[0]`
    against JEPA_MAX_SCORE_LEN."""
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((1, 17, 2), np.float32))
    with pytest.raises(InvalidInput, match=r"^sequences\[0\] has 17 steps; at most 16 \(JEPA_MAX_SEQ_LEN\)$"):
        npy_sequences(buffer.getvalue(), SERVED, LIMITS)
    score = RequestLimits(max_batch=8, max_seq_len=16, max_points=1000, max_seq_len_setting="JEPA_MAX_SCORE_LEN")
    with pytest.raises(InvalidInput, match=r"^series\[0\] has 17 steps; at most 16 \(JEPA_MAX_SCORE_LEN\)$"):
        npy_sequences(buffer.getvalue(), SERVED, score, "series")
    with pytest.raises(InvalidInput, match=r"^series\[1\] has 17 steps; at most 16 \(JEPA_MAX_SCORE_LEN\)$"):
        to_sequences("series", [[[0.0, 1.0]], [[0.0, 1.0]] * 17], SERVED, score)


def test_json_must_be_an_object_without_nan() -> None:
    assert parse_json(b'{"a": 1}', 100) == {"a": 1}
    for body in (b"[1]", b'{"a": NaN}', b"nope"):
        with pytest.raises(InvalidInput):
            parse_json(body, LIMITS.max_json_values)


def test_a_json_body_that_could_hold_more_values_than_the_caps_allow_is_refused_unparsed() -> None:
    limits = RequestLimits(max_batch=4, max_seq_len=16, max_points=64)
    many_lists = b'{"sequences": [' + b",".join([b"[]"] * limits.max_json_values) + b"]}"
    with pytest.raises(InvalidInput, match="JSON values"):
        parse_json(many_lists, limits.max_json_values)
    # The largest request within the caps still parses: D = 1 puts each number in its own list.
    largest = {"sequences": [[[0.5]] * 16] * 4}
    assert parse_json(orjson.dumps(largest), limits.max_json_values) == largest


def test_a_request_over_the_points_cap_is_refused_before_conversion() -> None:
    limits = RequestLimits(max_batch=64, max_seq_len=64, max_points=100)
    with pytest.raises(InvalidInput, match="JEPA_MAX_REQUEST_POINTS"):
        to_sequences("s", [[[0.0, 1.0]] * 60], SERVED, limits)  # 120 numbers
    both = decode_fields({"a": [[[0.0, 1.0]] * 25], "b": [[[0.0, 1.0]] * 25]}, SERVED, limits)
    assert both["a"].shape == (1, 25, 2)
    with pytest.raises(InvalidInput, match="a and b holds 150 numbers"):
        decode_fields({"a": [[[0.0, 1.0]] * 25], "b": [[[0.0, 1.0]] * 25] * 2}, SERVED, limits)


def test_an_npy_header_claiming_a_huge_array_is_refused_before_allocation() -> None:
    header = {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6, 2)}
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    with pytest.raises(InvalidInput):
        npy_sequences(buffer.getvalue() + b"\0" * 64, SERVED, LIMITS)
