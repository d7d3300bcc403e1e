"""`jepa serve --workers 2`: two API processes on one port, one embedded training worker among
them (taken over when its process dies), metrics summed over both, and a graceful drain."""

from __future__ import annotations

import io
import os
import re
import signal
import threading
import time

import httpx
import numpy as np

from tests.e2e.servers import Server, StartServer, wait_for_job
from tests.factories import TINY_CONFIG

ONE = {"sequences": [[[0.0, 1.0], [1.0, 2.0]]]}
TINY_TRAIN = {"model": "m", "dataset": {"num_samples": 64, "seq_len": 12}, "config": TINY_CONFIG}
LEASE_LINE = re.compile(r"process (\d+) runs the embedded training worker")


def lease_holders(server: Server) -> list[int]:
    return [int(pid) for pid in LEASE_LINE.findall(server.log())]


def answering_processes(server: Server, requests: int = 40) -> set[str]:
    """The request-id prefixes (one per process) seen over fresh connections."""
    prefixes = set()
    for _ in range(requests):
        with server.client() as client:  # a new connection each time: the kernel spreads them
            prefixes.add(client.get("/health").headers["x-request-id"].split("-")[0])
    return prefixes


def test_two_processes_share_one_port_one_worker_and_one_set_of_metrics(start_server: StartServer) -> None:
    server = start_server(JEPA_WORKERS="2")
    server.wait_for("/ready")  # the first-start job trained, by the one embedded worker
    assert len(answering_processes(server)) == 2
    assert len(lease_holders(server)) == 1

    def encode_count() -> float:
        with server.client() as client:
            text = client.get("/metrics").text
        found = re.search(r'^jepa_requests_total\{method="POST",route="/encode",status="200"\} (\S+)$', text, re.M)
        return float(found.group(1)) if found else 0.0

    before = encode_count()
    for _ in range(30):
        with server.client() as client:
            response = client.post("/encode", json=ONE)
            assert response.status_code == 200
            assert {"x-queue-time", "x-inference-time", "x-total-time"} <= set(response.headers)
    # whichever process answers the scrape counts both processes' requests
    assert [encode_count() for _ in range(6)] == [before + 30] * 6

    # The worker's process dies: uvicorn starts a replacement, and one of the two takes the lease.
    (holder,) = lease_holders(server)
    os.kill(holder, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(lease_holders(server)) < 2:
        time.sleep(0.2)
    assert len(lease_holders(server)) == 2 and lease_holders(server)[1] != holder
    with server.client() as client:
        job = wait_for_job(client, client.post("/train", json=TINY_TRAIN).json()["job_id"])
    assert job["status"] == "succeeded", job


def test_sigterm_drains_both_processes(start_server: StartServer) -> None:
    server = start_server(JEPA_WORKERS="2", trained=True)
    server.wait_for("/ready")
    buffer = io.BytesIO()
    np.save(buffer, np.random.default_rng(0).normal(size=(2048, 200, 2)).astype(np.float32))
    headers = {"content-type": "application/x-npy", "accept": "application/x-npy"}
    results: list[int] = []

    def slow_request() -> None:
        with server.client() as client:
            results.append(client.post("/encode", content=buffer.getvalue(), headers=headers).status_code)

    threads = [threading.Thread(target=slow_request) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # in flight, in both processes
    assert server.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    for thread in threads:
        thread.join(60)
    assert results == [200] * 4
    try:
        httpx.get(f"{server.base_url}/health", timeout=2)
        raise AssertionError("still answering after the drain")
    except httpx.TransportError:
        pass
