"""training.data.arrays.load_npy: an .npy header is checked before numpy allocates what it claims."""

import io
import pickle
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.lib import format as npy_format

from training.data.arrays import load_npy, read_npy_header
from training.errors import InvalidInput

UNREADABLE = "the body is not a readable .npy array"


def npy(array: np.ndarray, version: tuple[int, int] | None = None) -> bytes:
    buffer = io.BytesIO()
    npy_format.write_array(buffer, array, version=version, allow_pickle=True)
    return buffer.getvalue()


def claiming(shape: tuple[int, ...], descr: str = "<f8", body: bytes = b"") -> bytes:
    """An .npy header claiming `shape` and `descr`, then `body`, however little it holds."""
    buffer = io.BytesIO()
    npy_format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + body


def raw_header(text: bytes, version: tuple[int, int] = (1, 0)) -> bytes:
    """Any header text at all behind a valid magic string and length."""
    length = struct.pack("<H" if version == (1, 0) else "<I", len(text))
    return npy_format.MAGIC_PREFIX + bytes(version) + length + text


@pytest.mark.parametrize(
    "array",
    [
        np.arange(24, dtype=np.float32).reshape(2, 3, 4),
        np.arange(6, dtype=np.int64).reshape(1, 2, 3),
        np.arange(6, dtype=np.uint8).reshape(3, 2),
        np.arange(6, dtype=">f8").reshape(2, 3),  # big-endian
        np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4)),
        np.zeros((0, 5), dtype=np.float16),
    ],
)
def test_numeric_arrays_load_as_saved(array: np.ndarray) -> None:
    loaded = load_npy(npy(array), max_elements=100, what="the body")
    assert loaded.dtype == array.dtype and loaded.shape == array.shape and (loaded == array).all()


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_every_npy_format_version_loads(version: tuple[int, int]) -> None:
    array = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    assert (load_npy(npy(array, version), max_elements=6) == array).all()


def test_a_huge_shape_is_refused_from_its_header_before_anything_is_allocated() -> None:
    # np.load would have asked for 16 TB here (numpy's _ArrayMemoryError, a 500).
    huge = claiming((10**6, 10**6, 2))
    with pytest.raises(InvalidInput, match=r"shape \(1000000, 1000000, 2\), 2000000000000 elements; at most 100"):
        load_npy(huge, max_elements=100, what="the body")
    # Under a generous cap it is the missing data that refuses it, still before any allocation.
    with pytest.raises(InvalidInput, match="promises 16000000000000 bytes of data .* but 0 bytes follow"):
        load_npy(huge, max_elements=10**20, what="the body")
    # Element counts are Python ints: a product far past 2**64 neither wraps nor overflows.
    with pytest.raises(InvalidInput, match="at most 100"):
        load_npy(claiming((2**40, 2**40, 2**40)), max_elements=100)
    assert read_npy_header(claiming((2**40, 2**40, 2**40))).elements == 2**120


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "EOF"),
        (b"garbage that is no npy file", "magic string"),
        (npy(np.zeros(3))[:9], "EOF"),  # the header's length cut off
        (npy(np.zeros(3))[:40], "EOF"),  # the header cut off
        (npy(np.zeros((2, 3)))[:-8], "promises 48 bytes of data (shape (2, 3), dtype float64), but 40 bytes follow"),
        (npy(np.zeros((2, 3))) + b"\0", "promises 48 bytes of data (shape (2, 3), dtype float64), but 49 bytes follow"),
        (npy(np.array([{"a": 1}], dtype=object)), "dtype object is not an integer or float type"),
        (npy(np.zeros(2, dtype=np.complex64)), "dtype complex64 is not an integer or float type"),
        (npy(np.zeros(2, dtype=bool)), "dtype bool is not an integer or float type"),
        (npy(np.zeros(2, dtype=[("a", "<f8")])), "is not an integer or float type"),
        (npy(np.zeros(2, dtype="(2,)f4,i4")), "is not an integer or float type"),
        (npy(np.array(["ab"])), "dtype <U2 is not an integer or float type"),
        (npy(np.zeros(2, dtype="datetime64[s]")), "is not an integer or float type"),
        (claiming((-2, 3), body=b"\0" * 48), "shape (-2, 3) has a negative size"),
        (claiming((2,), descr="<f9"), "not a valid dtype descriptor"),
        (raw_header(b"[1]"), "not a dictionary"),
        (raw_header(b"{'descr': '<f8', 'shape': (2,)}"), "correct keys"),
        (raw_header(b"{" * 5000), UNREADABLE),  # numpy lets tokenize.TokenError escape here
        (raw_header(b"(" * 300), UNREADABLE),
        (raw_header(b"x" * 20_000, (2, 0)), "Header info length (20000) is large"),
        (raw_header(b"\xff\xfe{", (3, 0)), UNREADABLE),
        (raw_header(b"{}", (7, 0)), "unsupported .npy format version 7.0"),
    ],
)
def test_anything_but_a_numeric_array_of_the_promised_size_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        load_npy(data, max_elements=10**6, what="the body")
    assert str(raised.value).startswith(UNREADABLE) and message in str(raised.value)
    assert len(str(raised.value)) < 400  # a hostile header is not echoed back whole


def test_object_arrays_are_never_unpickled(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("unpickled")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    with pytest.raises(InvalidInput, match="dtype object"):
        load_npy(npy(np.array([1, "a", None], dtype=object)), max_elements=10)


HEADER = npy(np.zeros((2, 3), np.float32))[:-24]  # a valid header, without its 24 bytes of data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200).map(lambda tail: HEADER + tail) | st.binary(max_size=300))
def test_any_bytes_load_or_are_refused(data: bytes) -> None:
    try:
        array = load_npy(data, max_elements=1000)
    except InvalidInput:
        return
    assert array.dtype.kind in "fiu" and array.size <= 1000
