"""A Python client for the service: numpy arrays in and out, typed errors that carry `detail`.

    from service.client import JEPAClient

    with JEPAClient("http://localhost:8000", api_key=None) as client:
        z = client.encode(np.random.randn(16, 20, 2))  # (16, R) float32, sent as .npy
        job = client.train({"pattern": "circle"}, config={"epochs": 20}, model="circles")
        client.wait_for_job(job, progress=True)
        client.set_alias("circles", "production", 1)

`AsyncJEPAClient` has the same methods as coroutines. Built on httpx; it imports nothing else of
this package, so it can be copied into a service that only talks to this one.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np

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


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        body = response.json()
        detail, kind = body.get("detail"), body.get("type")
    except (ValueError, AttributeError):  # not JSON (a proxy's page), or not an object
        detail, kind = response.text, None
    status = response.status_code
    if status == 429:
        retry = response.headers.get("retry-after")
        raise Overloaded(status, detail, kind, float(retry) if retry else None)
    error = {401: Unauthorized, 404: NotFound, 409: Conflict}.get(status)
    if error is None:
        error = Unavailable if status >= 500 else BadRequest
    raise error(status, detail, kind)


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
    def _scored(cls, response: httpx.Response) -> tuple[np.ndarray, np.ndarray]:
        body = cls._json(response)
        return np.asarray(body["predictions"], np.float32), np.asarray(body["similarities"], np.float32)

    @staticmethod
    def _score_request(series: Batch, options: dict[str, Any]) -> dict[str, Any]:
        return {"json": {"series": _as_lists(series), **options}}

    @classmethod
    def _score_result(cls, response: httpx.Response) -> dict[str, Any]:
        """POST /score's answer, each series' `scores` and `percentiles` as float arrays (NaN for
        the warm-up; `percentiles` None for an uncalibrated version)."""
        body = cls._json(response)
        for scored in body["series"]:
            scored["scores"] = np.array(scored["scores"], dtype=np.float32)  # None -> nan
            if scored["percentiles"] is not None:
                scored["percentiles"] = np.array(scored["percentiles"], dtype=np.float32)
        return body

    @staticmethod
    def _settled(job: dict[str, Any], bar: _ProgressBar | None) -> bool:
        """True once the job succeeded; JobFailed if it failed or was cancelled; False while it runs."""
        if bar is not None:
            bar.show(job)
        if job["status"] in ("failed", "cancelled"):
            raise JobFailed(job)
        return job["status"] == "succeeded"

    @staticmethod
    def _array(response: httpx.Response, field: str) -> np.ndarray:
        _raise_for(response)
        if response.headers.get("content-type", "").startswith(NPY):
            return np.load(io.BytesIO(response.content), allow_pickle=False)
        return np.asarray(response.json()[field], dtype=np.float32)

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        _raise_for(response)
        return response.json() if response.content else None

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


def _key_header(idempotency_key: str | None) -> dict[str, str]:
    return {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class JEPAClient(_Requests):
    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 60.0) -> None:
        self.http = httpx.Client(base_url=base_url, headers=_headers(api_key), timeout=timeout)

    def __enter__(self) -> JEPAClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

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
        return self._array(self.http.post("/encode", **self._encode_request(sequences, options)), "embeddings")

    def predict(
        self, contexts: Batch, targets: Batch | None = None, model: str | None = None, version: int | str | None = None
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """(N, R) predicted representations; with targets, also the (N,) similarities to them."""
        options = _options(model, version)
        if targets is None:
            return self._array(self.http.post("/predict", **self._encode_request(contexts, options)), "predictions")
        return self._scored(self.http.post("/predict", **self._scored_request(contexts, targets, options)))

    def score(self, series: Batch, model: str | None = None, version: int | str | None = None, **options: Any) -> dict:
        """Step-by-step anomaly scores of long series (POST /score): per series, `scores` (T,) and
        `percentiles` (T,) arrays and the most anomalous `segments`. `options`: method (auto,
        memory or forecast), context_len, target_len, stride, top, threshold."""
        return self._score_result(
            self.http.post("/score", **self._score_request(series, _options(model, version, **options)))
        )

    def similarity(
        self, a: Batch, b: Batch, model: str | None = None, version: int | str | None = None, encoder: str = "target"
    ) -> np.ndarray:
        """(|a|, |b|) cosine similarities."""
        body = {"a": _as_lists(a), "b": _as_lists(b), **_options(model, version, encoder=encoder)}
        return np.asarray(self._json(self.http.post("/similarity", json=body))["similarities"], np.float32)

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
        return self._json(self.http.post("/train", json=body, headers=_key_header(idempotency_key)))["job_id"]

    def job(self, job_id: str) -> dict[str, Any]:
        return self._json(self.http.get(f"/jobs/{job_id}"))

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._json(self.http.post(f"/jobs/{job_id}/cancel"))

    def job_logs(self, job_id: str, since: int = 0, limit: int = 1000) -> dict[str, Any]:
        """The job's log lines after `since`; pass the answer's `next_since` to page on."""
        return self._json(self.http.get(f"/jobs/{job_id}/logs", params={"since": since, "limit": limit}))

    def wait_for_job(self, job_id: str, timeout: float = 3600, poll_s: float = 0.5, progress: bool = False) -> dict:
        """Poll until the job finishes; returns it, or raises JobFailed / TimeoutError."""
        bar = _ProgressBar() if progress else None
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                job = self.job(job_id)
                if self._settled(job, bar):
                    return job
                time.sleep(poll_s)
        finally:
            if bar is not None:
                bar.close()
        raise TimeoutError(f"job {job_id} did not finish in {timeout} s")

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
        return self._json(self.http.post("/datasets", **request, headers=_key_header(idempotency_key)))

    def models(self) -> list[dict[str, Any]]:
        return self._json(self.http.get("/models"))

    def jobs(self, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Training jobs, newest first; `status` keeps one state (queued, running, succeeded, ...)."""
        return self._json(self.http.get("/jobs", params=_options(None, None, status=status, limit=limit)))

    def datasets(self, limit: int = 100) -> list[dict[str, Any]]:
        """Uploaded datasets, newest first."""
        return self._json(self.http.get("/datasets", params={"limit": limit}))

    def info(self) -> dict[str, Any]:
        """What the server serves, and its `limits` per request (max_batch, max_request_points, ...)."""
        return self._json(self.http.get("/info"))

    def set_alias(self, model: str, alias: str, version: int | str) -> dict[str, Any]:
        return self._json(self.http.put(f"/models/{model}/aliases/{alias}", json={"version": version}))

    def delete_version(self, model: str, version: int | str) -> None:
        """Delete a version and its checkpoint; JEPAError (409) while an alias points at it."""
        self._json(self.http.delete(f"/models/{model}/versions/{version}"))

    def delete_job(self, job_id: str) -> None:
        """Delete a finished job; JEPAError (409) while it is queued or running."""
        self._json(self.http.delete(f"/jobs/{job_id}"))

    def delete_dataset(self, dataset_id: str) -> None:
        """Delete a dataset and its file; JEPAError (409) while a queued or running job uses it."""
        self._json(self.http.delete(f"/datasets/{dataset_id}"))


class AsyncJEPAClient(_Requests):
    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 60.0) -> None:
        self.http = httpx.AsyncClient(base_url=base_url, headers=_headers(api_key), timeout=timeout)

    async def __aenter__(self) -> AsyncJEPAClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.http.aclose()

    async def encode(
        self,
        sequences: Batch,
        model: str | None = None,
        version: int | str | None = None,
        encoder: str = "target",
        normalize: bool = False,
    ) -> np.ndarray:
        options = _options(model, version, encoder=encoder, normalize=normalize)
        return self._array(await self.http.post("/encode", **self._encode_request(sequences, options)), "embeddings")

    async def predict(
        self, contexts: Batch, targets: Batch | None = None, model: str | None = None, version: int | str | None = None
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        options = _options(model, version)
        if targets is None:
            response = await self.http.post("/predict", **self._encode_request(contexts, options))
            return self._array(response, "predictions")
        return self._scored(await self.http.post("/predict", **self._scored_request(contexts, targets, options)))

    async def score(
        self, series: Batch, model: str | None = None, version: int | str | None = None, **options: Any
    ) -> dict:
        request = self._score_request(series, _options(model, version, **options))
        return self._score_result(await self.http.post("/score", **request))

    async def similarity(
        self, a: Batch, b: Batch, model: str | None = None, version: int | str | None = None, encoder: str = "target"
    ) -> np.ndarray:
        body = {"a": _as_lists(a), "b": _as_lists(b), **_options(model, version, encoder=encoder)}
        return np.asarray(self._json(await self.http.post("/similarity", json=body))["similarities"], np.float32)

    async def train(
        self,
        dataset: dict[str, Any] | str,
        config: dict[str, Any] | None = None,
        model: str | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        body = self._train_body(dataset, config, model)
        return self._json(await self.http.post("/train", json=body, headers=_key_header(idempotency_key)))["job_id"]

    async def job(self, job_id: str) -> dict[str, Any]:
        return self._json(await self.http.get(f"/jobs/{job_id}"))

    async def cancel(self, job_id: str) -> dict[str, Any]:
        return self._json(await self.http.post(f"/jobs/{job_id}/cancel"))

    async def job_logs(self, job_id: str, since: int = 0, limit: int = 1000) -> dict[str, Any]:
        return self._json(await self.http.get(f"/jobs/{job_id}/logs", params={"since": since, "limit": limit}))

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
                await asyncio.sleep(poll_s)
        finally:
            if bar is not None:
                bar.close()
        raise TimeoutError(f"job {job_id} did not finish in {timeout} s")

    async def upload_dataset(
        self,
        sequences: Batch | str | Path,
        name: str | None = None,
        labels: Labels | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        request = self._upload(sequences, name, labels)
        return self._json(await self.http.post("/datasets", **request, headers=_key_header(idempotency_key)))

    async def models(self) -> list[dict[str, Any]]:
        return self._json(await self.http.get("/models"))

    async def jobs(self, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        return self._json(await self.http.get("/jobs", params=_options(None, None, status=status, limit=limit)))

    async def datasets(self, limit: int = 100) -> list[dict[str, Any]]:
        return self._json(await self.http.get("/datasets", params={"limit": limit}))

    async def info(self) -> dict[str, Any]:
        return self._json(await self.http.get("/info"))

    async def set_alias(self, model: str, alias: str, version: int | str) -> dict[str, Any]:
        return self._json(await self.http.put(f"/models/{model}/aliases/{alias}", json={"version": version}))

    async def delete_version(self, model: str, version: int | str) -> None:
        self._json(await self.http.delete(f"/models/{model}/versions/{version}"))

    async def delete_job(self, job_id: str) -> None:
        self._json(await self.http.delete(f"/jobs/{job_id}"))

    async def delete_dataset(self, dataset_id: str) -> None:
        self._json(await self.http.delete(f"/datasets/{dataset_id}"))


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
        p = job.get("progress") or {}
        loss = f"{p['loss']:.4f}" if p.get("loss") is not None else "-"
        eta = f"{p['eta_s']:.0f}s" if p.get("eta_s") is not None else "-"
        if self.task is None:
            self.task = self.progress.add_task(
                f"{job['model']} {job['status']}", total=p.get("epochs"), loss=loss, eta=eta
            )
        self.progress.update(
            self.task, completed=p.get("epoch", 0), loss=loss, eta=eta, description=f"{job['model']} {job['status']}"
        )

    def close(self) -> None:
        self.progress.stop()
