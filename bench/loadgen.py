"""A small closed-loop HTTP/1.1 load generator: N keep-alive connections, each sending a prebuilt
request as soon as the previous answer is read: the same request every time, or, given a pool of
requests, the pool's requests in turn (connection i starting i/N of the way through it).

Written on raw asyncio streams (with uvloop) rather than an HTTP client library, so that on a
2-core machine the generator costs as little as possible of the CPU it shares with the server.
It reads responses by Content-Length, which is all the service sends.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import uvloop


def build_request(path: str, body: bytes, content_type: str, accept: str = "application/json", port: int = 80) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
        f"Accept: {accept}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class LoadResult:
    seconds: float
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    units: float = 0.0  # the work the requests answered with a 2xx carried (sequences, points), as the caller counts it

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    @property
    def units_per_second(self) -> float:
        return self.units / self.seconds

    def percentile(self, q: float) -> float:
        """Latency in seconds at quantile q (0-1)."""
        if not self.latencies:
            return float("nan")
        return statistics.quantiles(self.latencies, n=1000, method="inclusive")[min(int(q * 1000), 999) - 1]


async def _read_response(reader: asyncio.StreamReader) -> int:
    status = int((await reader.readline()).split(b" ", 2)[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


async def _connection(
    port: int, requests: Sequence[bytes], units: Sequence[float], first: int, stop_at: float, result: LoadResult
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = first
    try:
        while (started := time.perf_counter()) < stop_at:
            writer.write(requests[i])
            status = await _read_response(reader)
            result.latencies.append(time.perf_counter() - started)
            result.statuses[status] += 1
            if 200 <= status < 300:
                result.units += units[i]
            i = (i + 1) % len(requests)
    finally:
        writer.close()


async def _run(
    port: int, requests: Sequence[bytes], units: Sequence[float], connections: int, seconds: float, warmup: float
) -> LoadResult:
    def first(c: int) -> int:
        return c * len(requests) // connections

    if warmup > 0:
        stop_at, discard = time.perf_counter() + warmup, LoadResult(0)
        await asyncio.gather(
            *(_connection(port, requests, units, first(c), stop_at, discard) for c in range(connections))
        )
    result = LoadResult(seconds)
    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(*(_connection(port, requests, units, first(c), stop_at, result) for c in range(connections)))
    result.seconds = time.perf_counter() - started
    return result


def run_load(
    port: int,
    requests: bytes | Sequence[bytes],
    connections: int,
    seconds: float = 5.0,
    warmup: float = 1.0,
    units: float | Sequence[float] = 1.0,
) -> LoadResult:
    """Drive `connections` closed-loop connections for `seconds` after `warmup`; returns what was measured.

    `requests` is one request or a pool of them (from build_request); `units` is the work each
    carries (one number for all, or one per request of the pool), summed over answered requests
    into LoadResult.units.
    """
    pool = [requests] if isinstance(requests, bytes) else list(requests)
    work = [float(units)] * len(pool) if isinstance(units, int | float) else [float(u) for u in units]
    if not pool or len(work) != len(pool):
        raise ValueError(f"{len(pool)} requests but {len(work)} units")
    gc.collect()
    gc.disable()  # a collection pause here would read as server latency
    try:
        return uvloop.run(_run(port, pool, work, connections, seconds, warmup))
    finally:
        gc.enable()
