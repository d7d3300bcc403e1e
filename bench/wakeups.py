"""How soon a worker starts a queued job and stops a cancelled one: PostgreSQL with LISTEN/NOTIFY
against SQLite, whose workers poll (JEPA_WORKER_POLL_S, default 1 s).

    python -m bench.wakeups [--jobs 10] [--postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/test]

For each database: an API process (no embedded worker) and one idle `jepa worker`, as deployed.
Each of `--jobs` rounds waits a random 0-1 s (so that jobs arrive anywhere in a poll cycle),
queues an endless tiny job with POST /train, and reads how long it stayed queued (the job's
started_at - created_at, both stamped on this machine's clock); once its training process is up,
POST /jobs/{id}/cancel and time until that process has exited. PostgreSQL runs in a database of
its own (jepa_bench_wakeups, created on the server of --postgres-url, its schema dropped first).
Prints one markdown table: median (min-max) per database.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
import psycopg
from sqlalchemy import make_url

from bench.serve import cmdline, free_port, process_name
from training.execution.forkserver import TRAINING_PROCESS_NAME

BENCH_DATABASE = "jepa_bench_wakeups"
ENDLESS = {
    "model": "woken",
    "dataset": {"pattern": "mixed", "num_samples": 64, "seq_len": 12},
    "config": {"hidden_dim": 16, "repr_dim": 8, "predictor_hidden_dim": 16, "epochs": 10_000, "batch_size": 16},
}


def bench_postgres(url: str) -> str:
    """A fresh database beside the one `url` names; returns its SQLAlchemy URL."""
    server = make_url(url)
    dsn = server.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (BENCH_DATABASE,)).fetchone():
            conn.execute(f"CREATE DATABASE {BENCH_DATABASE}")
    bench = server.set(database=BENCH_DATABASE)
    bench_dsn = bench.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(bench_dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    return bench.render_as_string(hide_password=False)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError, ValueError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def training_processes(root: int) -> list[int]:
    """The jobs' training processes under `root` (a server's or worker's pid): forked by its fork
    server, or children started as `python -m training.execution.runner`. Reads only the tree
    under `root`, so polling it every few ms costs little."""
    found, stack = [], _children(root)
    while stack:
        pid = stack.pop()
        if process_name(pid) == TRAINING_PROCESS_NAME or "training.execution.runner" in cmdline(pid):
            found.append(pid)
        stack += _children(pid)
    return found


def measure(database_url: str | None, work: Path, jobs: int) -> tuple[list[float], list[float]]:
    """(queued-to-claimed seconds, cancel-to-exit seconds) of each job."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("JEPA_")}
    env = {**base, "JEPA_DATA_DIR": str(work), "JEPA_EMBEDDED_WORKER": "0", "JEPA_BOOTSTRAP": "0"}
    env |= {"JEPA_LOG_LEVEL": "warning"} | ({"JEPA_DATABASE_URL": database_url} if database_url else {})
    port = free_port()
    cli = [sys.executable, "-m", "service.cli"]
    logs = [(work.parent / f"{work.name}-{name}.log").open("wb") for name in ("api", "worker")]
    api = subprocess.Popen([*cli, "serve", "--port", str(port)], env=env, stdout=logs[0], stderr=subprocess.STDOUT)
    worker = subprocess.Popen([*cli, "worker"], env=env, stdout=logs[1], stderr=subprocess.STDOUT)
    claimed, stopped = [], []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError("the API never answered")
                time.sleep(0.2)
            time.sleep(3)  # the worker is up and idle: connected, and listening where it can
            for _ in range(jobs):
                time.sleep(random.random())
                job_id = client.post("/train", json=ENDLESS).json()["job_id"]
                while (job := client.get(f"/jobs/{job_id}").json())["status"] == "queued":
                    time.sleep(0.01)
                started, created = (datetime.fromisoformat(job[k]) for k in ("started_at", "created_at"))
                claimed.append((started - created).total_seconds())
                while not training_processes(worker.pid):
                    time.sleep(0.01)
                time.sleep(0.5)  # training, not starting up
                cancelled = time.monotonic()
                client.post(f"/jobs/{job_id}/cancel").raise_for_status()
                while training_processes(worker.pid):
                    time.sleep(0.002)
                stopped.append(time.monotonic() - cancelled)
    finally:
        for proc in (worker, api):
            proc.terminate()
            proc.wait(30)
        for log in logs:
            log.close()
    return claimed, stopped


def cell(seconds: list[float]) -> str:
    ms = [s * 1000 for s in seconds]
    return f"{statistics.median(ms):.0f} ({min(ms):.0f}–{max(ms):.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("JEPA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    )
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, url in (
            ("PostgreSQL, LISTEN/NOTIFY", bench_postgres(args.postgres_url)),
            ("SQLite, polling every 1 s", None),
        ):
            claimed, stopped = measure(url, Path(tmp) / label.split(",")[0].lower(), args.jobs)
            rows.append(f"| {label} | {cell(claimed)} | {cell(stopped)} |")
    print("| database, wake-up | queued → claimed (ms) | cancel → training process gone (ms) |")
    print("|---|---|---|")
    print("\n".join(rows))
    print(
        f"\n{args.jobs} jobs each, median (min–max); one idle `jepa worker` and one API process per database, "
        "on this machine. Claimed: the job's started_at minus its created_at. Gone: from the cancel request "
        "to the training process's exit (the worker sends it SIGTERM)."
    )


if __name__ == "__main__":
    main()
