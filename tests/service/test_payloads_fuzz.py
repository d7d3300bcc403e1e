"""Hypothesis fuzzing of the request decoders: any input is either decoded correctly or refused
with InvalidInput (a 422 naming the problem), never anything else (a 500)."""

import contextlib
import io

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.payloads import npy_sequences, parse_json, to_sequences
from tests.service.test_payloads import LIMITS, SERVED
from training.errors import InvalidInput

JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=3)
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4), max_leaves=40)
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(JSON_VALUES)
def test_any_json_value_decodes_or_is_refused(value: object) -> None:
    try:
        decoded = to_sequences("s", value, SERVED, LIMITS)
    except InvalidInput as exc:
        assert str(exc).startswith("s")  # the message names the field
        return
    arrays = [decoded] if isinstance(decoded, np.ndarray) else [a[None] for a in decoded]
    for array in arrays:
        assert array.dtype == np.float32 and array.ndim == 3 and array.shape[2] == 2
        assert array.shape[1] >= 1 and np.isfinite(array).all()


POINTS = st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=2, max_size=2)


@FUZZ
@given(st.lists(st.lists(POINTS, min_size=1, max_size=6), min_size=1, max_size=8))
def test_valid_sequences_come_back_exactly(value: list) -> None:
    decoded = to_sequences("s", value, SERVED, LIMITS)
    arrays = list(decoded) if isinstance(decoded, np.ndarray) else decoded
    assert [a.tolist() for a in arrays] == [np.asarray(seq, dtype=np.float32).tolist() for seq in value]


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes_parse_as_json_or_are_refused(body: bytes) -> None:
    with contextlib.suppress(InvalidInput):
        assert isinstance(parse_json(body, LIMITS.max_json_values), dict)


def npy_header_then(data: bytes) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((2, 3, 2), np.float32))
    return buffer.getvalue()[:128] + data


@FUZZ
@given(st.binary(max_size=200).map(npy_header_then) | st.binary(max_size=300))
def test_any_bytes_load_as_npy_or_are_refused(body: bytes) -> None:
    try:
        array = npy_sequences(body, SERVED, LIMITS)
    except InvalidInput:
        return
    assert array.dtype == np.float32 and array.ndim == 3 and np.isfinite(array).all()
