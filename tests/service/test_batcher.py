import asyncio
import time
from collections.abc import Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from service.batcher import BatchFn, BatchLimits, MicroBatcher, Sequences, stack
from service.settings import Settings
from service.timing import RequestTiming, record, request_timing
from tests.factories import random_sequences
from training.errors import Overloaded

Call = tuple[Hashable, tuple[int, ...], list[int] | None]


def limits(**settings: Any) -> BatchLimits:
    """The service's batching settings, with these changed: the batcher has no defaults of its own."""
    return BatchLimits.from_settings(Settings(**settings))


def test_equal_lengths_are_stacked_without_padding() -> None:
    x = np.ones((3, 5, 2), np.float32)
    alone, lengths = stack([x])
    assert alone is x and lengths is None  # the request's own array: nothing copied
    together, lengths = stack([x, np.zeros((2, 5, 2), np.float32)])
    assert together.shape == (5, 5, 2) and lengths is None


def test_mixed_lengths_are_right_padded_with_zeros_to_the_longest() -> None:
    parts: list[Sequences] = [np.ones((2, 3, 2), np.float32), random_sequences([6, 4])]
    x, lengths = stack(parts)
    assert x.shape == (4, 6, 2) and lengths is not None and list(lengths) == [3, 3, 6, 4]
    np.testing.assert_array_equal(x[1, :3], parts[0][1])
    np.testing.assert_array_equal(x[3, :4], parts[1][1])
    assert not x[0, 3:].any() and not x[3, 4:].any()


async def _serve(batcher: MicroBatcher, *submissions: tuple[Hashable, Sequences]) -> list[np.ndarray]:
    batcher.start()
    try:
        return list(await asyncio.gather(*(batcher.submit(key, None, x) for key, x in submissions)))
    finally:
        await batcher.stop()


def _recording(calls: list[Call], seconds: float = 0.0) -> BatchFn:
    def run_batch(key: Hashable, payload: Any, x: np.ndarray, lengths: np.ndarray | None) -> np.ndarray:
        calls.append((key, x.shape, None if lengths is None else lengths.tolist()))
        time.sleep(seconds)
        return x.sum(axis=(1, 2))[:, None]  # (B, 1): padding is zeros, so each row's own sum

    return run_batch


def test_a_batch_holds_what_fits_in_its_steps_once_padded_to_its_longest() -> None:
    calls: list[Call] = []
    a, b, c = np.ones((3, 4, 2), np.float32), random_sequences([8, 6]), np.ones((1, 4, 2), np.float32)

    async def main() -> list[np.ndarray]:
        with ThreadPoolExecutor(1) as executor:
            # 24 steps a pass: a and c (4 x 4 steps) fit together; b would pad all five rows to 8.
            batcher = MicroBatcher(_recording(calls), executor, limits(batch_wait_ms=50, micro_batch_steps=24))
            return await _serve(batcher, ("k", a), ("k", b), ("k", c))

    out_a, out_b, out_c = asyncio.run(main())
    assert calls == [("k", (4, 4, 2), None), ("k", (2, 8, 2), [8, 6])]
    np.testing.assert_allclose(out_b[:, 0], [seq.sum() for seq in b], rtol=1e-6)
    assert out_a.shape == (3, 1) and out_c.shape == (1, 1)


def test_each_request_records_its_wait_and_its_batch_run() -> None:
    async def timed(batcher: MicroBatcher, key: str) -> RequestTiming:
        timing = RequestTiming()
        request_timing.set(timing)  # this task's context only, as the HTTP middleware sets it per request
        await batcher.submit(key, None, np.ones((1, 3, 2), np.float32))
        return timing

    async def main() -> list[RequestTiming]:
        with ThreadPoolExecutor(1) as executor:
            batcher = MicroBatcher(_recording([], seconds=0.2), executor, limits(batch_wait_ms=0))
            batcher.start()
            try:
                # Different keys: two batches, the second waiting for the first to run.
                return list(await asyncio.gather(timed(batcher, "a"), timed(batcher, "b")))
            finally:
                await batcher.stop()

    first, second = asyncio.run(main())
    assert first.inference_s >= 0.2 and second.inference_s >= 0.2
    assert first.queue_s < 0.2 <= second.queue_s


def test_record_keeps_the_longest_wait_and_sums_the_passes() -> None:
    record(1.0, 1.0)  # no request is being timed: nothing to do
    timing = RequestTiming()
    token = request_timing.set(timing)
    try:
        record(0.2, 0.1)
        record(0.5, 0.3)
        record(0.1, 0.2)
    finally:
        request_timing.reset(token)
    assert timing.queue_s == 0.5 and abs(timing.inference_s - 0.6) < 1e-12


def test_keys_of_a_merge_group_share_a_pass_only_while_it_is_small() -> None:
    def group(key: Hashable) -> Hashable:
        return "short" if key in ("s1", "s2") else key

    async def main(*submissions: tuple[Hashable, Sequences]) -> list[Call]:
        calls: list[Call] = []
        with ThreadPoolExecutor(1) as executor:
            # A small pass: at most 12 steps, counting each row at the pass's longest.
            batcher = MicroBatcher(
                _recording(calls), executor, limits(batch_wait_ms=50), merge_group=group, small_pass=12
            )
            await _serve(batcher, *submissions)
        return calls

    one, two = random_sequences([3]), random_sequences([5])
    # Alone each would run a pass of one: together, 2 rows padded to 5 steps. "long" is no group's.
    calls = asyncio.run(main(("s1", one), ("s2", two), ("long", one)))
    assert calls == [("s1", (2, 5, 2), [3, 5]), ("long", (1, 3, 2), None)]
    # With s2's 3 rows, s1's pass would hold 4 rows of 5 steps, past 12: each keeps its own.
    three = np.ones((3, 5, 2), np.float32)
    calls = asyncio.run(main(("s1", one), ("s2", three)))
    assert calls == [("s1", (1, 3, 2), None), ("s2", (3, 5, 2), None)]


def test_a_small_request_runs_after_the_pass_in_progress_not_after_a_large_request() -> None:
    calls: list[Call] = []
    large = [np.ones((1, 4, 2), np.float32) for _ in range(6)]  # 6 passes of its own

    async def main() -> list[Hashable]:
        with ThreadPoolExecutor(1) as executor:
            batcher = MicroBatcher(
                _recording(calls, seconds=0.02), executor, limits(batch_wait_ms=0, micro_batch_steps=4)
            )
            batcher.start()
            try:
                with batcher.admitted() as ticket:
                    big = [asyncio.ensure_future(batcher.submit("big", None, x, ticket)) for x in large]
                    await asyncio.sleep(0.03)  # its first pass is running
                    await batcher.submit("small", None, np.ones((1, 3, 2), np.float32))
                    await asyncio.gather(*big)
            finally:
                await batcher.stop()
        return [key for key, _, _ in calls]

    order = asyncio.run(main())
    assert order.index("small") <= 2, order  # behind the pass in progress, not behind all 6


def test_requests_in_progress_are_capped_and_a_refused_one_queues_nothing() -> None:
    async def main() -> None:
        with ThreadPoolExecutor(1) as executor:
            batcher = MicroBatcher(_recording([]), executor, limits(max_queue=2))
            with batcher.admitted(), batcher.admitted():
                try:
                    with batcher.admitted():
                        raise AssertionError("a third request was admitted")
                except Overloaded:
                    pass
                assert batcher.depth == 0
            with batcher.admitted() as ticket:  # both left: room again
                future = asyncio.ensure_future(batcher.submit("k", None, np.ones((1, 2, 2), np.float32), ticket))
                await asyncio.sleep(0)
                assert batcher.depth == 1
            await asyncio.sleep(0)
            assert batcher.depth == 0 and future.cancelled()  # what a request leaves queued goes with it

    asyncio.run(main())


def test_many_pieces_of_one_request_count_once_against_the_cap() -> None:
    async def main() -> list[np.ndarray]:
        with ThreadPoolExecutor(1) as executor:
            batcher = MicroBatcher(_recording([]), executor, limits(max_queue=1, micro_batch_steps=2))
            batcher.start()
            try:
                with batcher.admitted() as ticket:
                    pieces = [np.ones((1, 2, 2), np.float32) for _ in range(10)]
                    return await asyncio.gather(*(batcher.submit("k", None, x, ticket) for x in pieces))
            finally:
                await batcher.stop()

    assert len(asyncio.run(main())) == 10


def test_a_call_runs_alone_in_its_turn_and_returns_its_value() -> None:
    async def main() -> object:
        with ThreadPoolExecutor(1) as executor:
            batcher = MicroBatcher(_recording([]), executor, limits())
            batcher.start()
            try:
                with batcher.admitted() as ticket:
                    return await batcher.call(lambda: "done", 5, ticket)
            finally:
                await batcher.stop()

    assert asyncio.run(main()) == "done"
