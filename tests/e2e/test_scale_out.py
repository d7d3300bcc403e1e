"""Scale-out on PostgreSQL: two API processes and two worker processes around one database."""

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.servers import Process, Server, StartServer, server_env, wait_for_job
from tests.factories import TINY_CONFIG

STALE_S = "3"
Cluster = tuple[list[Server], list[Process]]


@pytest.fixture
def cluster(start_server: StartServer, fresh_postgres_url: str, tmp_path: Path) -> Iterator[Cluster]:
    shared = tmp_path / "shared"  # the volume every replica and worker mounts
    env = {"JEPA_DATABASE_URL": fresh_postgres_url, "JEPA_JOB_STALE_S": STALE_S}
    apis = [start_server(shared, JEPA_EMBEDDED_WORKER="0", JEPA_BOOTSTRAP="0", **env) for _ in range(2)]
    workers = [Process(["worker"], server_env(shared, **env), tmp_path / f"worker-{i}.log") for i in range(2)]
    yield apis, workers
    for worker in workers:
        worker.stop()


def test_jobs_from_both_apis_run_exactly_once_across_two_workers(cluster: Cluster) -> None:
    apis, workers = cluster
    clients = [api.client() for api in apis]
    body = {"model": "shared", "dataset": {"num_samples": 64, "seq_len": 12}, "config": TINY_CONFIG}
    job_ids = [clients[i % 2].post("/train", json=body).json()["job_id"] for i in range(8)]
    done = [wait_for_job(clients[i % 2], job_id, timeout=180) for i, job_id in enumerate(job_ids)]
    logs = "\n".join(w.log() for w in workers)
    assert [job["status"] for job in done] == ["succeeded"] * 8, logs
    assert [job["attempts"] for job in done] == [1] * 8
    assert sorted(job["version"] for job in done) == list(range(1, 9))
    worker_ids = {f"{socket.gethostname()}:{w.proc.pid}" for w in workers}
    assert {job["worker"] for job in done} <= worker_ids
    for client in clients:  # both replicas see the same registry
        (model,) = client.get("/models").json()
        assert [v["version"] for v in model["versions"]] == list(range(1, 9))
        client.close()


def test_a_killed_workers_job_is_rerun_by_the_other(cluster: Cluster) -> None:
    apis, workers = cluster
    with apis[0].client() as client:
        body = {
            "model": "survivor",
            "dataset": {"num_samples": 256, "seq_len": 12},
            "config": {**TINY_CONFIG, "epochs": 40},
        }
        job_id = client.post("/train", json=body).json()["job_id"]
        deadline = time.monotonic() + 60
        while (job := client.get(f"/jobs/{job_id}").json())["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        (victim,) = [w for w in workers if job["worker"].endswith(f":{w.proc.pid}")]
        os.kill(victim.proc.pid, signal.SIGKILL)
        job = wait_for_job(client, job_id, timeout=180)
        (survivor,) = [w for w in workers if w is not victim]
        assert job["status"] == "succeeded", survivor.log()
        assert job["attempts"] == 2 and job["worker"] == f"{socket.gethostname()}:{survivor.proc.pid}"
        assert job["version"] == 1
        (model,) = client.get("/models").json()
        assert [v["version"] for v in model["versions"]] == [1]  # the killed attempt registered nothing


def test_every_replica_serves_a_promoted_alias_within_seconds(cluster: Cluster) -> None:
    apis, _ = cluster
    a, b = (api.client() for api in apis)
    body = {"model": "promo", "dataset": {"num_samples": 64, "seq_len": 12}, "config": TINY_CONFIG}
    for _ in range(2):
        assert wait_for_job(a, a.post("/train", json=body).json()["job_id"])["status"] == "succeeded"
    request = {"model": "promo", "version": "production", "sequences": [[[0.0, 1.0], [1.0, 2.0]]]}
    assert b.post("/encode", json=request).status_code == 404  # no such alias yet
    for version in (1, 2):
        assert a.put("/models/promo/aliases/production", json={"version": version}).json()["version"] == version
        promoted = time.monotonic()
        while (served := b.post("/encode", json=request)).json().get("version") != version:
            assert time.monotonic() - promoted < 5, served.text
            time.sleep(0.05)
    assert a.delete("/models/promo/aliases/production").status_code == 204
    deleted = time.monotonic()
    while b.post("/encode", json=request).status_code != 404:
        assert time.monotonic() - deleted < 5
        time.sleep(0.05)
    assert a.delete("/models/promo/aliases/production").status_code == 404
    a.close()
    b.close()
