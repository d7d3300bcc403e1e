"""Serving speed: the raw model in process, a naive FastAPI endpoint, and the service, in one run.

    python -m bench.serve [--seconds 5]

Starts `jepa serve` (which trains a small default model first) and the naive endpoint of
bench/naive_app.py as separate processes, and drives both from this process with the closed-loop
load generator in bench/loadgen.py. Prints one table; speeds are also given as ratios to the raw
model and to the naive endpoint measured in the same run, since absolute numbers on a shared
2-core machine move from run to run.
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import orjson
import torch

from bench.common import table
from bench.loadgen import LoadResult, build_request, run_load
from jepa_model import load_checkpoint
from jepa_model.serving import traced_forwards

SEQ_LEN, DIM, BATCH = 20, 2, 256


@dataclass
class Row:
    name: str
    result: LoadResult
    sequences_per_request: int

    @property
    def sequences_per_s(self) -> float:
        return self.result.per_second * self.sequences_per_request


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str], env: dict[str, str], port: int, ready: str, log: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(args, env={**os.environ, **env}, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{args} exited:\n{log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{ready}", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{args} never became ready:\n{log.read_text()}")


def raw_throughput(checkpoint: Path, seconds: float) -> tuple[float, float]:
    """(sequences/s in batches of 256, seconds per single sequence) of the model in this process."""
    torch.set_num_threads(1)  # what the service gives its inference thread
    encode = traced_forwards(load_checkpoint(checkpoint).model)["target"]  # the service's own forward pass
    batch, single = torch.randn(BATCH, SEQ_LEN, DIM), torch.randn(1, SEQ_LEN, DIM)

    def rate(x: torch.Tensor) -> float:
        with torch.inference_mode():
            for _ in range(10):
                encode(x)
            n, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds / 2:
                encode(x)
                n += 1
        return n / (time.perf_counter() - started)

    return rate(batch) * BATCH, 1 / rate(single)


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per scenario")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each scenario")
    parser.add_argument("--throughput-connections", type=int, default=4)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    batch = np.cumsum(rng.normal(size=(BATCH, SEQ_LEN, DIM)), axis=1).astype(np.float32)
    single = batch[:1]
    json_batch = orjson.dumps({"sequences": batch}, option=orjson.OPT_SERIALIZE_NUMPY)
    json_single = orjson.dumps({"sequences": single}, option=orjson.OPT_SERIALIZE_NUMPY)

    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        env = {"JEPA_DATA_DIR": str(tmp_dir / "data"), "JEPA_BOOTSTRAP_EPOCHS": "5", "JEPA_LOG_LEVEL": "warning"}
        port, naive_port = free_port(), free_port()
        cli = [sys.executable, "-m", "service.cli", "serve", "--port", str(port)]
        service = start(cli, env, port, "/ready", tmp_dir / "service.log")
        (checkpoint,) = (tmp_dir / "data" / "checkpoints" / "trajectories").iterdir()
        naive = None
        try:
            naive_cmd = [sys.executable, "-m", "uvicorn", "bench.naive_app:app", "--port", str(naive_port)]
            naive_env = {"JEPA_NAIVE_CHECKPOINT": str(checkpoint)}
            naive = start(naive_cmd, naive_env, naive_port, "/docs", tmp_dir / "naive.log")
            raw_seq_s, raw_single_s = raw_throughput(checkpoint, args.seconds)
            c = args.throughput_connections
            rows: list[Row] = []
            j, n = "application/json", "application/x-npy"
            scenarios = [
                ("naive, 256 sequences, JSON", naive_port, json_batch, j, j, c, BATCH),
                ("naive, 1 sequence, 64 connections", naive_port, json_single, j, j, 64, 1),
                ("service, 256 sequences, JSON", port, json_batch, j, j, c, BATCH),
                ("service, 256 sequences, npy", port, npy(batch), n, n, c, BATCH),
                ("service, 1 sequence, 1 connection", port, json_single, j, j, 1, 1),
                ("service, 1 sequence, 16 connections", port, json_single, j, j, 16, 1),
                ("service, 1 sequence, 64 connections", port, json_single, j, j, 64, 1),
            ]
            for name, p, body, content_type, accept, connections, per_request in scenarios:
                request = build_request("/encode", body, content_type, accept, p)
                result = run_load(p, request, connections, args.seconds, args.warmup)
                bad = {s: n for s, n in result.statuses.items() if s != 200}
                if bad:
                    print(f"warning: {name}: non-200 answers {bad}", file=sys.stderr)
                rows.append(Row(f"{name} ({connections} conn.)" if per_request > 1 else name, result, per_request))
        finally:
            for proc in (service, naive):
                if proc is not None:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(30)

    naive_batch, naive_single = rows[0], rows[1]
    lines = [
        ["raw model in process, batches of 256", "-", f"{raw_seq_s:,.0f}", "-", "-", "1.00", "-"],
        ["raw model in process, 1 sequence", f"{1 / raw_single_s:,.0f}", f"{1 / raw_single_s:,.0f}",
         f"{raw_single_s * 1e3:.2f}", "-", "-", "-"],
    ]  # fmt: skip
    for row in rows:
        per_s, seq_s = row.result.per_second, row.sequences_per_s
        baseline = naive_batch if row.sequences_per_request > 1 else naive_single
        lines.append(
            [
                row.name,
                f"{per_s:,.0f}",
                f"{seq_s:,.0f}",
                f"{row.result.percentile(0.5) * 1e3:.1f}",
                f"{row.result.percentile(0.99) * 1e3:.1f}",
                f"{seq_s / raw_seq_s:.2f}",
                f"{per_s / baseline.result.per_second:.1f}×",
            ]
        )
    header = ["scenario", "requests/s", "sequences/s", "p50 ms", "p99 ms", "vs raw (seq/s)", "vs naive (req/s)"]
    print(table(header, lines))
    print(
        f"\n{args.seconds:g} s per scenario after {args.warmup:g} s of warm-up, sequences of {SEQ_LEN} steps x "
        f"{DIM} features, the default model trained for 5 epochs; load generator and servers on the same machine "
        f"({os.cpu_count()} cores); torch {torch.__version__}."
    )


if __name__ == "__main__":
    main()
