"""Dynamic micro-batching: concurrent requests share forward passes.

Requests arrive as groups of equal-length sequences. Groups with the same key (model version,
operation, sequence length) are concatenated, up to `max_batch` sequences and `max_steps` steps
(sequences x length, which bounds the activations' memory), and run as one batch
on the single inference thread; every waiting request gets its rows back. Equal lengths need no
padding and no packing, so a batch costs about what one of its sequences would. While a batch
runs, the next one fills; `max_wait_s` bounds how long a lone request waits for company.

The queue is bounded: past `max_queue` waiting requests, `submit` raises Overloaded at once
instead of letting latency grow without limit.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from training.errors import Overloaded

# Runs one batch on the inference thread: (key, payload of the first request, (B, T, D)) -> (B, ...).
BatchFn = Callable[[Hashable, Any, np.ndarray], np.ndarray]


@dataclass
class _Pending:
    key: Hashable
    payload: Any  # whatever the batch function needs beyond the arrays (the model version)
    x: np.ndarray  # (n, T, D)
    future: asyncio.Future[np.ndarray]
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class BatchStats:
    batches: int
    sequences: int

    @property
    def mean_batch(self) -> float:
        return self.sequences / max(self.batches, 1)


class MicroBatcher:
    def __init__(
        self,
        run_batch: BatchFn,
        executor: Executor,
        max_batch: int = 256,
        max_wait_s: float = 0.002,
        max_queue: int = 512,
        on_batch: Callable[[int], None] | None = None,
        max_steps: int = 1 << 62,
    ) -> None:
        self.run_batch, self.executor, self.on_batch = run_batch, executor, on_batch
        self.max_batch, self.max_wait_s, self.max_queue = max_batch, max_wait_s, max_queue
        self.max_steps = max_steps
        self._queue: deque[_Pending] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._batches = self._sequences = 0

    @property
    def depth(self) -> int:
        """Requests waiting for a batch."""
        return len(self._queue)

    def capacity(self, length: int) -> int:
        """Most sequences of `length` steps one batch may hold (at least one)."""
        return max(1, min(self.max_batch, self.max_steps // max(length, 1)))

    @property
    def stats(self) -> BatchStats:
        return BatchStats(self._batches, self._sequences)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while self._queue:
            self._queue.popleft().future.cancel()

    async def submit(self, key: Hashable, payload: Any, x: np.ndarray) -> np.ndarray:
        """Rows of the batch function's output for `x` (n, T, D), once its batch has run.

        `x` must fit one batch: at most `capacity(T)` sequences (the engine splits larger ones)."""
        if len(self._queue) >= self.max_queue:
            raise Overloaded(f"{len(self._queue)} requests are already waiting; retry shortly")
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(key, payload, x, future))
        self._wake.set()
        return await future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
            await self._wait_for_company()
            batch = self._take_batch()
            try:
                x = batch[0].x if len(batch) == 1 else np.concatenate([p.x for p in batch])
                out = await loop.run_in_executor(self.executor, self.run_batch, batch[0].key, batch[0].payload, x)
            except Exception as exc:  # noqa: BLE001 - every waiting request gets the error
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(exc)
                continue
            self._batches += 1
            self._sequences += len(x)
            if self.on_batch is not None:
                self.on_batch(len(x))
            start = 0
            for pending in batch:
                if not pending.future.done():  # the client may have gone away
                    pending.future.set_result(out[start : start + len(pending.x)])
                start += len(pending.x)

    async def _wait_for_company(self) -> None:
        """Give the oldest request until max_wait_s after it arrived for others to join it."""
        oldest = self._queue[0]
        while self._waiting_sequences(oldest.key) < self.capacity(oldest.x.shape[1]):
            left = oldest.enqueued + self.max_wait_s - time.perf_counter()
            if left <= 0:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), left)
            except TimeoutError:
                return

    def _waiting_sequences(self, key: Hashable) -> int:
        return sum(len(p.x) for p in self._queue if p.key == key)

    def _take_batch(self) -> list[_Pending]:
        """The oldest request and every later one with its key, up to capacity(T) sequences."""
        first = self._queue.popleft()
        batch, size, keep = [first], len(first.x), deque()
        capacity = self.capacity(first.x.shape[1])
        while self._queue:
            pending = self._queue.popleft()
            if pending.key == first.key and size + len(pending.x) <= capacity:
                batch.append(pending)
                size += len(pending.x)
            else:
                keep.append(pending)
        self._queue.extendleft(reversed(keep))
        return batch
