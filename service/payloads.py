"""Request bodies to validated numpy arrays, and arrays back to response bodies, without going
through Python floats one by one.

JSON is parsed by orjson and converted by numpy in C. A body that fails the fast checks is walked
again in Python only to say exactly what is wrong; valid bodies never pay for that walk.
A binary body (`Content-Type: application/x-npy`) is one float array (N, T, D), read with
`allow_pickle=False`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from itertools import chain
from typing import Any, TypeVar

import numpy as np
import orjson
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from service.engine import Sequences, ServedVersion
from training.errors import InvalidInput


@dataclass(frozen=True)
class RequestLimits:
    max_batch: int = 4096  # sequences per request
    max_seq_len: int = 4096  # steps per sequence


NPY = "application/x-npy"
FLOAT32_MAX = float(np.finfo(np.float32).max)
Options = TypeVar("Options", bound=BaseModel)


def wants_npy(request: Request) -> bool:
    return NPY in request.headers.get("accept", "")


def sends_npy(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";")[0].strip() == NPY


def parse_json(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the body is not valid JSON ({exc}); NaN and Infinity are not JSON numbers") from None
    if not isinstance(data, dict):
        raise InvalidInput("the body must be a JSON object")
    return data


def validate_options(model: type[Options], data: dict[str, Any]) -> Options:
    """The request's scalar fields, checked by pydantic (the arrays were taken out before)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_input=False, include_url=False)]
        raise RequestValidationError(errors) from None


def take_field(data: dict[str, Any], field: str, required: bool = True) -> Any:
    value = data.pop(field, None)
    if value is None and required:
        raise InvalidInput(f"{field} is required: a list of sequences [N][T][D]")
    return value


def to_sequences(field: str, value: Any, served: ServedVersion, limits: RequestLimits) -> Sequences:
    """JSON lists [N][T][D] -> one float32 (N, T, D) array, or (T_i, D) arrays when lengths differ."""
    if not isinstance(value, list) or not value:
        raise InvalidInput(f"{field} must be a non-empty list of sequences [N][T][D]")
    _check_size(field, len(value), [len(s) if isinstance(s, list) else 0 for s in value], limits)
    try:
        # Only ints and floats may be there: numpy would silently turn booleans and numeric
        # strings into numbers. One pass over the values in C finds anything else.
        kinds = set(map(type, chain.from_iterable(chain.from_iterable(value))))
    except TypeError:
        kinds = {object}
    if kinds <= {float, int}:
        try:
            with np.errstate(over="ignore"):  # overflow to inf is caught by the finiteness check
                return _fast(value, served)
        except (ValueError, OverflowError):
            pass
    raise InvalidInput(_explain(field, value, served))


def _fast(value: list[Any], served: ServedVersion) -> Sequences:
    """The arrays, or ValueError/OverflowError for anything _explain has to describe."""
    try:
        array = np.array(value, dtype=np.float32)  # (N, T, D) when every length agrees
    except ValueError:
        arrays = [np.array(seq, dtype=np.float32) for seq in value]  # lengths differ: (T_i, D) each
        if not all(_valid(a[None], served) for a in arrays):
            raise
        return arrays
    if not _valid(array, served):
        raise ValueError("invalid")
    return array


def _check_size(field: str, count: int, lengths: list[int] | np.ndarray, limits: RequestLimits) -> None:
    if count > limits.max_batch:
        raise InvalidInput(f"{field} holds {count} sequences; at most {limits.max_batch} per request (JEPA_MAX_BATCH)")
    longest = int(np.argmax(lengths))
    if lengths[longest] > limits.max_seq_len:
        raise InvalidInput(
            f"{field}[{longest}] has {lengths[longest]} steps; at most {limits.max_seq_len} (JEPA_MAX_SEQ_LEN)"
        )


def _valid(array: np.ndarray, served: ServedVersion) -> bool:
    # array: (N, T, D)
    return (
        array.ndim == 3 and array.shape[1] > 0 and array.shape[2] == served.input_dim and bool(np.isfinite(array).all())
    )


def _explain(field: str, value: list[Any], served: ServedVersion) -> str:
    """What is wrong with `value`, at the first place it goes wrong."""
    for i, sequence in enumerate(value):
        if not isinstance(sequence, list):
            return f"{field}[{i}] must be a list of points [T][D], got {type(sequence).__name__}"
        if not sequence:
            return f"{field}[{i}] is empty; a sequence needs at least one point"
        for j, point in enumerate(sequence):
            if not isinstance(point, list):
                return f"{field}[{i}][{j}] must be a list of {served.input_dim} numbers, got {type(point).__name__}"
            if len(point) != served.input_dim:
                return f"{field}[{i}][{j}] has {len(point)} features; {served.label} expects {served.input_dim}"
            for k, number in enumerate(point):
                if isinstance(number, bool) or not isinstance(number, int | float):
                    return f"{field}[{i}][{j}][{k}] must be a number, got {type(number).__name__}"
                try:
                    too_big = abs(float(number)) > FLOAT32_MAX
                except OverflowError:
                    too_big = True
                if too_big:
                    return f"{field}[{i}][{j}][{k}] holds a value beyond float32 range"
    return f"{field} must be sequences [N][T][D] of numbers"


def npy_sequences(body: bytes, served: ServedVersion, limits: RequestLimits) -> np.ndarray:
    """An .npy body -> a float32 (N, T, D) array."""
    try:
        array = np.load(io.BytesIO(body), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InvalidInput(f"the body is not a readable .npy array: {exc}") from None
    if not isinstance(array, np.ndarray) or array.ndim != 3 or array.dtype.kind not in "fiu":
        raise InvalidInput(f"an {NPY} body must be a numeric array (N, T, D), got {getattr(array, 'shape', '?')}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InvalidInput(f"an {NPY} body needs at least one sequence of one point, got shape {array.shape}")
    _check_size("sequences", array.shape[0], [array.shape[1]], limits)
    if array.shape[2] != served.input_dim:
        raise InvalidInput(f"the array has {array.shape[2]} features; {served.label} expects {served.input_dim}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise InvalidInput("the array holds NaN, infinite values, or values beyond float32 range")
    return array


def respond(request: Request, payload: dict[str, Any], array_field: str) -> Response:
    """JSON by default (orjson, numpy arrays included); the bare array as .npy when asked."""
    if wants_npy(request):
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(payload[array_field], dtype=np.float32), allow_pickle=False)
        headers = {"X-JEPA-Model": payload["model"], "X-JEPA-Version": str(payload["version"])}
        return Response(buffer.getvalue(), media_type=NPY, headers=headers)
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")
