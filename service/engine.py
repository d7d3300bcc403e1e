"""The inference engine: resolves versions, keeps recent ones loaded, batches forward passes.

It knows nothing about HTTP. All torch work runs on one dedicated thread, fed by the micro-batcher,
so the event loop never blocks on a forward pass and models are only ever touched from one thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from sqlalchemy import text

from jepa_model import JEPA, CheckpointError, load_checkpoint
from jepa_model.jepa import EncoderName
from jepa_model.serving import Forward, eager_forwards, traced_forwards
from service.batcher import MicroBatcher
from training.db import SessionFactory
from training.errors import DomainError, InvalidInput, ModelUnavailable
from training.registry import VersionRef, get_version

log = logging.getLogger("jepa.engine")

T = TypeVar("T")


@dataclass(frozen=True)
class ServedVersion:
    """A registry version, detached from its database session."""

    model: str
    number: int
    version_id: int
    sha256: str
    path: str
    input_dim: int
    repr_dim: int

    @property
    def label(self) -> str:
        return f"model {self.model!r} v{self.number}"


# Sequences as the payload decoder hands them over: one (N, T, D) array when every sequence has
# the same length, else a list of (T_i, D) arrays.
Sequences = np.ndarray | list[np.ndarray]


def length_groups(sequences: Sequences) -> list[tuple[np.ndarray, np.ndarray]]:
    """(indices, (n, T, D) array) for each distinct length, so no batch ever needs padding."""
    if isinstance(sequences, np.ndarray):
        return [(np.arange(len(sequences)), sequences)]
    by_length: dict[int, list[int]] = {}
    for i, seq in enumerate(sequences):
        by_length.setdefault(len(seq), []).append(i)
    return [(np.array(idx), np.stack([sequences[i] for i in idx])) for idx in by_length.values()]


class InferenceEngine:
    """Resolves versions, keeps recent ones loaded, and batches concurrent requests' forward passes.

    `start()` must run inside the event loop that will call the async methods.
    """

    def __init__(
        self,
        factory: SessionFactory,
        data_dir: Path,
        cache_size: int = 8,
        threads: int = 1,
        max_batch: int = 256,
        max_batch_steps: int = 65_536,
        max_wait_s: float = 0.002,
        max_queue: int = 512,
        resolve_ttl_s: float = 1.0,
        trace: bool = True,
        on_batch: Callable[[int], None] | None = None,
        on_load: Callable[[float], None] | None = None,
    ) -> None:
        """on_batch gets each forward pass's size, on_load each checkpoint's load time (seconds)."""
        self.factory = factory
        self.data_dir = data_dir
        self.cache_size = max(cache_size, 1)
        self.resolve_ttl_s = resolve_ttl_s
        self.trace = trace
        # version id -> its forward passes; touched only on the inference thread
        self._models: OrderedDict[int, dict[str, Forward]] = OrderedDict()
        self._resolved: dict[tuple[str, VersionRef, str | None], tuple[float, ServedVersion]] = {}
        self._refreshing: dict[tuple[str, VersionRef, str | None], asyncio.Future[ServedVersion]] = {}
        # Torch's intra-op pool is per process: one inference thread using `threads` of them.
        torch.set_num_threads(threads)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self.batcher = MicroBatcher(
            self._run_batch, self._executor, max_batch, max_wait_s, max_queue, on_batch, max_steps=max_batch_steps
        )
        self.on_load = on_load

    def start(self) -> None:
        self.batcher.start()

    async def aclose(self) -> None:
        await self.batcher.stop()
        self._executor.shutdown(wait=True, cancel_futures=True)

    # -- registry -----------------------------------------------------------------------------

    async def resolve_async(self, model: str, version: VersionRef, default_alias: str | None) -> ServedVersion:
        """`resolve`, without a database query on the hot path.

        A fresh cached answer is used as is. One expired within the last TTL is still used while
        one background query refreshes it (so a burst of requests never stampedes the database);
        an older one waits for that query, so a request after a quiet spell never gets an answer
        from before an alias change. Requests that arrive during a wait share its query.
        """
        key = (model, version, default_alias)
        hit = self._resolved.get(key)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        refresh = self._refreshing.get(key)
        if refresh is None:
            refresh = asyncio.ensure_future(asyncio.to_thread(self.resolve, model, version, default_alias))
            self._refreshing[key] = refresh
            refresh.add_done_callback(lambda done: self._refresh_done(key, done))
        # Under steady traffic an answer expired less than a TTL ago is still served while it is
        # refreshed. An older one may predate an alias change by any time: wait for the refresh,
        # and fall back to it only if the database cannot answer.
        if hit is not None and now - hit[0] < self.resolve_ttl_s:
            return hit[1]
        try:
            return await asyncio.shield(refresh)
        except DomainError:
            raise
        except Exception:  # noqa: BLE001 - the registry is unreachable: serve what it last said
            if hit is None:
                raise
            return hit[1]

    def _refresh_done(self, key: tuple[str, VersionRef, str | None], done: asyncio.Future[ServedVersion]) -> None:
        self._refreshing.pop(key, None)
        error = None if done.cancelled() else done.exception()
        if isinstance(error, DomainError):
            self._resolved.pop(key, None)  # e.g. the alias was deleted: the next request gets the 404
        elif error is not None:
            # The registry is unreachable: keep serving what it last said, and ask again next time.
            log.warning("registry lookup for %s failed (%s); serving the last answer", key[0], type(error).__name__)

    def check_registry(self) -> None:
        """Raise if the database does not answer (for /ready)."""
        with self.factory() as session:
            session.execute(text("SELECT 1"))

    def resolve(self, model: str, version: VersionRef, default_alias: str | None) -> ServedVersion:
        """The version a request names. Cached for resolve_ttl_s: a promoted alias is served by
        every replica within that time, without a database query per request."""
        with self.factory() as session:
            row = get_version(session, model, version, default_alias)
            served = ServedVersion(
                model=row.model.name,
                number=row.number,
                version_id=row.id,
                sha256=row.sha256,
                path=row.path,
                input_dim=int(row.config["model"]["input_dim"]),
                repr_dim=int(row.config["model"]["repr_dim"]),
            )
        if len(self._resolved) > 4096:  # names come from requests; keep the cache bounded
            self._resolved.clear()
        self._resolved[(model, version, default_alias)] = (time.monotonic() + self.resolve_ttl_s, served)
        return served

    # -- the inference thread -------------------------------------------------------------------

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def load(self, served: ServedVersion) -> dict[str, Forward]:
        """The version's forward passes, loading (and tracing) its checkpoint on first use."""
        forwards = self._models.get(served.version_id)
        if forwards is not None:
            self._models.move_to_end(served.version_id)
            return forwards
        started = time.perf_counter()
        try:
            model = load_checkpoint(self.data_dir / served.path, expected_sha256=served.sha256).model
        except CheckpointError as exc:
            log.warning("%s at %s is unavailable: %s", served.label, self.data_dir / served.path, exc)
            raise ModelUnavailable(f"{served.label} is unavailable: {exc}") from exc
        forwards = self._compile(model, served)
        self._models[served.version_id] = forwards
        while len(self._models) > self.cache_size:
            self._models.popitem(last=False)
        seconds = time.perf_counter() - started
        log.info("loaded %s in %.3fs", served.label, seconds)
        if self.on_load is not None:
            self.on_load(seconds)
        return forwards

    def _compile(self, model: JEPA, served: ServedVersion) -> dict[str, Forward]:
        if self.trace:
            try:
                return traced_forwards(model)
            except Exception as exc:  # noqa: BLE001 - serve correctly, if slower, whatever the tracer does
                log.warning("%s is served eagerly: tracing failed (%s)", served.label, exc)
        return eager_forwards(model.eval())

    @torch.inference_mode()
    def _run_batch(self, key: Hashable, served: ServedVersion, x: np.ndarray) -> np.ndarray:
        # x: (B, T, D) sequences of one length -> (B, R)
        _, operation, _ = key  # type: ignore[misc]
        return self.load(served)[operation](torch.from_numpy(x)).numpy()

    async def _batched(self, served: ServedVersion, operation: str, sequences: Sequences) -> np.ndarray:
        """Run `operation` ("target", "context" or "predict") on every sequence, batched with others.

        Each length group is cut into pieces that fit one forward pass, so a large request costs
        several bounded passes instead of one pass whose activations grow with the request.
        """
        pieces = [
            (indices[start : start + step], x[start : start + step])
            for indices, x in length_groups(sequences)
            for step in [self.batcher.capacity(x.shape[1])]
            for start in range(0, len(x), step)
        ]
        results = await asyncio.gather(
            *(self.batcher.submit((served.version_id, operation, x.shape[1]), served, x) for _, x in pieces)
        )
        if len(pieces) == 1:
            return results[0]
        out = np.empty((len(sequences), served.repr_dim), dtype=np.float32)
        for (indices, _), rows in zip(pieces, results, strict=True):
            out[indices] = rows
        return out

    # -- operations -------------------------------------------------------------------------------

    async def encode(
        self, served: ServedVersion, sequences: Sequences, encoder: EncoderName, normalize: bool
    ) -> np.ndarray:
        z = await self._batched(served, encoder, sequences)  # (N, R)
        return _unit(z) if normalize else z

    async def predict(
        self, served: ServedVersion, contexts: Sequences, targets: Sequences | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if targets is not None and len(targets) != len(contexts):
            raise InvalidInput(f"got {len(contexts)} contexts but {len(targets)} targets; they pair up one to one")
        if targets is None:
            return await self._batched(served, "predict", contexts), None
        predicted, actual = await asyncio.gather(
            self._batched(served, "predict", contexts), self._batched(served, "target", targets)
        )
        return predicted, np.einsum("nr,nr->n", _unit(predicted), _unit(actual))

    async def similarity(self, served: ServedVersion, a: Sequences, b: Sequences, encoder: EncoderName) -> np.ndarray:
        za, zb = await asyncio.gather(self._batched(served, encoder, a), self._batched(served, encoder, b))
        return _unit(za) @ _unit(zb).T  # (A, B)


def _unit(z: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (a zero row stays zero), as F.normalize does."""
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
