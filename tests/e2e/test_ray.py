"""JEPA_EXECUTOR=ray against a real Ray head that the test starts on free ports.

Skipped where Ray is not installed (pip install -e '.[ray]'); CI installs it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from bench.ray_scaling import ray_head as bench_ray_head
from tests.e2e.servers import Server, StartServer, free_port, wait_for_job
from tests.extras import require

require("ray", extra="ray")

REPO = Path(__file__).resolve().parents[2]
# The seed's recipe, small and seeded.
SEEDED = {"preset": "seed", "hidden_dim": 16, "repr_dim": 8, "batch_size": 32, "seed": 5}
TOY = {"pattern": "mixed", "num_samples": 128, "seq_len": 20, "seed": 2}


@pytest.fixture(scope="module")
def ray_head() -> Iterator[str]:
    """A real Ray head with 2 CPUs on free ports, stopped (with its cluster) after the module."""
    with bench_ray_head(num_cpus=2, pythonpath=REPO) as address:
        yield address


def ray_server(start_server: StartServer, address: str, **env: str) -> Server:
    return start_server(JEPA_BOOTSTRAP="0", JEPA_EXECUTOR="ray", JEPA_RAY_ADDRESS=address, **env)


def train(client: httpx.Client, model: str, **config: object) -> str:
    accepted = client.post("/train", json={"model": model, "dataset": TOY, "config": {**SEEDED, **config}})
    assert accepted.status_code == 202, accepted.text
    return accepted.json()["job_id"]


def train_workers() -> list[int]:
    """The pids of this machine's Ray Train worker processes."""
    found = subprocess.run(["pgrep", "-f", "ray::RayTrainWorker"], capture_output=True, text=True).stdout
    return [int(pid) for pid in found.split()]


def wait_until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def running_epoch(client: httpx.Client, job_id: str) -> int:
    # A connection per poll: twice in CI, while a Ray run started on the loaded 2-core machine, a
    # poll on a kept-alive connection was closed unanswered (suspected: the server's loop stalled
    # past uvicorn's 5 s keep-alive timeout; being investigated). This file tests the executor.
    job = client.get(f"/jobs/{job_id}", headers={"Connection": "close"}).json()
    return job["progress"]["epoch"] if job["status"] == "running" else 0


def test_a_two_worker_job_trains_on_ray_and_serves(start_server: StartServer, ray_head: str) -> None:
    """Through the service's executor; that 1 and 2 workers train alike (fit_on_ray, the function
    it calls) is checked on the same seeded runs by bench.ray_scaling's smoke (test_benches_run)."""
    server = ray_server(start_server, ray_head)
    with server.client() as client:
        two = wait_for_job(client, train(client, "on-ray", epochs=3, workers=2), timeout=240)
        assert two["status"] == "succeeded", two

        history = client.get(f"/jobs/{two['id']}/metrics").json()
        assert [row["epoch"] for row in history["epochs"]] == [1, 2, 3]
        assert history["epochs"][-1]["loss"] == pytest.approx(two["progress"]["loss"])
        sequences = np.random.default_rng(0).normal(size=(4, 20, 2)).round(4).tolist()
        embedded = client.post("/encode", json={"model": "on-ray", "version": 1, "sequences": sequences})
        assert embedded.status_code == 200, embedded.text
        assert np.isfinite(embedded.json()["embeddings"]).all()
        lines = [line["message"] for line in client.get(f"/jobs/{two['id']}/logs").json()["lines"]]
        assert any("registered on-ray v1" in line for line in lines), lines


def test_cancelling_a_job_stops_its_ray_run(start_server: StartServer, ray_head: str) -> None:
    server = ray_server(start_server, ray_head)
    with server.client() as client:
        job_id = train(client, "cancelled", epochs=10_000, workers=2)
        wait_until(lambda: running_epoch(client, job_id) >= 1, 120, "the first epoch")
        assert len(train_workers()) == 2
        assert client.post(f"/jobs/{job_id}/cancel").status_code == 200
        wait_until(lambda: not train_workers(), 30, "the Ray Train workers to end")
        assert client.get(f"/jobs/{job_id}").json()["status"] == "cancelled"


def test_a_killed_ray_worker_requeues_the_job_which_runs_again(start_server: StartServer, ray_head: str) -> None:
    server = ray_server(start_server, ray_head)
    with server.client() as client:
        job_id = train(client, "lost", epochs=40, workers=2)
        wait_until(lambda: running_epoch(client, job_id) >= 1, 120, "the first epoch")
        os.kill(train_workers()[-1], signal.SIGKILL)

        job = wait_for_job(client, job_id, timeout=300)
        assert job["status"] == "succeeded" and job["attempts"] == 2, job
        lines = client.get(f"/jobs/{job_id}/logs").json()["lines"]
        first = [line["message"] for line in lines if line["attempt"] == 1]
        assert any("died during the run" in m for m in first), first
        assert any("is queued after its Ray run was lost" in m for m in first), first
        (model,) = [m for m in client.get("/models").json() if m["name"] == "lost"]
        assert [v["version"] for v in model["versions"]] == [1]  # registered once


def test_an_unreachable_cluster_fails_the_job_once_out_of_attempts(start_server: StartServer) -> None:
    server = ray_server(start_server, f"127.0.0.1:{free_port()}", JEPA_JOB_MAX_ATTEMPTS="2")
    with server.client() as client:
        job = wait_for_job(client, train(client, "unreachable", epochs=1), timeout=120)
        assert job["status"] == "failed" and job["attempts"] == 2, job
        assert "cannot reach the Ray cluster" in job["error"], job


def test_a_job_asking_for_more_workers_than_the_cluster_has_fails_at_once(
    start_server: StartServer, ray_head: str
) -> None:
    server = ray_server(start_server, ray_head)
    with server.client() as client:
        job = wait_for_job(client, train(client, "too-big", epochs=1, workers=4, batch_size=8), timeout=120)
        assert job["status"] == "failed" and job["attempts"] == 1, job
        assert "asks for 4 workers" in job["error"] and "2 CPUs" in job["error"], job


def test_losing_the_cluster_mid_run_requeues_the_job_then_fails_it_out_of_attempts(
    start_server: StartServer,
) -> None:
    with bench_ray_head(num_cpus=2, pythonpath=REPO) as address:  # its own: this test kills it
        server = ray_server(start_server, address, JEPA_JOB_MAX_ATTEMPTS="2")
        with server.client() as client:
            job_id = train(client, "cut-off", epochs=10_000, workers=2)
            wait_until(lambda: running_epoch(client, job_id) >= 1, 120, "the first epoch")
            port = address.rsplit(":", 1)[1]
            gcs = subprocess.run(
                ["pgrep", "-f", f"gcs_server.*--gcs_server_port={port}"], capture_output=True, text=True
            )
            (pid,) = gcs.stdout.split()
            os.kill(int(pid), signal.SIGKILL)

            job = wait_for_job(client, job_id, timeout=180)
            assert job["status"] == "failed" and job["attempts"] == 2, job
            assert "cannot reach the Ray cluster" in job["error"], job
            lines = client.get(f"/jobs/{job_id}/logs").json()["lines"]
            first = [line["message"] for line in lines if line["attempt"] == 1]
            assert any("lost the Ray cluster during the run" in m for m in first), first
            assert any("is queued after its Ray run was lost" in m for m in first), first
