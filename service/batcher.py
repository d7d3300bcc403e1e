"""Dynamic micro-batching, with fair turns: concurrent requests share forward passes, and no
request's size makes another wait long.

Requests arrive as pieces: sequences whose lengths fall in one bucket (the engine picks the
buckets). Pieces with the same key (model version, operation, length bucket) are concatenated, up
to `max_batch` sequences and `max_steps` steps (sequences x the batch's longest length, which
bounds the activations' memory and how long one pass holds the thread), and run as one batch on
the single inference thread; every waiting request gets its rows back. When every row has the same
length the batch is the rows concatenated, unpadded, and costs about what one of its sequences
would; otherwise rows are right-padded to the batch's longest and the batch function gets their
lengths too. While a batch runs, the next one fills; `max_wait_s` bounds how long a lone request
waits for company. Keys that `merge_group` maps alike (the engine's short length buckets) also
share a pass while it stays within `small_pass` steps, padding included: a pass has a fixed cost
that a few short rows do not pay for. Work that is not a forward pass of the batch function (a
memory score's slice, per-step representations) is queued as a `call` and runs alone.

Each request holds a Ticket from admission until it is answered. The thread's next pass starts
with the ticket that has had the fewest steps run for it so far (then the older): a large request
runs as many bounded passes, and a small one that arrives meanwhile runs after the pass in
progress instead of after the whole large request. The queue is bounded by
requests, not pieces: past `max_queue` requests in progress, `admit` raises Overloaded at once,
before anything is queued, and a request that ends early (an error, a client gone) takes its
waiting pieces with it. Each answered piece records how long it waited and how long its batch ran
(service/timing.py).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from service.timing import record
from training.errors import Overloaded

if TYPE_CHECKING:
    from service.settings import Settings

# Sequences as they come in: one (n, T, D) array when all have the same length, else a list of
# (T_i, D) arrays.
Sequences = np.ndarray | list[np.ndarray]
# Runs one batch on the inference thread: (key, payload of the first request, x (B, T, D), lengths
# (B,) of right-padded rows, or None when every row is T steps long) -> (B, ...).
BatchFn = Callable[[Hashable, Any, np.ndarray, np.ndarray | None], np.ndarray]

_arrivals = itertools.count()


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


class Ticket:
    """One request's place in the queue: its pieces waiting, in order, and the steps run for it."""

    def __init__(self) -> None:
        self.arrival = next(_arrivals)
        self.served = 0  # steps run for it so far (a shared pass counts its own rows, padded)
        self.waiting: deque[_Pending] = deque()

    @property
    def turn(self) -> tuple[int, int]:
        """Lower goes first: the least served, then the older. Not the smaller: under steady load
        a long sequence would wait behind every shorter one that arrives after it (64 clients of
        10-500 steps each saw p99 grow from 0.4 s to 3.4 s)."""
        return self.served, self.arrival


@dataclass
class _Pending:
    ticket: Ticket
    key: Hashable
    payload: Any  # whatever the batch function needs beyond the arrays (the model version)
    x: Sequences | None  # n sequences; None for a call
    future: asyncio.Future[Any]
    call: Callable[[], Any] | None = None
    cost: int = 0  # a call's steps, as its caller estimated them
    enqueued: float = field(default_factory=time.perf_counter)
    # When its batch started and finished on the inference thread (perf_counter).
    started: float = 0.0
    finished: float = 0.0
    steps: int = field(init=False)  # its longest sequence's

    def __post_init__(self) -> None:
        self.steps = 0 if self.x is None else longest(self.x)

    @property
    def rows(self) -> int:
        return 0 if self.x is None else len(self.x)


@dataclass(frozen=True)
class BatchStats:
    batches: int
    sequences: int

    @property
    def mean_batch(self) -> float:
        return self.sequences / max(self.batches, 1)


@dataclass(frozen=True)
class BatchLimits:
    """How requests share forward passes. Their values are the service's settings (micro_batch,
    batch_wait_ms, max_queue, micro_batch_steps: service/settings.py explains each); `from_settings`
    is how the service builds them, so no second default exists here."""

    max_batch: int  # sequences per forward pass
    max_wait_s: float  # how long a lone request waits for company
    max_queue: int  # requests in progress before Overloaded
    max_steps: int  # sequences x the batch's longest length, per forward pass

    @classmethod
    def from_settings(cls, settings: Settings) -> BatchLimits:
        return cls(
            max_batch=settings.micro_batch,
            max_wait_s=settings.batch_wait_ms / 1000,
            max_queue=settings.max_queue,
            max_steps=settings.micro_batch_steps,
        )


class MicroBatcher:
    def __init__(
        self,
        run_batch: BatchFn,
        executor: Executor,
        limits: BatchLimits,
        on_batch: Callable[[int], None] | None = None,
        merge_group: Callable[[Hashable], Hashable] | None = None,
        small_pass: int = 0,
    ) -> None:
        self.run_batch, self.executor, self.on_batch = run_batch, executor, on_batch
        self.max_batch, self.max_wait_s = limits.max_batch, limits.max_wait_s
        self.max_queue, self.max_steps = limits.max_queue, limits.max_steps
        self.merge_group, self.small_pass = merge_group, small_pass
        self._tickets: dict[int, Ticket] = {}  # admitted and not yet answered, by arrival
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._batches = self._sequences = 0

    @property
    def depth(self) -> int:
        """Requests waiting for a batch."""
        return sum(1 for ticket in self._tickets.values() if ticket.waiting)

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
        for ticket in list(self._tickets.values()):
            self._release(ticket)

    @contextmanager
    def admitted(self) -> Iterator[Ticket]:
        """A ticket for one request, for its `submit`s and `call`s; on leaving, whatever it left
        queued is dropped. Overloaded when max_queue requests are in progress."""
        if len(self._tickets) >= self.max_queue:
            raise Overloaded(f"{len(self._tickets)} requests are already in progress; retry shortly")
        ticket = Ticket()
        self._tickets[ticket.arrival] = ticket
        try:
            yield ticket
        finally:
            self._release(ticket)

    def _release(self, ticket: Ticket) -> None:
        self._tickets.pop(ticket.arrival, None)
        while ticket.waiting:
            ticket.waiting.popleft().future.cancel()

    async def submit(self, key: Hashable, payload: Any, x: Sequences, ticket: Ticket | None = None) -> np.ndarray:
        """Rows of the batch function's output for the sequences `x`, once their batch has run.

        `x` must fit one batch: at most `capacity(T)` sequences, T its longest (the engine splits
        larger ones). Without a ticket, `x` is a request of its own. The wait and the batch's run
        are recorded for the calling request."""
        if ticket is None:
            with self.admitted() as own:
                return await self.submit(key, payload, x, own)
        return await self._enqueue(_Pending(ticket, key, payload, x, asyncio.get_running_loop().create_future()))

    async def call(self, fn: Callable[[], Any], cost: int, ticket: Ticket) -> Any:
        """fn() on the inference thread, alone, in the ticket's turn; `cost` is its steps, about."""
        future = asyncio.get_running_loop().create_future()
        return await self._enqueue(_Pending(ticket, None, None, None, future, call=fn, cost=cost))

    async def _enqueue(self, pending: _Pending) -> Any:
        pending.ticket.waiting.append(pending)
        self._wake.set()
        out = await pending.future
        record(pending.started - pending.enqueued, pending.finished - pending.started)
        return out

    def _next(self) -> Ticket | None:
        """The ticket whose turn it is, among those with pieces waiting."""
        waiting = [ticket for ticket in self._tickets.values() if ticket.waiting]
        return min(waiting, key=lambda ticket: ticket.turn) if waiting else None

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._next() is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._wait_for_company()
            batch = self._take_batch()
            if not batch:
                continue
            try:
                out = await loop.run_in_executor(self.executor, self._run, batch)
            except Exception as exc:  # noqa: BLE001 - every waiting request gets the error
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(exc)
                continue
            if batch[0].call is not None:
                if not batch[0].future.done():
                    batch[0].future.set_result(out)
                continue
            self._batches += 1
            self._sequences += len(out)
            if self.on_batch is not None:
                self.on_batch(len(out))
            start = 0
            for pending in batch:
                if not pending.future.done():  # the client may have gone away
                    pending.future.set_result(out[start : start + pending.rows])
                start += pending.rows

    def _run(self, batch: list[_Pending]) -> Any:
        """On the inference thread: stack the batch (padding, if it must, here and not on the event
        loop) and run it, or run the call, noting when for each request and crediting its ticket."""
        started = time.perf_counter()
        first = batch[0]
        if first.call is not None:
            out = first.call()
            first.ticket.served += first.cost
        else:
            x, lengths = stack([pending.x for pending in batch if pending.x is not None])
            out = self.run_batch(first.key, first.payload, x, lengths)
            for pending in batch:
                pending.ticket.served += pending.rows * x.shape[1]
        finished = time.perf_counter()
        for pending in batch:
            pending.started, pending.finished = started, finished
        return out

    async def _wait_for_company(self) -> None:
        """Give the next piece until max_wait_s after it arrived for others to join it."""
        ticket = self._next()
        if ticket is None or ticket.waiting[0].call is not None:
            return
        first = ticket.waiting[0]
        while self._waiting_sequences(first.key) < self.capacity(first.steps):
            left = first.enqueued + self.max_wait_s - time.perf_counter()
            if left <= 0:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), left)
            except TimeoutError:
                return

    def _waiting_sequences(self, key: Hashable) -> int:
        return sum(p.rows for t in self._tickets.values() for p in t.waiting if p.call is None and p.key == key)

    def _take_batch(self) -> list[_Pending]:
        """The next piece of the ticket whose turn it is, and every other waiting piece with its key
        that fits, tickets in turn order: at most capacity(T) sequences, T the longest among them,
        since rows are padded to it. Then pieces whose key is in its merge group join it, as long
        as the pass stays within `small_pass` steps (sequences x its longest). A call runs alone."""
        ticket = self._next()
        if ticket is None:
            return []
        first = ticket.waiting.popleft()
        if first.call is not None:
            return [first]
        batch, size, steps = [first], first.rows, first.steps
        in_turn = sorted((t for t in self._tickets.values() if t.waiting), key=lambda t: t.turn)

        def take(joins: Callable[[_Pending], bool]) -> None:
            nonlocal size, steps
            for other in in_turn:
                keep: deque[_Pending] = deque()
                for pending in other.waiting:
                    padded_to = max(steps, pending.steps)
                    if pending.call is None and joins(pending) and size + pending.rows <= self.capacity(padded_to):
                        batch.append(pending)
                        size, steps = size + pending.rows, padded_to
                    else:
                        keep.append(pending)
                other.waiting = keep

        take(lambda pending: pending.key == first.key)
        merge = self.merge_group
        if merge is not None and size * steps < self.small_pass:
            group = merge(first.key)

            def small(pending: _Pending) -> bool:  # the pass stays small with it, padding included
                return (size + pending.rows) * max(steps, pending.steps) <= self.small_pass

            take(lambda pending: merge(pending.key) == group and small(pending))
        return batch
