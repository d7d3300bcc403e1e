"""The fast JSON path agrees with the exact one on every body it accepts, and hands back
(None) every body whose errors only the exact path can describe."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.json_arrays import parse_inference_json

FIELDS = frozenset({"sequences"})


def exact(value: list) -> list[np.ndarray]:
    return [np.array(sequence, dtype=np.float32) for sequence in value]


def as_list(sequences: np.ndarray | list[np.ndarray]) -> list[np.ndarray]:
    return list(sequences)


numbers = st.one_of(
    st.integers(-(2**40), 2**40), st.floats(-1e30, 1e30, allow_nan=False, allow_infinity=False, width=64)
)


@st.composite
def ragged_bodies(draw: st.DrawFn) -> list:
    dim = draw(st.integers(1, 4))
    lengths = draw(st.lists(st.integers(1, 6), min_size=1, max_size=5))
    return [[[draw(numbers) for _ in range(dim)] for _ in range(length)] for length in lengths]


@settings(max_examples=200, deadline=None)
@given(ragged_bodies(), st.booleans())
def test_accepted_bodies_decode_exactly_as_numpy_does(value: list, spaced: bool) -> None:
    body = orjson.dumps({"sequences": value, "model": "m", "normalize": True})
    if spaced:  # whitespace anywhere between tokens changes nothing
        body = body.replace(b",", b" , ").replace(b"[", b"[ \n")
    parsed = parse_inference_json(body, FIELDS)
    assert parsed is not None
    options, arrays = parsed
    assert options == {"model": "m", "normalize": True}
    for got, want in zip(as_list(arrays["sequences"]), exact(value), strict=True):
        np.testing.assert_array_equal(got, want)


def test_equal_lengths_come_back_as_one_array() -> None:
    parsed = parse_inference_json(b'{"sequences": [[[1, 2], [3, 4]], [[5, 6], [7, 8]]]}', FIELDS)
    assert parsed is not None
    sequences = parsed[1]["sequences"]
    assert isinstance(sequences, np.ndarray) and sequences.shape == (2, 2, 2) and sequences.dtype == np.float32


@pytest.mark.parametrize(
    "body",
    [
        b'{"sequences": [[[1, 2, 3], [4]]]}',  # ragged points flatten like [[1, 2], [3, 4]]
        b'{"sequences": [[[1, 2], [[3], 4]]]}',  # nested deeper
        b'{"sequences": [[1, 2], [3, 4]]}',  # [N][D]: no time axis
        b'{"sequences": [[[1, 2], [true, 4]]]}',
        b'{"sequences": [[[1, 2], [null, 4]]]}',
        b'{"sequences": [[[1, 2], ["3", 4]]]}',
        b'{"sequences": [[[1, 2], [3, 1e39]]]}',  # beyond float32
        b'{"sequences": [[[1, 2], [3, 99999999999999999999999]]]}',  # beyond 64-bit integers
        b'{"sequences": [[[1, 2], [3, NaN]]]}',
        b'{"sequences": []}',
        b'{"sequences": [[]]}',
        b'{"sequences": [[[]]]}',
        b'{"sequences": [[[0, 1]], []]}',  # an empty sequence beside a full one
        b'{"sequences": null}',
        b'{"sequences": [[[1, 2]]], "model": "a[,]"}',  # a string could fake structure
        b'{"sequences": [[[1, 2]]], "sequences": [[[3, 4]]]}',
        b'{"sequences": [[[1, 2]]], "extra": [1]}',
        b'{"sequences": [[[1, 2]]]',
        b"[1, 2]",
        b"{}",
        b"",
    ],
)
def test_what_it_cannot_vouch_for_goes_to_the_exact_path(body: bytes) -> None:
    assert parse_inference_json(body, FIELDS) is None


def test_two_fields_each_keep_their_own_shape() -> None:
    body = b'{"targets": [[[1], [2], [3]]], "contexts": [[[1], [2]], [[3], [4]]], "model": "m"}'
    parsed = parse_inference_json(body, frozenset({"contexts", "targets"}))
    assert parsed is not None
    assert parsed[1]["contexts"].shape == (2, 2, 1) and parsed[1]["targets"].shape == (1, 3, 1)
