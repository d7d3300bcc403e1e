"""Fair turns on the inference thread: how long a small request waits while large ones run.

A real server (`jepa serve`, its defaults) trains a `series` preset model through its API (the
1-D random walks bench.serve trains on), then, in each round and for each load:

- idle: nothing else runs;
- forecast x4: 4 clients each send, one after another, the heaviest forecast `/score` the limits
  allow: one series of 8,703 steps, context_len = target_len = 4,096, stride 1, which makes 512
  windows of 8,192 steps, JEPA_MAX_SCORE_POINTS (4,194,304) numbers in all;
- memory x4: 4 clients each send, one after another, the longest memory `/score`: one series of
  JEPA_MAX_SCORE_LEN (1,000,000) steps.

Meanwhile one client sends a 3-step `/encode`, waits for its answer, pauses 20 ms, and sends the
next. The table gives that client's latency percentiles over the round, then the median and range
over rounds. The heavy clients disconnect at the end of each load, which cancels what they left
(service/middleware.py), so every load starts on an idle server.

    python -m bench.fairness            # 3 rounds of 20 s per load
    python -m bench.fairness --smoke    # 1 round of 2 s, a 100,000-step memory series (CI)
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from bench.common import table
from bench.serve import SERIES_MODEL, SERVICE_ENV, free_port, launch, train_series, wait_ready

HEAVY_CLIENTS = 4
FORECAST_WINDOW = 4096  # context_len and target_len: the most ScoreOptions allows
FORECAST_STEPS = 512 + 2 * FORECAST_WINDOW - 1  # 512 windows of 8,192 steps: JEPA_MAX_SCORE_POINTS
MEMORY_STEPS, SMOKE_MEMORY_STEPS = 1_000_000, 100_000  # JEPA_MAX_SCORE_LEN
PAUSE_S = 0.02  # between the small client's requests
SMALL = {"model": SERIES_MODEL, "sequences": [[[0.1], [0.4], [0.2]]]}


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array.astype(np.float32), allow_pickle=False)
    return buffer.getvalue()


def walk(steps: int, seed: int) -> np.ndarray:
    return np.cumsum(np.random.default_rng(seed).normal(size=(1, steps, 1)), axis=1)


@dataclass(frozen=True)
class Load:
    name: str
    url: str = ""  # path and query of the heavy request; none when idle
    body: bytes = b""


def loads(memory_steps: int) -> list[Load]:
    forecast = f"context_len={FORECAST_WINDOW}&target_len={FORECAST_WINDOW}&stride=1&method=forecast"
    return [
        Load("idle"),
        Load(f"forecast x{HEAVY_CLIENTS}", f"/score?model={SERIES_MODEL}&{forecast}", npy(walk(FORECAST_STEPS, 1))),
        Load(f"memory x{HEAVY_CLIENTS}", f"/score?model={SERIES_MODEL}&method=memory", npy(walk(memory_steps, 2))),
    ]


@dataclass
class Measured:
    latencies: list[float] = field(default_factory=list)  # seconds, the small client's 200s
    small_errors: int = 0
    heavy_answered: int = 0
    heavy_errors: list[int] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1000


async def heavy_client(base: str, load: Load, measured: Measured) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=None) as client:
        while True:
            answer = await client.post(load.url, content=load.body, headers={"content-type": "application/x-npy"})
            if answer.status_code == 200:
                measured.heavy_answered += 1
            else:
                measured.heavy_errors.append(answer.status_code)
                await asyncio.sleep(0.1)


async def measure(base: str, load: Load, seconds: float, warmup: float) -> Measured:
    measured = Measured()
    heavy = [asyncio.create_task(heavy_client(base, load, measured)) for _ in range(HEAVY_CLIENTS if load.url else 0)]
    try:
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            await client.post("/encode", json=SMALL)  # its connection open before the clock starts
            await asyncio.sleep(warmup)  # the heavy requests uploaded and queued
            until = time.perf_counter() + seconds
            while time.perf_counter() < until:
                started = time.perf_counter()
                answer = await client.post("/encode", json=SMALL)
                if answer.status_code == 200:
                    measured.latencies.append(time.perf_counter() - started)
                else:
                    measured.small_errors += 1
                await asyncio.sleep(PAUSE_S)
    finally:
        for task in heavy:
            task.cancel()
        await asyncio.gather(*heavy, return_exceptions=True)
    return measured


async def settle(base: str, timeout: float = 120) -> None:
    """Wait until a small request is answered at once again: the heavy requests' work is cancelled."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            await client.post("/encode", json=SMALL)
            if time.perf_counter() - started < 0.05:
                return
            await asyncio.sleep(0.2)
    raise TimeoutError("the server stayed busy after the heavy clients left")


def spread(values: list[float]) -> str:
    median = statistics.median(values)
    return f"{median:.0f}" if len(values) == 1 else f"{median:.0f} ({min(values):.0f}-{max(values):.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per load and round")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of heavy load before measuring")
    parser.add_argument("--smoke", action="store_true", help="1 round of 2 s, a shorter memory series (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.seconds, args.warmup = 1, 2.0, 1.0
    plan = loads(SMOKE_MEMORY_STEPS if args.smoke else MEMORY_STEPS)
    results: dict[str, list[Measured]] = {load.name: [] for load in plan}
    began, load_before = time.monotonic(), os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        port, data = free_port(), Path(tmp) / "data"
        server = launch(
            "service",
            [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
            {**SERVICE_ENV, "JEPA_DATA_DIR": str(data)},
            port,
            "/ready",
            Path(tmp),
        )
        try:
            wait_ready(server)
            print(f"training the {SERIES_MODEL} model through the API", file=sys.stderr, flush=True)
            train_series(port, data)
            base = f"http://127.0.0.1:{port}"
            for round_ in range(args.rounds):
                for load in plan:
                    measured = asyncio.run(measure(base, load, args.seconds, args.warmup))
                    asyncio.run(settle(base))
                    results[load.name].append(measured)
                    print(
                        f"round {round_ + 1} {load.name}: p99 {measured.percentile(99):.0f} ms over "
                        f"{len(measured.latencies)} requests, {measured.heavy_answered} heavy answered",
                        file=sys.stderr,
                        flush=True,
                    )
        finally:
            server.stop()
    rows = []
    for load in plan:
        runs = results[load.name]
        rows.append(
            [
                load.name,
                spread([run.percentile(50) for run in runs]),
                spread([run.percentile(99) for run in runs]),
                spread([max(run.latencies) * 1000 for run in runs]),
                str(sum(len(run.latencies) for run in runs)),
                str(sum(run.heavy_answered for run in runs)),
                str(sum(run.small_errors + len(run.heavy_errors) for run in runs)),
            ]
        )
    header = ["load", "small p50 ms", "small p99 ms", "small max ms", "small requests", "heavy answered", "non-200"]
    print(table(header, rows))
    print(
        f"\n{args.rounds} round(s) of {args.seconds:g} s per load; median (range) over rounds. "
        f"One `jepa serve` (defaults: 1 inference thread, JEPA_MICRO_BATCH_STEPS 8192), a `series` preset model "
        f"(1-D); the small request: a 3-step /encode, then {PAUSE_S * 1000:.0f} ms pause. "
        f"{os.cpu_count()} CPUs, load average {load_before[0]:.2f} before; {time.monotonic() - began:.0f} s in all."
    )


if __name__ == "__main__":
    main()
