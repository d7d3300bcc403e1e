"""On PostgreSQL a worker hears of a new job and of a cancel at once (LISTEN/NOTIFY), with its
polling slowed to 30 s so that polling cannot be what found them. The latencies themselves are
measured by bench/wakeups.py; here they only need to beat the poll by far."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from tests.e2e.servers import Process, StartServer, server_env, training_processes
from tests.factories import TINY_CONFIG

ENDLESS = {
    "model": "woken",
    "dataset": {"pattern": "mixed", "num_samples": 64, "seq_len": 12},
    "config": {**TINY_CONFIG, "epochs": 10_000},
}


def test_a_listening_worker_starts_and_stops_jobs_at_once(
    start_server: StartServer, fresh_postgres_url: str, tmp_path: Path
) -> None:
    env = {"JEPA_DATABASE_URL": fresh_postgres_url, "JEPA_WORKER_POLL_S": "30"}
    shared = tmp_path / "shared"
    api = start_server(shared, JEPA_EMBEDDED_WORKER="0", JEPA_BOOTSTRAP="0", **env)
    worker = Process(["worker"], server_env(shared, **env), tmp_path / "worker.log")
    try:
        deadline = time.monotonic() + 60
        while "listening for new jobs" not in worker.log():
            assert time.monotonic() < deadline and worker.proc.poll() is None, worker.log()
            time.sleep(0.1)
        with api.client() as client:
            for _ in range(2):  # the second time, after a job: still listening
                job_id = client.post("/train", json=ENDLESS).json()["job_id"]
                while (job := client.get(f"/jobs/{job_id}").json())["status"] == "queued":
                    assert time.monotonic() < deadline + 30, worker.log()
                    time.sleep(0.05)
                waited = datetime.fromisoformat(job["started_at"]) - datetime.fromisoformat(job["created_at"])
                assert waited.total_seconds() < 3, f"claimed after {waited}: polling, not a wake-up"

                while not training_processes(worker.proc.pid):  # its training process is up
                    time.sleep(0.05)
                cancelled = time.monotonic()
                assert client.post(f"/jobs/{job_id}/cancel").status_code == 200
                while training_processes(worker.proc.pid):
                    assert time.monotonic() - cancelled < 5, "the training process outlived its cancel"
                    time.sleep(0.05)
    finally:
        assert worker.stop() == 0, worker.log()
