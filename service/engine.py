"""The inference engine: resolves versions, keeps recent ones loaded, batches forward passes.

It knows nothing about HTTP. All torch work runs on one dedicated thread, fed by the micro-batcher,
so the event loop never blocks on a forward pass and models are only ever touched from one thread.
Models and their inputs live on one device (`device`: auto, cpu or cuda); answers come back as
CPU arrays.

A request's sequences are grouped by length bucket (`length_bucket`), so that concurrent requests
of similar, not only equal, lengths share forward passes: a batch of mixed lengths is right-padded
to its longest and run with the lengths, which every encoder masks or packs away, so each answer is
what its sequence alone would get. A model whose padding would change its answers (checked before
its first such batch) runs them as one pass per exact length instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from sqlalchemy import text

from jepa_model import JEPA, CheckpointError, ModelConfig, load_checkpoint
from jepa_model.devices import resolve_device
from jepa_model.jepa import EncoderName
from jepa_model.memory import MemoryScorer
from jepa_model.serving import (
    Forward,
    RaggedForward,
    eager_forwards,
    eager_ragged_forwards,
    pads_exactly,
    traced_forwards,
    traced_ragged_forwards,
)
from jepa_model.surprise import ForecastPlan, surprise
from jepa_model.vectors import row_cosines, unit_rows
from service.batcher import BatchLimits, MicroBatcher, Sequences, Ticket, longest
from training.errors import DomainError, InvalidInput, ModelUnavailable
from training.store.artifacts import ArtifactStore
from training.store.db import SessionFactory
from training.store.registry import VersionRef, get_version

if TYPE_CHECKING:
    from service.settings import Settings

log = logging.getLogger("jepa.engine")

# oneDNN keeps a compiled primitive per input shape (1,024 by default, an LSTM's up to a few hundred
# KB each), and serving meets as many shapes as (batch size, length) pairs: under varied traffic
# that cache alone grew a process by about 250 MB before levelling off. 256 entries level off near
# 75 MB and still hold every shape of steady traffic (64 shapes in rotation ran no slower). Read
# when torch builds its first primitive, which is after this; the environment's value wins.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "256")

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
    # The windows it was trained on, and its surprise calibration (None for versions trained
    # before calibrations were recorded): what POST /score defaults to and ranks against.
    context_len: int
    target_len: int
    calibration: tuple[float, ...] | None
    # The width of its per-step representations (/encode per_step): step models' step_dim, else R.
    step_dim: int

    @property
    def label(self) -> str:
        return f"model {self.model!r} v{self.number}"


@dataclass
class Forwards:
    """A loaded version's forward passes, by operation."""

    full: dict[str, Forward]  # for batches whose rows all have the same length
    build_ragged: Callable[[], dict[str, RaggedForward] | None]
    model: JEPA  # eager, for what is not traced (per-step representations)

    @cached_property
    def ragged(self) -> dict[str, RaggedForward] | None:
        """For right-padded batches; None where padding would change answers. Built on the first
        batch of mixed lengths: it doubles the tracing, which a version that never sees one skips."""
        return self.build_ragged()


# Sequences shorter than this share one bucket. A forward pass costs about a millisecond before any
# row's steps (the series conv model: 16 oneDNN convolutions and the pooling's ops, each with a
# fixed cost; about 150 steps of one row), so below it a separate pass per half-octave costs more
# than padding to 63 steps does. In process, 32 sequences of 1-127 steps ran in 33 ms with this
# bucket against 51 ms in half-octaves only, and 256 of them in 247 ms against 213 (once each). In
# bench.serve's mixed traffic the series model kept a median 0.735 of its equal-length throughput
# against 0.61 without it (8 and 4 runs). A shared bucket up to 128 steps read 0.80, but cost 1.6x
# on a pass of 256 sequences of 1-127 steps.
SHORT_BUCKET_LEN = 64

# A memory score's slices hold JEPA_MICRO_BATCH_STEPS / this many steps: see score_memory.
MEMORY_SLICE_DIVISOR = 4


# Lengths under this many steps (the short bucket and the two half-octaves above it) share a pass
# while it stays within SMALL_PASS_STEPS steps (sequences x the longest, about 8 of 127 steps):
# padding a few short rows costs less than another pass, about a millisecond before any step is
# computed. Padding many would cost more (256 sequences of 1-127 steps all padded to 127 cost 1.6x
# what their own buckets did), so larger passes keep to their buckets.
MERGED_BELOW_LEN, SMALL_PASS_STEPS = 128, 1024


def merge_group(key: Hashable) -> Hashable:
    """The batcher's merge group of a (version, operation, length bucket) key: one for the short
    buckets of a version and operation, and each longer bucket its own."""
    version, operation, bucket = key  # type: ignore[misc]
    return (version, operation, "short") if bucket < length_bucket(MERGED_BELOW_LEN) else key


def length_bucket(length: int) -> int:
    """Which bucket a sequence of `length` steps is batched in: k for 2^(k/2) <= length < 2^((k+1)/2),
    and one bucket for every length under SHORT_BUCKET_LEN.

    Half-octave buckets: within one, the longest length is under sqrt(2) times the shortest, so a
    batch padded to its longest does under 1.41x the steps its sequences need, and about 1.17x for
    lengths spread evenly over a bucket. Octaves (powers of two) would share more passes but waste
    up to 2x, 1.33x on average; narrower buckets would waste less but split mixed traffic back into
    the small batches that bucketing is for avoiding.
    """
    return (max(length, SHORT_BUCKET_LEN - 1) ** 2).bit_length() - 1


def steps_of(sequences: Sequences) -> int:
    """Steps in all the sequences: what a request costs the inference thread, about."""
    return int(np.prod(sequences.shape[:2])) if isinstance(sequences, np.ndarray) else sum(map(len, sequences))


def _as_piece(rows: list[np.ndarray]) -> Sequences:
    """(T_i, D) rows as the batcher takes them: one (n, T, D) array when they share a length."""
    return np.stack(rows) if len({len(row) for row in rows}) == 1 else rows


def pieces(sequences: Sequences, capacity: Callable[[int], int]) -> list[tuple[np.ndarray, Sequences]]:
    """(indices, sequences) for each forward pass-sized piece of a request, each piece within one
    length bucket and at most capacity(its longest) sequences, in order of first appearance.

    Within a bucket the longest come first, so each piece pads to as little as it can."""
    if isinstance(sequences, np.ndarray):  # the common case: equal lengths, nothing to group or pad
        step = capacity(sequences.shape[1])
        return [
            (np.arange(start, min(start + step, len(sequences))), sequences[start : start + step])
            for start in range(0, len(sequences), step)
        ]
    by_bucket: dict[int, list[int]] = {}
    for i, seq in enumerate(sequences):
        by_bucket.setdefault(length_bucket(len(seq)), []).append(i)
    out = []
    for bucket in by_bucket.values():
        bucket.sort(key=lambda i: -len(sequences[i]))
        start = 0
        while start < len(bucket):
            indices = bucket[start : start + capacity(len(sequences[bucket[start]]))]
            out.append((np.array(indices), _as_piece([sequences[i] for i in indices])))
            start += len(indices)
    return out


class InferenceEngine:
    """Resolves versions, keeps recent ones loaded, and batches concurrent requests' forward passes.

    `start()` must run inside the event loop that will call the async methods.
    """

    def __init__(
        self,
        factory: SessionFactory,
        store: ArtifactStore,
        *,
        batching: BatchLimits,
        cache_size: int,
        threads: int,
        resolve_ttl_s: float,
        device: str,
        trace: bool = True,
        on_batch: Callable[[int], None] | None = None,
        on_load: Callable[[float], None] | None = None,
    ) -> None:
        """Its limits are the service's settings, with no defaults of their own: `from_settings`
        builds it. on_batch gets each forward pass's size, on_load each checkpoint's load time
        (seconds). `device` is "auto" (CUDA when torch sees it), "cpu" or "cuda"; ValueError for an
        unusable one."""
        self.factory = factory
        self.store = store
        self.cache_size = max(cache_size, 1)
        self.resolve_ttl_s = resolve_ttl_s
        self.trace = trace
        self.device = resolve_device(device)
        # version id -> its forward passes; touched only on the inference thread
        self._models: OrderedDict[int, Forwards] = OrderedDict()
        self._resolved: dict[tuple[str, VersionRef, str | None], tuple[float, ServedVersion]] = {}
        self._refreshing: dict[tuple[str, VersionRef, str | None], asyncio.Future[ServedVersion]] = {}
        # Torch's intra-op pool is per process: one inference thread using `threads` of them.
        torch.set_num_threads(threads)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self.batcher = MicroBatcher(
            self._run_batch,
            self._executor,
            batching,
            on_batch,
            merge_group=merge_group,
            small_pass=SMALL_PASS_STEPS,
        )
        self.on_load = on_load

    @classmethod
    def from_settings(
        cls, factory: SessionFactory, store: ArtifactStore, settings: Settings, **overrides: Any
    ) -> InferenceEngine:
        """The engine as `jepa serve` builds it from `settings`; `overrides` replace single
        arguments (a bench's thread count, the app's metrics hooks)."""
        options: dict[str, Any] = {
            "batching": BatchLimits.from_settings(settings),
            "cache_size": settings.model_cache_size,
            "threads": settings.inference_threads,
            "device": settings.device,
            "resolve_ttl_s": settings.resolve_ttl_s,
        }
        return cls(factory, store, **{**options, **overrides})

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
            calibration = (row.metrics or {}).get("surprise_percentiles")
            served = ServedVersion(
                model=row.model.name,
                number=row.number,
                version_id=row.id,
                sha256=row.sha256,
                path=row.path,
                input_dim=int(row.config["model"]["input_dim"]),
                repr_dim=int(row.config["model"]["repr_dim"]),
                context_len=int(row.config["train"]["context_len"]),
                target_len=int(row.config["train"]["target_len"]),
                calibration=tuple(calibration) if calibration else None,
                step_dim=ModelConfig.from_dict(row.config["model"]).per_step_dim,
            )
        if len(self._resolved) > 4096:  # names come from requests; keep the cache bounded
            self._resolved.clear()
        self._resolved[(model, version, default_alias)] = (time.monotonic() + self.resolve_ttl_s, served)
        return served

    # -- the inference thread -------------------------------------------------------------------

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def load(self, served: ServedVersion) -> Forwards:
        """The version's forward passes, loading (and tracing) its checkpoint on first use."""
        forwards = self._models.get(served.version_id)
        if forwards is not None:
            self._models.move_to_end(served.version_id)
            return forwards
        started = time.perf_counter()
        with self.factory() as session:
            directory = self.store.fetch(session, served.path)  # a database store's artifacts come over here
        try:
            model = load_checkpoint(directory, expected_sha256=served.sha256).model
        except CheckpointError as exc:
            log.warning("%s at %s is unavailable: %s", served.label, directory, exc)
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

    def _compile(self, model: JEPA, served: ServedVersion) -> Forwards:
        model = model.to(self.device).eval()
        full = self._traced(traced_forwards, model, served) or eager_forwards(model)
        return Forwards(full, lambda: self._compile_ragged(model, served), model)

    def _compile_ragged(self, model: JEPA, served: ServedVersion) -> dict[str, RaggedForward] | None:
        try:
            exact = pads_exactly(model)
        except Exception as exc:  # noqa: BLE001 - e.g. an encoder that builds a mask off the device
            log.warning("%s fails on padded batches (%s)", served.label, exc)
            exact = False
        if not exact:
            log.warning("%s runs mixed lengths one pass per length: padded, its answers would differ", served.label)
            return None
        return self._traced(traced_ragged_forwards, model, served) or eager_ragged_forwards(model)

    def _traced(self, trace: Callable[[JEPA], dict[str, T]], model: JEPA, served: ServedVersion) -> dict[str, T] | None:
        """`trace(model)`, or None (serve eagerly) when tracing is off or fails."""
        if not self.trace:
            return None
        try:
            return trace(model)
        except Exception as exc:  # noqa: BLE001 - serve correctly, if slower, whatever the tracer does
            log.warning("%s is served eagerly: tracing failed (%s)", served.label, exc)
            return None

    @torch.inference_mode()
    def _run_batch(self, key: Hashable, served: ServedVersion, x: np.ndarray, lengths: np.ndarray | None) -> np.ndarray:
        # x: (B, T, D), right-padded where lengths (B,) is given -> (B, R)
        _, operation, _ = key  # type: ignore[misc]
        forwards = self.load(served)
        inputs = torch.from_numpy(x).to(self.device)
        if lengths is None:
            out = forwards.full[operation](inputs)
        elif forwards.ragged is not None:
            out = forwards.ragged[operation](inputs, torch.from_numpy(lengths).to(self.device))
        else:
            out = _by_exact_length(forwards.full[operation], inputs, lengths, served.repr_dim)
        return out.cpu().numpy()

    async def _batched(
        self, served: ServedVersion, operation: str, sequences: Sequences, ticket: Ticket | None = None
    ) -> np.ndarray:
        """Run `operation` ("target", "context" or "predict") on every sequence, batched with others.

        Each length bucket is cut into pieces that fit one forward pass, so a large request costs
        several bounded passes, taking turns with other requests, instead of one pass whose
        activations, and whose hold on the thread, grow with the request.
        """
        if ticket is None:
            with self.batcher.admitted() as own:
                return await self._batched(served, operation, sequences, own)
        parts = pieces(sequences, self.batcher.capacity)
        submits = [
            self.batcher.submit((served.version_id, operation, length_bucket(longest(x))), served, x, ticket)
            for _, x in parts
        ]
        results = await asyncio.gather(*submits)
        if len(parts) == 1 and isinstance(sequences, np.ndarray):
            return results[0]  # its rows in order: nothing to scatter
        out = np.empty((len(sequences), served.repr_dim), dtype=np.float32)
        for (indices, _), rows in zip(parts, results, strict=True):
            out[indices] = rows
        return out

    # -- operations -------------------------------------------------------------------------------

    async def encode(
        self, served: ServedVersion, sequences: Sequences, encoder: EncoderName, normalize: bool
    ) -> np.ndarray:
        z = await self._batched(served, encoder, sequences)  # (N, R)
        return unit_rows(z) if normalize else z

    async def predict(
        self, served: ServedVersion, contexts: Sequences, targets: Sequences | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if targets is not None and len(targets) != len(contexts):
            raise InvalidInput(f"got {len(contexts)} contexts but {len(targets)} targets; they pair up one to one")
        if targets is None:
            return await self._batched(served, "predict", contexts), None
        with self.batcher.admitted() as ticket:
            predicted, actual = await asyncio.gather(
                self._batched(served, "predict", contexts, ticket), self._batched(served, "target", targets, ticket)
            )
        return predicted, row_cosines(predicted, actual)

    async def similarity(self, served: ServedVersion, a: Sequences, b: Sequences, encoder: EncoderName) -> np.ndarray:
        with self.batcher.admitted() as ticket:
            za, zb = await asyncio.gather(
                self._batched(served, encoder, a, ticket), self._batched(served, encoder, b, ticket)
            )
        return unit_rows(za) @ unit_rows(zb).T  # (A, B)

    async def encode_steps(
        self, served: ServedVersion, sequences: Sequences, encoder: EncoderName, normalize: bool, max_numbers: int
    ) -> list[np.ndarray]:
        """Per-step representations (T_i, S) of each sequence (JEPA.encode_steps), on the inference
        thread. InvalidInput when the answer would hold more than `max_numbers` numbers, or the
        version's encoder has none."""
        numbers = sum(len(x) for x in sequences) * served.step_dim
        if numbers > max_numbers:
            raise InvalidInput(
                f"per_step would answer {numbers} numbers (steps x {served.step_dim}); at most {max_numbers} "
                "(JEPA_MAX_REQUEST_POINTS): send fewer or shorter sequences"
            )

        @torch.inference_mode()
        def run(x: np.ndarray) -> np.ndarray:
            z = self.load(served).model.encode_steps(torch.from_numpy(np.asarray(x))[None].to(self.device), encoder)[0]
            return unit_rows(z.cpu().numpy()) if normalize else z.cpu().numpy()

        with self.batcher.admitted() as ticket:
            try:  # a sequence at a time, each a turn on the inference thread
                return [await self.batcher.call(partial(run, x), len(x), ticket) for x in sequences]
            except ValueError as exc:  # an encoder without per-step representations
                raise InvalidInput(f"{served.label}: {exc}") from exc

    async def anomalies(
        self,
        served: ServedVersion,
        series: Sequences,
        method: str,
        context_len: int | None,
        target_len: int | None,
        stride: int,
        max_points: int,
    ) -> Scored:
        """POST /score: each series' step scores by `method`, "memory" (the version's anomaly
        memory, jepa_model.memory), "forecast" (`score`) or "auto" (memory where the version has
        one). Windows not given are the version's. InvalidInput for "memory" on a version without
        one, or for series past `max_points`."""
        if method != "forecast":
            remembered = await self.score_memory(served, series, max_points)
            if remembered is not None:
                return remembered
            if method == "memory":
                raise InvalidInput(
                    f"{served.label} has no anomaly memory (a window model, a version trained before memories, or "
                    "too little training data): use method=forecast"
                )
        context_len, target_len = context_len or served.context_len, target_len or served.target_len
        scores = await self.score(served, series, context_len, target_len, stride, max_points)
        calibration = list(served.calibration) if served.calibration else None
        return Scored("forecast", scores, calibration, None, context_len, target_len, stride)

    async def score_memory(self, served: ServedVersion, series: Sequences, max_points: int) -> Scored | None:
        """Each series' step scores (T_i,) from the version's anomaly memory; None for a version
        without one. InvalidInput when the series hold more than `max_points` numbers: the cost
        grows with every step."""
        model = (await self.run(self.load, served)).model
        memory = model.memory
        if memory is None or not memory.built:
            return None
        points = steps_of(series) * served.input_dim
        if points > max_points:
            raise InvalidInput(
                f"these series hold {points} numbers in all; at most {max_points} (JEPA_MAX_SCORE_POINTS): "
                "send fewer or shorter series"
            )
        # Each step is also compared with every remembered step and window: a slice of a quarter
        # of a pass's steps takes about as long as a pass (2,048 steps, 70-90 ms on the series
        # preset), and other requests take their turns between slices.
        slice_steps = max(1, self.batcher.max_steps // MEMORY_SLICE_DIVISOR)
        scores = []
        with self.batcher.admitted() as ticket:
            for x in series:
                scorer = MemoryScorer(model.target_encoder, memory, np.asarray(x), slice_steps)
                for start, end in scorer.slices:
                    await self.batcher.call(partial(scorer.run, start, end), end - start, ticket)
                scores.append(scorer.scores())
        return Scored("memory", scores, [float(v) for v in memory.calibration], int(memory.window))

    async def score(
        self, served: ServedVersion, series: Sequences, context_len: int, target_len: int, stride: int, max_points: int
    ) -> list[np.ndarray]:
        """Each series' step scores (T_i,): its windows' surprise (jepa_model.surprise), NaN for the
        warm-up. InvalidInput when a series is shorter than one window, or the windows would hold
        more than `max_points` numbers."""
        plan = ForecastPlan.of([len(x) for x in series], context_len, target_len, stride)
        if short := [i for i, s in enumerate(plan.starts) if len(s) == 0]:
            raise InvalidInput(
                f"series[{short[0]}] has {len(series[short[0]])} steps; scoring needs at least context_len + "
                f"target_len = {context_len + target_len}"
            )
        points = plan.count * (context_len + target_len) * served.input_dim
        if points > max_points:
            raise InvalidInput(
                f"these series make windows of {points} numbers in all; at most {max_points} (JEPA_MAX_SCORE_POINTS): "
                "use a larger stride, or send fewer or shorter series"
            )
        contexts, targets = plan.windows(list(series))  # (W, C, D), (W, L, D)
        with self.batcher.admitted() as ticket:
            predicted, actual = await asyncio.gather(
                self._batched(served, "predict", contexts, ticket), self._batched(served, "target", targets, ticket)
            )
        return plan.step_scores(surprise(predicted, actual))


@dataclass(frozen=True)
class Scored:
    """Series' step scores (T_i,) each, by the method that made them, with what ranks them (None for
    a version without a calibration) and the method's settings (None where another method's)."""

    method: str  # "memory" or "forecast"
    scores: list[np.ndarray]
    calibration: list[float] | None
    window: int | None = None  # memory
    context_len: int | None = None  # forecast
    target_len: int | None = None
    stride: int | None = None


def _by_exact_length(forward: Forward, x: torch.Tensor, lengths: np.ndarray, repr_dim: int) -> torch.Tensor:
    """A padded batch (B, T, D) run as one unpadded pass per distinct length -> (B, R)."""
    out = x.new_empty((len(x), repr_dim))
    for n in np.unique(lengths):
        rows = torch.from_numpy(np.flatnonzero(lengths == n)).to(x.device)
        out[rows] = forward(x[rows, : int(n)])
    return out
