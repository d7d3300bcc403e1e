"""A Python client for the service: numpy arrays in and out, typed errors that carry `detail`.

    from service.client import JEPAClient

    with JEPAClient("http://localhost:8000", api_key=None) as client:
        z = client.encode(np.random.randn(16, 20, 2))  # (16, R) float32, sent as .npy
        job = client.train({"pattern": "circle"}, config={"epochs": 20}, model="circles")
        client.wait_for_job(job, progress=True)
        client.set_alias("circles", "production", 1)

`AsyncJEPAClient` has the same methods as coroutines. Built on httpx; it imports nothing else of
this package, so it can be copied into a service that only talks to this one.

It takes nothing on trust from the server: an answer is streamed and refused past
`max_response_bytes`, each request ends by its `deadline_s` however slowly the answer trickles in,
and an answer that is not the JSON or .npy due, or is shaped wrongly, raises `BadResponse`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import io
import json
import math
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import httpcore
import httpx
import numpy as np

# What a client takes from a server, named once; each client takes them as constructor options.
TIMEOUT_S = 60.0  # httpx's limit on each connect, read and write
DEADLINE_S = 600.0  # one whole request: sending it, then its answer's last byte
MAX_RESPONSE_BYTES = 256 * 2**20  # an answer's body, decompressed; a longer one is refused as it streams in
JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")  # what wait_for_job knows

NPY = "application/x-npy"
# One sequence is (T, D); a batch is (N, T, D), or a list of (T_i, D) arrays when lengths differ.
Batch = np.ndarray | Sequence[np.ndarray] | Sequence[Sequence[Sequence[float]]]
# One class per sequence: strings or integers.
Labels = np.ndarray | Sequence[str] | Sequence[int]


class JEPAError(Exception):
    """An error answer from the service: `status`, the server's `detail`, and its stable `type`
    (e.g. "validation_error", "overloaded"; docs/api.md lists them), to branch on."""

    def __init__(self, status: int, detail: Any, type: str | None = None) -> None:  # noqa: A002 - the body's name
        super().__init__(f"{status}: {detail}")
        self.status, self.detail, self.type = status, detail, type


class BadRequest(JEPAError):  # 400, 413, 415, 422
    pass


class Unauthorized(JEPAError):  # 401
    pass


class NotFound(JEPAError):  # 404
    pass


class Conflict(JEPAError):  # 409
    pass


class Overloaded(JEPAError):  # 429: retry after `retry_after` seconds
    def __init__(self, status: int, detail: Any, type: str | None, retry_after: float | None) -> None:  # noqa: A002
        super().__init__(status, detail, type)
        self.retry_after = retry_after


class Unavailable(JEPAError):  # 5xx
    pass


class JobFailed(JEPAError):
    """wait_for_job: the job ended `failed` or `cancelled`; `job` is its last state."""

    def __init__(self, job: dict[str, Any]) -> None:
        super().__init__(200, f"job {job['id']} {job['status']}: {job.get('error')}")
        self.job = job


class BadResponse(JEPAError):
    """An answer this client cannot take: not the JSON or .npy due, the wrong shape, an unknown
    job status, or one of the two subclasses. `detail` says which request and what was wrong;
    `status` is the answer's HTTP status, 0 when none arrived."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(status, detail)


class ResponseTooLarge(BadResponse):
    """The answer was longer than `max_response_bytes`; reading stopped there."""


class DeadlineExceeded(BadResponse):
    """The request and its whole answer took longer than `deadline_s`."""


_UNPRINTABLE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2028\u2029\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` with its control characters (ESC, CR, tab, the rest of C0 and C1, bidirectional
    overrides) written as escapes such as \\x1b; newlines are kept. For a server's text on a terminal."""
    return _UNPRINTABLE.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}", text)


# The deadline (time.monotonic()) of the request this thread or task is making, read by the
# network streams below: every connect, read and write waits at most until then.
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("jepa_client_deadline", default=None)


def _until_deadline(timeout: float | None) -> float | None:
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise httpcore.ReadTimeout("the request's deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every wait ends by the current request's deadline: httpx's own timeouts
    are per read, so a server sending a byte every few seconds (headers included) would never trip them."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self.stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.stream.read(max_bytes, _until_deadline(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.stream.write(buffer, _until_deadline(timeout))

    def close(self) -> None:
        self.stream.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> Any:
        return _DeadlineStream(self.stream.start_tls(ssl_context, server_hostname, _until_deadline(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self.stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, backend: httpcore.NetworkBackend) -> None:
        self.backend = backend

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, **options: Any) -> Any:
        return _DeadlineStream(self.backend.connect_tcp(host, port, _until_deadline(timeout), **options))

    def connect_unix_socket(self, path: str, timeout: float | None = None, **options: Any) -> Any:
        return _DeadlineStream(self.backend.connect_unix_socket(path, _until_deadline(timeout), **options))

    def sleep(self, seconds: float) -> None:
        self.backend.sleep(seconds)


def _bound_by_deadlines(http: httpx.Client) -> None:
    """Give the client's connection pools (its own and any proxy's) the deadline-bound streams.
    httpx has no public way to pass a network backend; where its internals differ, the deadline
    is still checked between the answer's chunks."""
    for transport in (http._transport, *http._mounts.values()):
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if isinstance(backend, httpcore.NetworkBackend) and not isinstance(backend, _DeadlineBackend):
            pool._network_backend = _DeadlineBackend(backend)  # type: ignore[union-attr]


class _Answer:
    """An answer read whole within the limits: what the readers below check."""

    def __init__(self, what: str, status: int, headers: httpx.Headers, content: bytes) -> None:
        self.what, self.status, self.headers, self.content = what, status, headers, content

    @property
    def media_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    def bad(self, problem: str) -> BadResponse:
        return BadResponse(self.status, f"{self.what}: {problem}")


class _Reading:
    """An answer as it streams in: refused past `limit` bytes or after `deadline`."""

    def __init__(self, what: str, response: httpx.Response, limits: _Requests, deadline: float) -> None:
        self.what, self.response, self.deadline = what, response, deadline
        self.limit, self.deadline_s = limits.max_response_bytes, limits.deadline_s
        self.body = bytearray()
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            raise self.too_large(f"it says it is {int(declared)} bytes")

    def too_large(self, why: str) -> ResponseTooLarge:
        return ResponseTooLarge(
            self.response.status_code, f"{self.what}: the answer is over the {self.limit}-byte limit ({why})"
        )

    def add(self, chunk: bytes) -> None:
        if len(self.body) + len(chunk) > self.limit:
            raise self.too_large("reading stopped there")
        if time.monotonic() > self.deadline:
            raise _late(self.what, self.deadline_s, self.response.status_code)
        self.body += chunk

    def answer(self) -> _Answer:
        return _Answer(self.what, self.response.status_code, self.response.headers, bytes(self.body))


def _late(what: str, deadline_s: float, status: int = 0) -> DeadlineExceeded:
    return DeadlineExceeded(status, f"{what}: no whole answer within the {deadline_s:g} s deadline")


def _what(method: str, path: str) -> str:
    return f"{method} {path}"


def _retry_after(value: str | None) -> float | None:
    try:
        seconds = float(value) if value else None
    except ValueError:  # an HTTP date, or garbage
        return None
    return seconds if seconds is not None and math.isfinite(seconds) and seconds >= 0 else None


def _clip(text: str, limit: int = 500) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def _raise_for(answer: _Answer) -> None:
    if 200 <= answer.status < 300:
        return
    try:
        body = json.loads(answer.content)
        detail, kind = body.get("detail"), body.get("type")
    except (ValueError, AttributeError, RecursionError):  # not JSON (a proxy's page), or not an object
        detail, kind = _clip(answer.content.decode("utf-8", "replace")), None
    kind = kind if isinstance(kind, str) else None
    status = answer.status
    if status == 429:
        raise Overloaded(status, detail, kind, _retry_after(answer.headers.get("retry-after")))
    error = {401: Unauthorized, 404: NotFound, 409: Conflict}.get(status)
    if error is None:
        error = Unavailable if status >= 500 else BadRequest
    raise error(status, detail, kind)


class _Wrong(Exception):
    """A problem found in an answer, raised as BadResponse by `_Requests._reading`."""


# The shapes of the JSON answers, as far as this client and the CLI read them: a type or a tuple
# of types (None for null), {key: shape} for an object with at least those keys, [shape] for a list.
_NUMBER = (int, float)
JOB = {"id": str, "status": str, "model": str, "progress": dict, "version": (int, None), "created_at": str}
DATASET = {"id": str, "name": str, "num_sequences": int, "input_dim": int, "min_len": int, "max_len": int,
           "created_at": str}  # fmt: skip
MODEL = {"name": str, "versions": list, "latest": (int, None), "aliases": dict}
LOG_LINE = {"id": int, "attempt": int, "created_at": str, "level": str, "message": str}
SEGMENT = {"start": int, "end": int, "peak": int, "score": _NUMBER, "percentile": (*_NUMBER, None)}
SCORED = {"scores": list, "percentiles": (list, None), "segments": [SEGMENT]}
JOB_ID = re.compile(r"[0-9A-Za-z_-]{1,128}")


def _check(value: Any, shape: Any, where: str) -> None:
    """Raise _Wrong unless `value` (parsed JSON) has `shape`."""
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            raise _Wrong(f"{where} is {_kind(value)}, not an object")
        for key, inner in shape.items():
            if key not in value:
                raise _Wrong(f"{where} has no {key!r}")
            _check(value[key], inner, f"{where}.{key}")
    elif isinstance(shape, list):
        if not isinstance(value, list):
            raise _Wrong(f"{where} is {_kind(value)}, not a list")
        for i, item in enumerate(value):
            _check(item, shape[0], f"{where}[{i}]")
    else:
        types = tuple(type(None) if t is None else t for t in (shape if isinstance(shape, tuple) else (shape,)))
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            expected = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise _Wrong(f"{where} is {_kind(value)}, not {expected}")


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _floats(value: Any, ndim: int, where: str) -> np.ndarray:
    """A JSON array of numbers (null as NaN) with `ndim` dimensions, as float32."""
    try:
        array = np.array(value, dtype=np.float32)
    except (ValueError, TypeError, OverflowError) as exc:
        raise _Wrong(f"{where} is not an array of numbers ({type(exc).__name__})") from None
    if array.ndim != ndim:
        raise _Wrong(f"{where} has {array.ndim} dimensions, not {ndim}")
    return array


def _load_npy(answer: _Answer) -> np.ndarray:
    """An .npy answer of real numbers, its header checked against its length before it is read."""
    fmt = np.lib.format
    buffer = io.BytesIO(answer.content)
    try:
        version = fmt.read_magic(buffer)
        read_header = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
        if read_header is None:
            raise ValueError(f"version {version}")
        shape, _, dtype = read_header(buffer)
        if dtype.hasobject or dtype.kind not in "fiu":
            raise ValueError(f"dtype {dtype}")
        if math.prod(shape) * dtype.itemsize != len(answer.content) - buffer.tell():
            raise ValueError(f"shape {shape} does not match its {len(answer.content)} bytes")
        buffer.seek(0)
        return np.load(buffer, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - whatever numpy makes of garbage, it is a bad answer
        raise answer.bad(f"the .npy answer is unreadable ({type(exc).__name__}: {_clip(str(exc), 200)})") from None


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()


def _rectangular(batch: Batch) -> np.ndarray | None:
    """The batch as one float32 (N, T, D) array when every sequence has the same length."""
    if isinstance(batch, np.ndarray):
        return batch.astype(np.float32, copy=False) if batch.ndim == 3 else None
    lengths = {len(seq) for seq in batch}
    return np.asarray(batch, dtype=np.float32) if len(lengths) == 1 else None


def _as_lists(batch: Batch) -> list[Any]:
    return [np.asarray(seq, dtype=np.float32).tolist() for seq in batch]


def _label_list(labels: Labels) -> list[Any]:
    """Labels as JSON-ready ints and strings (numpy scalars become Python ones)."""
    if isinstance(labels, np.ndarray):
        return labels.tolist()
    return [label.item() if isinstance(label, np.generic) else label for label in labels]


def _options(model: str | None, version: int | str | None, **extra: Any) -> dict[str, Any]:
    return {k: v for k, v in {"model": model, "version": version, **extra}.items() if v is not None}


class _Requests:
    """What the two clients share: building each request and reading each answer."""

    deadline_s: float
    max_response_bytes: int

    def _limits(self, deadline_s: float, max_response_bytes: int) -> None:
        if not deadline_s > 0 or not max_response_bytes > 0:
            raise ValueError("deadline_s and max_response_bytes must be positive")
        self.deadline_s, self.max_response_bytes = deadline_s, max_response_bytes

    def _encode_request(self, sequences: Batch, options: dict[str, Any]) -> dict[str, Any]:
        array = _rectangular(sequences)
        if array is not None:  # binary both ways: no floats through JSON
            params = {k: str(v).lower() if isinstance(v, bool) else v for k, v in options.items()}
            headers = {"content-type": NPY, "accept": NPY}
            return {"content": _npy(array), "params": params, "headers": headers}
        return {"json": {"sequences": _as_lists(sequences), **options}}

    @staticmethod
    def _scored_request(contexts: Batch, targets: Batch, options: dict[str, Any]) -> dict[str, Any]:
        return {"json": {"contexts": _as_lists(contexts), "targets": _as_lists(targets), **options}}

    @classmethod
    def _scored(cls, answer: _Answer, rows: int) -> tuple[np.ndarray, np.ndarray]:
        body = cls._json(answer, {"predictions": list, "similarities": list})
        with _reading(answer):
            predictions = _floats(body["predictions"], 2, "the answer's predictions")
            similarities = _floats(body["similarities"], 1, "the answer's similarities")
            if len(predictions) != rows or len(similarities) != rows:
                raise _Wrong(f"{rows} predictions and similarities were due, the answer has "
                             f"{len(predictions)} and {len(similarities)}")  # fmt: skip
        return predictions, similarities

    @staticmethod
    def _score_request(series: Batch, options: dict[str, Any]) -> dict[str, Any]:
        return {"json": {"series": _as_lists(series), **options}}

    @classmethod
    def _score_result(cls, answer: _Answer, rows: int) -> dict[str, Any]:
        """POST /score's answer, each series' `scores` and `percentiles` as float arrays (NaN for
        the warm-up; `percentiles` None for an uncalibrated version)."""
        body = cls._json(answer, {"series": [SCORED]})
        with _reading(answer):
            if len(body["series"]) != rows:
                raise _Wrong(f"{rows} scored series were due, the answer has {len(body['series'])}")
            for i, scored in enumerate(body["series"]):
                scored["scores"] = _floats(scored["scores"], 1, f"the answer's series[{i}].scores")  # None -> nan
                if scored["percentiles"] is not None:
                    scored["percentiles"] = _floats(scored["percentiles"], 1, f"the answer's series[{i}].percentiles")
        return body

    @staticmethod
    def _settled(job: dict[str, Any], bar: _ProgressBar | None) -> bool:
        """True once the job succeeded; JobFailed if it failed or was cancelled; False while it runs;
        BadResponse for a status this client does not know (it would otherwise poll for ever)."""
        if job["status"] not in JOB_STATES:
            raise BadResponse(200, f"GET /jobs/{job['id']}: unknown job status {job['status']!r}")
        if bar is not None:
            bar.show(job)
        if job["status"] in ("failed", "cancelled"):
            raise JobFailed(job)
        return job["status"] == "succeeded"

    @classmethod
    def _array(cls, answer: _Answer, field: str, rows: int) -> np.ndarray:
        """(rows, R) numbers, from an .npy answer or a JSON one's `field`."""
        _raise_for(answer)
        if answer.media_type == NPY:
            array = _load_npy(answer)
        else:
            body = cls._json(answer, {field: list})
            with _reading(answer):
                array = _floats(body[field], 2, f"the answer's {field}")
        if array.ndim != 2 or len(array) != rows:
            raise answer.bad(f"{rows} rows were due, the answer has shape {array.shape}")
        return array.astype(np.float32, copy=False)

    @staticmethod
    def _json(answer: _Answer, shape: Any = None) -> Any:
        """The answer's JSON, checked against `shape`; None for an empty answer where no shape is due."""
        _raise_for(answer)
        if shape is None and not answer.content:
            return None
        if answer.media_type != "application/json" and not answer.media_type.endswith("+json"):
            raise answer.bad(f"the answer is {answer.media_type or 'of no content type'}, not JSON")
        try:
            body = json.loads(answer.content)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise answer.bad(f"the answer is not valid JSON ({type(exc).__name__})") from None
        if shape is not None:
            with _reading(answer):
                _check(body, shape, "answer")
        return body

    @classmethod
    def _job_id(cls, answer: _Answer) -> str:
        job_id = cls._json(answer, {"job_id": str})["job_id"]
        if not JOB_ID.fullmatch(job_id):
            raise answer.bad(f"the job id {_clip(job_id, 40)!r} is not one")
        return job_id

    @classmethod
    def _info(cls, answer: _Answer) -> dict[str, Any]:
        body = cls._json(answer, {"limits": dict})
        for name, value in body["limits"].items():
            if not isinstance(value, _NUMBER) or isinstance(value, bool) or not math.isfinite(value):
                raise answer.bad(f"the answer's limits.{_clip(str(name), 40)} is not a number")
        return body

    @classmethod
    def _similarities(cls, answer: _Answer, a: Batch, b: Batch) -> np.ndarray:
        body = cls._json(answer, {"similarities": list})
        with _reading(answer):
            matrix = _floats(body["similarities"], 2, "the answer's similarities")
            if matrix.shape != (len(a), len(b)):
                raise _Wrong(f"a {len(a)} x {len(b)} matrix was due, the answer has shape {matrix.shape}")
        return matrix

    @staticmethod
    def _train_body(dataset: dict[str, Any] | str, config: dict[str, Any] | None, model: str | None) -> dict:
        data = {"id": dataset} if isinstance(dataset, str) else dataset
        return {k: v for k, v in {"model": model, "dataset": data, "config": config or {}}.items() if v is not None}

    @staticmethod
    def _upload(sequences: Batch | str | Path, name: str | None, labels: Labels | None = None) -> dict[str, Any]:
        label_list = None if labels is None else _label_list(labels)
        # Beside a file, the labels travel as a JSON file part: no size limit on form fields applies.
        label_part = {} if label_list is None else {"labels": ("labels.json", json.dumps(label_list).encode())}
        if isinstance(sequences, str | Path):  # a .npy or .csv file
            path = Path(sequences)
            files = {"file": (path.name, path.read_bytes()), **label_part}
            return {"files": files, "data": {"name": name} if name else {}}
        array = _rectangular(sequences)
        if array is not None:
            return {"files": {"file": ("data.npy", _npy(array)), **label_part}, "data": {"name": name or "data"}}
        body = {"name": name or "data", "sequences": _as_lists(sequences)}
        return {"json": body if label_list is None else body | {"labels": label_list}}


@contextlib.contextmanager
def _reading(answer: _Answer) -> Iterator[None]:
    """Turn a problem found in `answer` into BadResponse naming its request."""
    try:
        yield
    except _Wrong as exc:
        raise answer.bad(str(exc)) from None


def _force(force: bool) -> dict[str, str]:
    return {"force": "true"} if force else {}


def _key_header(idempotency_key: str | None) -> dict[str, str]:
    return {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class JEPAClient(_Requests):
    """`timeout`: httpx's limit on each connect, read and write; `deadline_s`: on one whole request
    (DeadlineExceeded past it); `max_response_bytes`: on one answer (ResponseTooLarge past it).
    `transport`: an httpx transport to use instead of the network (tests)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = TIMEOUT_S,
        deadline_s: float = DEADLINE_S,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._limits(deadline_s, max_response_bytes)
        self.http = httpx.Client(base_url=base_url, headers=_headers(api_key), timeout=timeout, transport=transport)
        _bound_by_deadlines(self.http)

    @classmethod
    def over(
        cls, http: httpx.Client, deadline_s: float = DEADLINE_S, max_response_bytes: int = MAX_RESPONSE_BYTES
    ) -> JEPAClient:
        """A client sending through `http`, an httpx.Client set up elsewhere (its base URL, headers
        and transport as they are; closing this client closes it): e.g. one whose transport runs
        the app in this process, as the CLI's local mode does."""
        client = cls.__new__(cls)
        client._limits(deadline_s, max_response_bytes)
        client.http = http
        _bound_by_deadlines(http)
        return client

    def __enter__(self) -> JEPAClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **request: Any) -> _Answer:
        """Send the request and read its answer whole, within the deadline and the size limit."""
        what = _what(method, path)
        deadline = time.monotonic() + self.deadline_s
        token = _DEADLINE.set(deadline)
        try:
            with self.http.stream(method, path, **request) as response:
                reading = _Reading(what, response, self, deadline)
                for chunk in response.iter_bytes():
                    reading.add(chunk)
                return reading.answer()
        except httpx.TimeoutException:
            if deadline - time.monotonic() > 0.05:  # httpx's own timeout, well before the deadline
                raise
            raise _late(what, self.deadline_s) from None
        except httpx.DecodingError as exc:
            raise BadResponse(0, f"{what}: the answer's content encoding is broken ({exc})") from None
        finally:
            _DEADLINE.reset(token)

    def encode(
        self,
        sequences: Batch,
        model: str | None = None,
        version: int | str | None = None,
        encoder: str = "target",
        normalize: bool = False,
    ) -> np.ndarray:
        """(N, R) embeddings."""
        options = _options(model, version, encoder=encoder, normalize=normalize)
        answer = self._call("POST", "/encode", **self._encode_request(sequences, options))
        return self._array(answer, "embeddings", len(sequences))

    def predict(
        self, contexts: Batch, targets: Batch | None = None, model: str | None = None, version: int | str | None = None
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """(N, R) predicted representations; with targets, also the (N,) similarities to them."""
        options = _options(model, version)
        if targets is None:
            answer = self._call("POST", "/predict", **self._encode_request(contexts, options))
            return self._array(answer, "predictions", len(contexts))
        answer = self._call("POST", "/predict", **self._scored_request(contexts, targets, options))
        return self._scored(answer, len(contexts))

    def score(self, series: Batch, model: str | None = None, version: int | str | None = None, **options: Any) -> dict:
        """Step-by-step anomaly scores of long series (POST /score): per series, `scores` (T,) and
        `percentiles` (T,) arrays and the most anomalous `segments`. `options`: method (auto,
        memory or forecast), context_len, target_len, stride, top, threshold."""
        answer = self._call("POST", "/score", **self._score_request(series, _options(model, version, **options)))
        return self._score_result(answer, len(series))

    def similarity(
        self, a: Batch, b: Batch, model: str | None = None, version: int | str | None = None, encoder: str = "target"
    ) -> np.ndarray:
        """(|a|, |b|) cosine similarities."""
        body = {"a": _as_lists(a), "b": _as_lists(b), **_options(model, version, encoder=encoder)}
        return self._similarities(self._call("POST", "/similarity", json=body), a, b)

    def train(
        self,
        dataset: dict[str, Any] | str,
        config: dict[str, Any] | None = None,
        model: str | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """Queue a job; `dataset` is a toy spec ({"pattern": ...}) or an uploaded dataset's id.

        `idempotency_key`: retrying with the same key (after a timeout, say) queues no second job."""
        body = self._train_body(dataset, config, model)
        return self._job_id(self._call("POST", "/train", json=body, headers=_key_header(idempotency_key)))

    def job(self, job_id: str) -> dict[str, Any]:
        return self._json(self._call("GET", f"/jobs/{job_id}"), JOB)

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._json(self._call("POST", f"/jobs/{job_id}/cancel"), dict)

    def job_logs(self, job_id: str, since: int = 0, limit: int = 1000) -> dict[str, Any]:
        """The job's log lines after `since`; pass the answer's `next_since` to page on."""
        answer = self._call("GET", f"/jobs/{job_id}/logs", params={"since": since, "limit": limit})
        return self._json(answer, {"lines": [LOG_LINE], "next_since": int})

    def wait_for_job(self, job_id: str, timeout: float = 3600, poll_s: float = 0.5, progress: bool = False) -> dict:
        """Poll until the job finishes; returns it, or raises JobFailed / TimeoutError (after
        `timeout` seconds) / BadResponse (a job status this client does not know)."""
        bar = _ProgressBar() if progress else None
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                job = self.job(job_id)
                if self._settled(job, bar):
                    return job
                time.sleep(max(0.0, min(poll_s, deadline - time.monotonic())))
        finally:
            if bar is not None:
                bar.close()
        raise TimeoutError(f"job {job_id} did not finish in {timeout:g} s")

    def upload_dataset(
        self,
        sequences: Batch | str | Path,
        name: str | None = None,
        labels: Labels | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Upload arrays (sent as .npy, or JSON when lengths differ) or a .npy/.csv file.

        `labels`: optional, one class per sequence (strings or integers; a CSV may instead have a
        `label` column). Never trained on; versions trained on the dataset report label_* metrics.
        `idempotency_key`: retrying with the same key stores no second copy.
        """
        request = self._upload(sequences, name, labels)
        return self._json(self._call("POST", "/datasets", **request, headers=_key_header(idempotency_key)), DATASET)

    def models(self) -> list[dict[str, Any]]:
        return self._json(self._call("GET", "/models"), [MODEL])

    def jobs(self, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Training jobs, newest first; `status` keeps one state (queued, running, succeeded, ...)."""
        params = _options(None, None, status=status, limit=limit)
        return self._json(self._call("GET", "/jobs", params=params), [JOB])

    def datasets(self, limit: int = 100) -> list[dict[str, Any]]:
        """Uploaded datasets, newest first."""
        return self._json(self._call("GET", "/datasets", params={"limit": limit}), [DATASET])

    def info(self) -> dict[str, Any]:
        """What the server serves, and its `limits` per request (max_batch, max_request_points, ...)."""
        return self._info(self._call("GET", "/info"))

    def set_alias(self, model: str, alias: str, version: int | str) -> dict[str, Any]:
        return self._json(self._call("PUT", f"/models/{model}/aliases/{alias}", json={"version": version}), dict)

    def delete_version(self, model: str, version: int | str, force: bool = False) -> None:
        """Delete a version and its checkpoint; Conflict (409) while an alias points at it, or when
        it is the default model's only version and not `force`."""
        self._json(self._call("DELETE", f"/models/{model}/versions/{version}", params=_force(force)))

    def delete_job(self, job_id: str) -> None:
        """Delete a finished job; JEPAError (409) while it is queued or running."""
        self._json(self._call("DELETE", f"/jobs/{job_id}"))

    def delete_dataset(self, dataset_id: str) -> None:
        """Delete a dataset and its file; JEPAError (409) while a queued or running job uses it."""
        self._json(self._call("DELETE", f"/datasets/{dataset_id}"))


class AsyncJEPAClient(_Requests):
    """JEPAClient's methods as coroutines, with the same limits (the deadline by anyio's fail_after)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = TIMEOUT_S,
        deadline_s: float = DEADLINE_S,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._limits(deadline_s, max_response_bytes)
        self.http = httpx.AsyncClient(
            base_url=base_url, headers=_headers(api_key), timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> AsyncJEPAClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.http.aclose()

    async def _call(self, method: str, path: str, **request: Any) -> _Answer:
        what = _what(method, path)
        deadline = time.monotonic() + self.deadline_s
        try:
            with anyio.fail_after(self.deadline_s):
                async with self.http.stream(method, path, **request) as response:
                    reading = _Reading(what, response, self, deadline)
                    async for chunk in response.aiter_bytes():
                        reading.add(chunk)
                    return reading.answer()
        except TimeoutError:  # anyio's; httpx's own timeouts are not TimeoutErrors
            raise _late(what, self.deadline_s) from None
        except httpx.DecodingError as exc:
            raise BadResponse(0, f"{what}: the answer's content encoding is broken ({exc})") from None

    async def encode(
        self,
        sequences: Batch,
        model: str | None = None,
        version: int | str | None = None,
        encoder: str = "target",
        normalize: bool = False,
    ) -> np.ndarray:
        options = _options(model, version, encoder=encoder, normalize=normalize)
        answer = await self._call("POST", "/encode", **self._encode_request(sequences, options))
        return self._array(answer, "embeddings", len(sequences))

    async def predict(
        self, contexts: Batch, targets: Batch | None = None, model: str | None = None, version: int | str | None = None
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        options = _options(model, version)
        if targets is None:
            answer = await self._call("POST", "/predict", **self._encode_request(contexts, options))
            return self._array(answer, "predictions", len(contexts))
        answer = await self._call("POST", "/predict", **self._scored_request(contexts, targets, options))
        return self._scored(answer, len(contexts))

    async def score(
        self, series: Batch, model: str | None = None, version: int | str | None = None, **options: Any
    ) -> dict:
        request = self._score_request(series, _options(model, version, **options))
        return self._score_result(await self._call("POST", "/score", **request), len(series))

    async def similarity(
        self, a: Batch, b: Batch, model: str | None = None, version: int | str | None = None, encoder: str = "target"
    ) -> np.ndarray:
        body = {"a": _as_lists(a), "b": _as_lists(b), **_options(model, version, encoder=encoder)}
        return self._similarities(await self._call("POST", "/similarity", json=body), a, b)

    async def train(
        self,
        dataset: dict[str, Any] | str,
        config: dict[str, Any] | None = None,
        model: str | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        body = self._train_body(dataset, config, model)
        return self._job_id(await self._call("POST", "/train", json=body, headers=_key_header(idempotency_key)))

    async def job(self, job_id: str) -> dict[str, Any]:
        return self._json(await self._call("GET", f"/jobs/{job_id}"), JOB)

    async def cancel(self, job_id: str) -> dict[str, Any]:
        return self._json(await self._call("POST", f"/jobs/{job_id}/cancel"), dict)

    async def job_logs(self, job_id: str, since: int = 0, limit: int = 1000) -> dict[str, Any]:
        answer = await self._call("GET", f"/jobs/{job_id}/logs", params={"since": since, "limit": limit})
        return self._json(answer, {"lines": [LOG_LINE], "next_since": int})

    async def wait_for_job(
        self, job_id: str, timeout: float = 3600, poll_s: float = 0.5, progress: bool = False
    ) -> dict[str, Any]:
        bar = _ProgressBar() if progress else None
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                job = await self.job(job_id)
                if self._settled(job, bar):
                    return job
                await asyncio.sleep(max(0.0, min(poll_s, deadline - time.monotonic())))
        finally:
            if bar is not None:
                bar.close()
        raise TimeoutError(f"job {job_id} did not finish in {timeout:g} s")

    async def upload_dataset(
        self,
        sequences: Batch | str | Path,
        name: str | None = None,
        labels: Labels | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        request = self._upload(sequences, name, labels)
        answer = await self._call("POST", "/datasets", **request, headers=_key_header(idempotency_key))
        return self._json(answer, DATASET)

    async def models(self) -> list[dict[str, Any]]:
        return self._json(await self._call("GET", "/models"), [MODEL])

    async def jobs(self, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        params = _options(None, None, status=status, limit=limit)
        return self._json(await self._call("GET", "/jobs", params=params), [JOB])

    async def datasets(self, limit: int = 100) -> list[dict[str, Any]]:
        return self._json(await self._call("GET", "/datasets", params={"limit": limit}), [DATASET])

    async def info(self) -> dict[str, Any]:
        return self._info(await self._call("GET", "/info"))

    async def set_alias(self, model: str, alias: str, version: int | str) -> dict[str, Any]:
        answer = await self._call("PUT", f"/models/{model}/aliases/{alias}", json={"version": version})
        return self._json(answer, dict)

    async def delete_version(self, model: str, version: int | str, force: bool = False) -> None:
        self._json(await self._call("DELETE", f"/models/{model}/versions/{version}", params=_force(force)))

    async def delete_job(self, job_id: str) -> None:
        self._json(await self._call("DELETE", f"/jobs/{job_id}"))

    async def delete_dataset(self, dataset_id: str) -> None:
        self._json(await self._call("DELETE", f"/datasets/{dataset_id}"))


def _number(value: Any) -> float | None:
    """A JSON number from a job's progress, or None for anything else."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


class _ProgressBar:
    """Epoch, loss and ETA of a job, drawn with rich (already a dependency of the CLI)."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("epoch {task.completed}/{task.total}"),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("eta {task.fields[eta]}"),
            TimeElapsedColumn(),
        )
        self.progress.start()
        self.task: Any = None

    def show(self, job: dict[str, Any]) -> None:
        from rich.markup import escape

        p = job.get("progress") or {}
        loss, eta, epoch, epochs = (_number(p.get(key)) for key in ("loss", "eta_s", "epoch", "epochs"))
        loss_text = f"{loss:.4f}" if loss is not None else "-"
        eta_text = f"{eta:.0f}s" if eta is not None else "-"
        description = escape(printable(f"{job['model']} {job['status']}"))
        completed = int(epoch) if epoch is not None and abs(epoch) < 1e9 else 0
        total = int(epochs) if epochs is not None and 0 < epochs < 1e9 else None
        if self.task is None:
            self.task = self.progress.add_task(description, total=total, loss=loss_text, eta=eta_text)
        self.progress.update(
            self.task, completed=completed, total=total, loss=loss_text, eta=eta_text, description=description
        )

    def close(self) -> None:
        self.progress.stop()
