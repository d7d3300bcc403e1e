"""A small closed-loop HTTP/1.1 load generator: N keep-alive connections, each sending the same
prebuilt request as soon as the previous answer is read.

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

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

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


async def _connection(port: int, request: bytes, stop_at: float, result: LoadResult) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while (started := time.perf_counter()) < stop_at:
            writer.write(request)
            status = await _read_response(reader)
            result.latencies.append(time.perf_counter() - started)
            result.statuses[status] += 1
    finally:
        writer.close()


async def _run(port: int, request: bytes, connections: int, seconds: float, warmup: float) -> LoadResult:
    if warmup > 0:
        await asyncio.gather(
            *(_connection(port, request, time.perf_counter() + warmup, LoadResult(0)) for _ in range(connections))
        )
    result = LoadResult(seconds)
    started = time.perf_counter()
    await asyncio.gather(*(_connection(port, request, started + seconds, result) for _ in range(connections)))
    result.seconds = time.perf_counter() - started
    return result


def run_load(port: int, request: bytes, connections: int, seconds: float = 5.0, warmup: float = 1.0) -> LoadResult:
    """Drive `connections` closed-loop connections for `seconds` after `warmup`; returns what was measured."""
    gc.collect()
    gc.disable()  # a collection pause here would read as server latency
    try:
        return uvloop.run(_run(port, request, connections, seconds, warmup))
    finally:
        gc.enable()
