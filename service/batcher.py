"""Dynamic micro-batching: concurrent requests share forward passes.

Requests arrive as pieces: sequences whose lengths fall in one bucket (the engine picks the
buckets). Pieces with the same key (model version, operation, length bucket) are concatenated, up
to `max_batch` sequences and `max_steps` steps (sequences x the batch's longest length, which
bounds the activations' memory), and run as one batch on the single inference thread; every
waiting request gets its rows back. When every row has the same length the batch is the rows
concatenated, unpadded, and costs about what one of its sequences would; otherwise rows are
right-padded to the batch's longest and the batch function gets their lengths too. While a batch
runs, the next one fills; `max_wait_s` bounds how long a lone request waits for company. Keys
that `merge_group` maps alike (the engine's short length buckets) also share a pass while it stays
within `small_pass` steps, padding included: a pass has a fixed cost that a few short rows do not
pay for.

The queue is bounded: past `max_queue` waiting requests, `submit` raises Overloaded at once
instead of letting latency grow without limit. Each answered request records how long it waited
and how long its batch ran (service/timing.py).
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

from service.timing import record
from training.errors import Overloaded

# Sequences as they come in: one (n, T, D) array when all have the same length, else a list of
# (T_i, D) arrays.
Sequences = np.ndarray | list[np.ndarray]
# Runs one batch on the inference thread: (key, payload of the first request, x (B, T, D), lengths
# (B,) of right-padded rows, or None when every row is T steps long) -> (B, ...).
BatchFn = Callable[[Hashable, Any, np.ndarray, np.ndarray | None], np.ndarray]


def longest(x: Sequences) -> int:
    """Steps of the longest sequence."""
    return x.shape[1] if isinstance(x, np.ndarray) else max(len(seq) for seq in x)


def stack(parts: list[Sequences]) -> tuple[np.ndarray, np.ndarray | None]:
    """One forward pass's input from the parts' rows, in order: (B, T, D), and lengths (B,) when
    rows had to be right-padded (with zeros) to the longest, T; None when none was."""
    if all(isinstance(part, np.ndarray) for part in parts) and len({part.shape[1] for part in parts}) == 1:
        return (parts[0] if len(parts) == 1 else np.concatenate(parts)), None
    rows = [row for part in parts for row in part]  # (T_i, D) each
    lengths = np.array([len(row) for row in rows])  # (B,)
    if (lengths == lengths[0]).all():
        return np.stack(rows), None
    padded = np.zeros((len(rows), int(lengths.max()), rows[0].shape[1]), dtype=rows[0].dtype)  # (B, T, D)
    for i, row in enumerate(rows):
        padded[i, : len(row)] = row
    return padded, lengths


@dataclass
class _Pending:
    key: Hashable
    payload: Any  # whatever the batch function needs beyond the arrays (the model version)
    x: Sequences  # n sequences
    future: asyncio.Future[np.ndarray]
    enqueued: float = field(default_factory=time.perf_counter)
    # When its batch started and finished on the inference thread (perf_counter).
    started: float = 0.0
    finished: float = 0.0
    steps: int = field(init=False)  # its longest sequence's

    def __post_init__(self) -> None:
        self.steps = longest(self.x)


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
        merge_group: Callable[[Hashable], Hashable] | None = None,
        small_pass: int = 0,
    ) -> None:
        self.run_batch, self.executor, self.on_batch = run_batch, executor, on_batch
        self.max_batch, self.max_wait_s, self.max_queue = max_batch, max_wait_s, max_queue
        self.max_steps = max_steps
        self.merge_group, self.small_pass = merge_group, small_pass
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

    async def submit(self, key: Hashable, payload: Any, x: Sequences) -> np.ndarray:
        """Rows of the batch function's output for the sequences `x`, once their batch has run.

        `x` must fit one batch: at most `capacity(T)` sequences, T its longest (the engine splits
        larger ones). The wait and the batch's run are recorded for the calling request."""
        if len(self._queue) >= self.max_queue:
            raise Overloaded(f"{len(self._queue)} requests are already waiting; retry shortly")
        pending = _Pending(key, payload, x, asyncio.get_running_loop().create_future())
        self._queue.append(pending)
        self._wake.set()
        out = await pending.future
        record(pending.started - pending.enqueued, pending.finished - pending.started)
        return out

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
            await self._wait_for_company()
            batch = self._take_batch()
            try:
                out = await loop.run_in_executor(self.executor, self._run, batch)
            except Exception as exc:  # noqa: BLE001 - every waiting request gets the error
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(exc)
                continue
            self._batches += 1
            self._sequences += len(out)
            if self.on_batch is not None:
                self.on_batch(len(out))
            start = 0
            for pending in batch:
                if not pending.future.done():  # the client may have gone away
                    pending.future.set_result(out[start : start + len(pending.x)])
                start += len(pending.x)

    def _run(self, batch: list[_Pending]) -> np.ndarray:
        """On the inference thread: stack the batch (padding, if it must, here and not on the event
        loop) and run it, noting when for each request."""
        started = time.perf_counter()
        x, lengths = stack([pending.x for pending in batch])
        out = self.run_batch(batch[0].key, batch[0].payload, x, lengths)
        finished = time.perf_counter()
        for pending in batch:
            pending.started, pending.finished = started, finished
        return out

    async def _wait_for_company(self) -> None:
        """Give the oldest request until max_wait_s after it arrived for others to join it."""
        oldest = self._queue[0]
        while self._waiting_sequences(oldest.key) < self.capacity(oldest.steps):
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
        """The oldest request and every later one with its key that fits: at most capacity(T)
        sequences, T the longest among them, since rows are padded to it. Then requests whose key
        is in the oldest one's merge group join it, as long as the pass stays within `small_pass`
        steps (sequences x its longest)."""
        first = self._queue.popleft()
        batch, size, steps = [first], len(first.x), first.steps

        def take(joins: Callable[[_Pending], bool]) -> None:
            nonlocal size, steps
            keep: deque[_Pending] = deque()
            while self._queue:
                pending = self._queue.popleft()
                padded_to = max(steps, pending.steps)
                if joins(pending) and size + len(pending.x) <= self.capacity(padded_to):
                    batch.append(pending)
                    size, steps = size + len(pending.x), padded_to
                else:
                    keep.append(pending)
            self._queue.extendleft(reversed(keep))

        take(lambda pending: pending.key == first.key)
        merge = self.merge_group
        if merge is not None and size * steps < self.small_pass:
            group = merge(first.key)

            def small(pending: _Pending) -> bool:  # the pass stays small with it, padding included
                return (size + len(pending.x)) * max(steps, pending.steps) <= self.small_pass

            take(lambda pending: merge(pending.key) == group and small(pending))
        return batch
