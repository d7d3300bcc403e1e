"""Two API processes and two workers, each with a data directory of its own, sharing nothing but
PostgreSQL (JEPA_ARTIFACT_STORE=database): jobs run on either worker, a dataset uploaded to one
API trains on a worker and serves from the other, and deletes reach every host."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.servers import Process, Server, StartServer, server_env, wait_for_job
from tests.factories import TINY_CONFIG

Hosts = tuple[list[Server], list[Process]]


@pytest.fixture
def hosts(start_server: StartServer, fresh_postgres_url: str, tmp_path: Path) -> Iterator[Hosts]:
    env = {"JEPA_DATABASE_URL": fresh_postgres_url, "JEPA_ARTIFACT_STORE": "database"}
    apis = [start_server(tmp_path / f"api-{i}", JEPA_EMBEDDED_WORKER="0", JEPA_BOOTSTRAP="0", **env) for i in range(2)]
    workers = [
        Process(["worker"], server_env(tmp_path / f"worker-{i}", **env), tmp_path / f"w{i}.log") for i in range(2)
    ]
    yield apis, workers
    for worker in workers:
        worker.stop()


def test_hosts_share_only_the_database(hosts: Hosts, tmp_path: Path) -> None:
    (a, b), workers = hosts
    walks = np.cumsum(np.random.default_rng(0).normal(size=(40, 16, 2)), axis=1).round(3)
    with a.client() as api_a, b.client() as api_b:
        dataset = api_a.post("/datasets", json={"name": "walks", "sequences": walks.tolist()}).json()
        assert list((tmp_path / "api-1").glob("datasets/*")) == []  # B never saw the upload
        stored = {"model": "shared", "dataset": {"id": dataset["id"]}, "config": TINY_CONFIG}
        toy = {
            "model": "toyish",
            "dataset": {"pattern": "mixed", "num_samples": 64, "seq_len": 12},
            "config": TINY_CONFIG,
        }
        job_ids = [api_a.post("/train", json=stored).json()["job_id"] for _ in range(2)]
        job_ids += [api_b.post("/train", json=toy).json()["job_id"] for _ in range(2)]
        done = [wait_for_job(api_b, job_id) for job_id in job_ids]
        assert [job["status"] for job in done] == ["succeeded"] * 4, [w.log()[-2000:] for w in workers]
        assert len({job["worker"] for job in done}) == 2, "both workers should have trained"

        # Trained on worker hosts, from a dataset uploaded to A: served by B, and by A.
        for job in done:
            model, version = job["model"], job["version"]
            for client in (api_b, api_a):
                assert client.get(f"/models/{model}/versions/{version}").json()["available"] is True
                body = {"model": model, "version": version, "sequences": walks[:3].tolist()}
                assert client.post("/encode", json=body).status_code == 200
            plot = api_b.get(f"/models/{model}/versions/{version}/plots/loss.png")
            assert plot.status_code == 200 and plot.content.startswith(b"\x89PNG")

        # A version deleted through B goes from the database and from B's disk; A stops serving it.
        gone = done[0]
        assert api_b.delete(f"/models/shared/versions/{gone['version']}").status_code == 204
        time.sleep(1.2)  # the resolve cache's TTL
        body = {"model": "shared", "version": gone["version"], "sequences": walks[:1].tolist()}
        assert api_a.post("/encode", json=body).status_code == 404
        assert not (tmp_path / "api-1" / "checkpoints" / "shared" / gone["id"]).exists()

    # No host's directory holds another's writes: each worker has only what it trained and fetched.
    for i, job in enumerate(done):
        trained_here = [
            w for w in range(2) if (tmp_path / f"worker-{w}" / "checkpoints" / job["model"] / job["id"]).exists()
        ]
        assert len(trained_here) <= 1, f"job {i} checkpoint on both workers"
