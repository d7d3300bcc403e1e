"""The fast path for JSON inference bodies: numbers go from the body's text straight into one
float buffer, in C, with no Python float per number.

simdjson parses the body and flattens each sequence field into doubles (`as_buffer`); that
costs a fifth of parsing to Python objects and converting them. Flattening alone would accept
a ragged point (`[[1, 2, 3], [4]]` flattens like `[[1, 2], [3, 4]]`), so the structure is
checked separately: the body's brackets and commas, everything else deleted, must be exactly
those of well-formed [N][T][D] fields with the lengths found. Both are single passes in C.

Anything this path cannot vouch for (a null, a boolean, a nested or ragged point, a value
beyond float32 range, a string holding a bracket or comma, a duplicate key, invalid JSON) makes
it answer None, and the caller decodes the body the exact way (service.payloads), which says
precisely where and what is wrong. So this path never decides an error message, only speed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import simdjson

from service.engine import Sequences

# Below this, orjson and numpy are as fast (a single short sequence): the fast path's fixed costs
# (a parser, its proxies, the structure check) only pay off from about 50 points up.
MIN_BODY_BYTES = 2048

# Everything but the structure of arrays: deleting these leaves "[", "]" and "," in order.
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b"[],")
_STRUCTURE_CHARS = frozenset("[],")


def _field_structure(lengths: np.ndarray, dim: int) -> bytes:
    """The brackets and commas of a well-formed field of len(lengths) sequences of (T_i, dim)."""
    point = b"[" + b"," * (dim - 1) + b"]"
    per_length: dict[int, bytes] = {}
    for length in set(lengths.tolist()):
        per_length[length] = b"[" + b",".join([point] * length) + b"]"
    return b"[" + b",".join(per_length[length] for length in lengths.tolist()) + b"]"


def _flatten(value: Any) -> tuple[np.ndarray, np.ndarray, int] | None:
    """(flat float64 values, lengths (N,), D) of an [N][T][D] array, or None."""
    if not isinstance(value, simdjson.Array) or len(value) == 0:
        return None
    try:
        flat = np.frombuffer(value.as_buffer(of_type="d"), dtype=np.float64)
        lengths = np.fromiter((len(sequence) for sequence in value), dtype=np.int64, count=len(value))
    except (TypeError, ValueError, RuntimeError):  # a non-number, a number inside no list, a bigint
        return None
    steps = int(lengths.sum())
    if not lengths.all() or flat.size == 0 or flat.size % steps != 0:  # an empty sequence or point
        return None
    return flat, lengths, flat.size // steps


def _to_sequences(flat: np.ndarray, lengths: np.ndarray, dim: int) -> Sequences | None:
    with np.errstate(over="ignore"):  # beyond float32 becomes inf, refused just below
        values = flat.astype(np.float32)
    if not np.isfinite(values).all():
        return None
    if (lengths == lengths[0]).all():
        return values.reshape(len(lengths), int(lengths[0]), dim)  # (N, T, D)
    ends = np.cumsum(lengths)[:-1] * dim
    return [part.reshape(-1, dim) for part in np.split(values, ends)]  # (T_i, D) each


def _opaque(value: Any) -> bool:
    """A member outside the sequence fields that the structure check cannot account for."""
    if isinstance(value, str):
        return not _STRUCTURE_CHARS.isdisjoint(value)
    return isinstance(value, simdjson.Array | simdjson.Object)


def parse_inference_json(body: bytes, fields: frozenset[str]) -> tuple[dict[str, Any], dict[str, Sequences]] | None:
    """(the other members, {field: sequences}) of a JSON object body, or None where only the
    exact decoder can say what the body holds. `fields` names the sequence fields."""
    try:
        document = simdjson.Parser().parse(body)
    except (ValueError, RuntimeError):
        return None
    if not isinstance(document, simdjson.Object):
        return None
    options: dict[str, Any] = {}
    arrays: dict[str, Sequences] = {}
    structure: list[bytes] = []  # each member's brackets and commas, in document order
    keys = list(document.keys())
    if not keys or len(set(keys)) != len(keys) or any(not _STRUCTURE_CHARS.isdisjoint(key) for key in keys):
        return None
    for key in keys:
        value = document[key]
        if key in fields:
            flattened = _flatten(value)
            if flattened is None:
                return None
            flat, lengths, dim = flattened
            sequences = _to_sequences(flat, lengths, dim)
            if sequences is None:
                return None
            arrays[key] = sequences
            structure.append(_field_structure(lengths, dim))
        elif _opaque(value):
            return None
        else:
            options[key] = value
            structure.append(b"")
    if body.translate(None, _NOT_STRUCTURE) != b",".join(structure):
        return None
    return options, arrays
