""".npy arrays sent by users (dataset uploads and inference bodies), read without trusting them.

`np.load` allocates whatever the header claims before reading a byte of data, so a 100-byte body
whose header claims shape (10**6, 10**6, 2) would ask for terabytes. `load_npy` reads and checks
the header first: a numeric dtype, an element count under the caller's bound, and exactly as many
bytes of data as the header promises. Only then does numpy load the array, with pickles refused.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from numpy.lib import format as npy_format

from training.errors import InvalidInput

# Integers and floats only: no bool, complex, strings, datetimes, structured or object dtypes.
NUMERIC_KINDS = "fiu"


@dataclass(frozen=True)
class NpyHeader:
    """What an .npy header claims: the array's shape and dtype, and where its data starts."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    data_offset: int

    @property
    def elements(self) -> int:
        return math.prod(self.shape)  # Python ints: no overflow, whatever the header claims


def read_npy_header(data: bytes, what: str = "the array") -> NpyHeader:
    """The checked header of `data`, an .npy file, or InvalidInput saying what is wrong with it.

    Checks the magic string and version (1.0, 2.0 or 3.0), the header itself, a numeric dtype
    (kinds f, i, u) and non-negative dimensions; the data after the header is not looked at (see
    load_npy). Callers may use the shape to refuse an array in their own terms before loading it.
    """
    stream = io.BytesIO(data)
    try:
        version = npy_format.read_magic(stream)
        if version == (1, 0):
            shape, fortran_order, dtype = npy_format.read_array_header_1_0(stream)
        elif version in ((2, 0), (3, 0)):
            # 3.0 differs from 2.0 only in encoding its header as UTF-8 rather than latin-1, which
            # matters only for structured dtypes' field names, and those are refused below.
            shape, fortran_order, dtype = npy_format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
    except Exception as exc:
        # numpy parses the header with ast and, when that fails, with tokenize: a hostile header
        # raises more than the ValueError numpy documents (tokenize.TokenError, RecursionError).
        raise InvalidInput(f"{what} is not a readable .npy array: {_short(str(exc))}") from None
    if dtype.kind not in NUMERIC_KINDS:
        raise InvalidInput(
            f"{what} is not a readable .npy array: dtype {_short(str(dtype))} is not an integer or float type"
        )
    if any(size < 0 for size in shape):
        raise InvalidInput(f"{what} is not a readable .npy array: shape {_short(str(shape))} has a negative size")
    return NpyHeader(
        shape=tuple(int(size) for size in shape),
        dtype=dtype,
        fortran_order=bool(fortran_order),
        data_offset=stream.tell(),
    )


def load_npy(data: bytes, max_elements: int, what: str = "the array") -> np.ndarray:
    """The array in `data` (an .npy file), or InvalidInput if it is not one this service accepts.

    `max_elements` bounds the number of elements (the product of the shape) the header may claim;
    `what` names the array in messages ("the body", "the file"). Besides read_npy_header's checks,
    the data must be exactly as long as the header promises: neither truncated nor followed by
    anything. Every refusal reads "<what> is not a readable .npy array: ..." except that of an
    array with too many elements. The result has the header's shape and dtype (integers or floats,
    possibly big-endian or Fortran-ordered); callers check its dimensions and convert it. Nothing
    is ever unpickled.
    """
    header = read_npy_header(data, what)
    if header.elements > max_elements:
        raise InvalidInput(
            f"{what} has shape {_short(str(header.shape))}, {header.elements} elements; at most {max_elements} "
            "are accepted"
        )
    expected = header.elements * header.dtype.itemsize
    actual = len(data) - header.data_offset
    if actual != expected:
        raise InvalidInput(
            f"{what} is not a readable .npy array: its header promises {expected} bytes of data "
            f"(shape {header.shape}, dtype {header.dtype}), but {actual} bytes follow it"
        )
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:  # checked above; kept so no surprise becomes a 500
        raise InvalidInput(f"{what} is not a readable .npy array: {_short(str(exc))}") from None
    if not isinstance(array, np.ndarray) or array.shape != header.shape:
        raise InvalidInput(f"{what} is not a readable .npy array")
    return array


def _short(text: str, limit: int = 200) -> str:
    """`text`, cut to `limit` characters: a header may be up to 10,000 of them, all the sender's."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def nan_padded(rows: list[np.ndarray]) -> np.ndarray:
    """Ragged results (T_i, ...) as one float32 array (N, T, ...), NaN past a shorter row's end: how
    the API answers .npy, and the CLI writes, what has a value per step (a null step is NaN too)."""
    out = np.full((len(rows), max(len(row) for row in rows), *rows[0].shape[1:]), np.nan, dtype=np.float32)
    for padded, row in zip(out, rows, strict=True):
        padded[: len(row)] = row
    return out
