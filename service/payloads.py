"""Request bodies to validated numpy arrays, and arrays back to response bodies, without going
through Python floats one by one.

JSON goes through service.json_arrays first: simdjson flattens the numbers straight into one
buffer. A body that path cannot vouch for is parsed by orjson and converted by numpy, and one
that fails those checks is walked again in Python only to say exactly what is wrong; valid bodies
never pay for that walk.
A binary body (`Content-Type: application/x-npy`) is one float array (N, T, D), read with
`allow_pickle=False`.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain
from typing import Any, TypeVar

import numpy as np
import orjson
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from service.engine import Sequences, ServedVersion
from service.errors import UnsupportedMediaType
from training.data.arrays import load_npy
from training.errors import InvalidInput, preview

NPY = "application/x-npy"
FLOAT32_MAX = float(np.finfo(np.float32).max)
Options = TypeVar("Options", bound=BaseModel)
T = TypeVar("T")


@dataclass(frozen=True)
class RequestLimits:
    """What one inference request may hold; built from the service's settings (deps.get_limits)."""

    max_batch: int  # sequences per request (per field)
    max_seq_len: int  # steps per sequence
    max_points: int  # numbers, N x T x D, over all of the request's sequences
    max_similarity_pairs: int = 1 << 20  # |a| x |b| for /similarity
    max_seq_len_setting: str = "JEPA_MAX_SEQ_LEN"  # the setting max_seq_len comes from, named in errors

    @property
    def max_json_values(self) -> int:
        """The most JSON values (numbers and lists) a body within the caps can need: with D = 1
        every number sits in a list of its own, each sequence adds one, in up to two fields, and
        the other fields need a few."""
        return 2 * self.max_points + 4 * self.max_batch + 1024


# Bodies below this are decoded on the event loop: a thread hop costs more than they do.
LARGE_BODY_BYTES = 64 * 1024


async def off_loop_if_large(body: bytes, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)`, in a worker thread when `body` is large, so the event loop goes on serving
    other requests meanwhile (within what the GIL allows: orjson holds it while it parses)."""
    if len(body) < LARGE_BODY_BYTES:
        return fn(*args)
    return await run_in_threadpool(fn, *args)


def wants_npy(request: Request) -> bool:
    return NPY in request.headers.get("accept", "")


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def sends_npy(request: Request) -> bool:
    """True for an .npy body; a JSON body returns False; any other media type is refused (415)."""
    kind = media_type(request)
    if kind == NPY:
        return True
    if kind in ("", "application/json"):
        return False
    raise UnsupportedMediaType(f"send application/json or {NPY}, not {preview(kind)}")


def json_values_bound(body: bytes) -> int:
    """An upper bound on the number of values in a JSON text, counted in C without parsing it:
    every value but the first follows a comma, a colon or an opening bracket."""
    return body.count(b",") + body.count(b"[") + body.count(b"{") + body.count(b":") + 1


def check_json_values(body: bytes, max_values: int) -> None:
    """Refuse a body that could hold more than `max_values` JSON values, before parsing it:
    parsed, each value is a Python object of up to ~70 bytes, so this bounds memory."""
    if json_values_bound(body) > max_values:
        raise InvalidInput(
            f"the body holds more than {max_values} JSON values, more than the request caps allow "
            "(JEPA_MAX_REQUEST_POINTS); send fewer or shorter sequences"
        )


def parse_json(body: bytes, max_values: int) -> dict[str, Any]:
    """The body's JSON object, within `check_json_values`."""
    check_json_values(body, max_values)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the body is not valid JSON ({exc}); NaN and Infinity are not JSON numbers") from None
    if not isinstance(data, dict):
        raise InvalidInput("the body must be a JSON object")
    return data


def validate_options(model: type[Options], data: dict[str, Any], strict: bool = True) -> Options:
    """The request's scalar fields, checked by pydantic (the arrays were taken out before).

    Strict for JSON, where `true` is no version and `"yes"` no boolean; lax for query strings,
    where every value arrives as text.
    """
    try:
        return model.model_validate(data, strict=strict)
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
    lengths = [len(s) if isinstance(s, list) else 0 for s in value]
    _check_size(field, len(value), lengths, limits)
    check_points(field, sum(lengths) * served.input_dim, limits)
    if only_numbers(value):
        try:
            with np.errstate(over="ignore"):  # overflow to inf is caught by the finiteness check
                return _fast(value, served)
        except (ValueError, OverflowError):
            pass
    raise InvalidInput(_explain(field, value, served))


def decode_fields(fields: dict[str, Any], served: ServedVersion, limits: RequestLimits) -> dict[str, Sequences | None]:
    """Each JSON field [N][T][D] (None stays None) to arrays, with the request's points cap
    applied to all of them together."""
    decoded = {
        name: None if value is None else to_sequences(name, value, served, limits) for name, value in fields.items()
    }
    check_points(" and ".join(fields), sum(points_in(s) for s in decoded.values() if s is not None), limits)
    return decoded


def check_fast(
    arrays: dict[str, Sequences], fields: dict[str, bool], served: ServedVersion, limits: RequestLimits
) -> dict[str, Sequences | None] | None:
    """The fast JSON path's arrays (service.json_arrays) held to the same rules as decode_fields,
    or None where only the exact path can say what is wrong (a missing field, a wrong D)."""
    if any(required and name not in arrays for name, required in fields.items()):
        return None
    for name, sequences in arrays.items():
        shapes = [sequences.shape] if isinstance(sequences, np.ndarray) else [s[None].shape for s in sequences]
        if shapes[0][2] != served.input_dim:
            return None
        lengths = [shape[1] for shape in shapes] if len(shapes) > 1 else [shapes[0][1]]
        _check_size(name, len(sequences), lengths, limits)
    check_points(" and ".join(fields), sum(points_in(s) for s in arrays.values()), limits)
    return {name: arrays.get(name) for name in fields}


def only_numbers(value: list[Any]) -> bool:
    """Whether [N][T][D] holds only ints and floats: numpy would silently turn booleans and
    numeric strings into numbers. One pass over the values in C finds anything else."""
    try:
        kinds = set(map(type, chain.from_iterable(chain.from_iterable(value))))
    except TypeError:
        return False
    return kinds <= {float, int}


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
            f"{field}[{longest}] has {lengths[longest]} steps; at most {limits.max_seq_len} "
            f"({limits.max_seq_len_setting})"
        )


def check_points(field: str, points: int, limits: RequestLimits) -> None:
    if points > limits.max_points:
        raise InvalidInput(
            f"{field} holds {points} numbers (N x T x D); at most {limits.max_points} per request "
            "(JEPA_MAX_REQUEST_POINTS): split it into several requests"
        )


def points_in(sequences: Sequences) -> int:
    return int(sequences.size) if isinstance(sequences, np.ndarray) else sum(int(s.size) for s in sequences)


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


def npy_sequences(body: bytes, served: ServedVersion, limits: RequestLimits, field: str = "sequences") -> np.ndarray:
    """An .npy body -> a float32 (N, T, D) array. Its header is checked against the caps before
    anything is allocated, so a small body cannot claim a huge array. `field` is the JSON field
    the array stands for, named in errors."""
    array = load_npy(body, max_elements=limits.max_points, what=f"an {NPY} body")
    if array.ndim != 3:
        raise InvalidInput(f"an {NPY} body must be a numeric array (N, T, D), got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InvalidInput(f"an {NPY} body needs at least one sequence of one point, got shape {array.shape}")
    _check_size(field, array.shape[0], [array.shape[1]], limits)
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
