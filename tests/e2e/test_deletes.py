"""Deleting versions, jobs and datasets over HTTP, retention of finished jobs, and `jepa gc`,
against real servers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.client import Conflict, JEPAClient
from tests.e2e.servers import StartServer, server_env, wait_for_job
from tests.factories import TINY_CONFIG

QUIET = {"JEPA_EMBEDDED_WORKER": "0", "JEPA_BOOTSTRAP": "0"}  # jobs stay queued: nothing trains


def toy_job(model: str = "del") -> dict:
    return {"model": model, "dataset": {"pattern": "mixed", "num_samples": 64, "seq_len": 12}, "config": TINY_CONFIG}


def train_version(client: httpx.Client, model: str = "del") -> int:
    job = wait_for_job(client, client.post("/train", json=toy_job(model)).json()["job_id"])
    assert job["status"] == "succeeded", job
    return job["version"]


def test_a_version_goes_with_its_checkpoint_unless_an_alias_points_at_it(
    start_server: StartServer, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    server = start_server(data_dir, JEPA_BOOTSTRAP="0")
    with server.client() as client:
        first, second = train_version(client), train_version(client)
        checkpoints = data_dir / "checkpoints" / "del"
        assert len(list(checkpoints.iterdir())) == 2
        assert client.put("/models/del/aliases/production", json={"version": first}).status_code == 200

        refused = client.delete(f"/models/del/versions/{first}")
        assert refused.status_code == 409 and refused.json()["type"] == "conflict"
        assert "production" in refused.json()["detail"]

        assert client.delete(f"/models/del/versions/{second}").status_code == 204
        assert client.get(f"/models/del/versions/{second}").status_code == 404
        assert client.delete(f"/models/del/versions/{second}").status_code == 404
        assert [v["version"] for v in client.get("/models").json()[0]["versions"]] == [first]
        assert len(list(checkpoints.iterdir())) == 1  # the deleted version's checkpoint directory is gone
        # Within the resolve cache's TTL every request answers from the version that is left.
        time.sleep(1.2)
        assert (
            client.post("/encode", json={"model": "del", "version": second, "sequences": [[[0, 1]]]}).status_code == 404
        )
        assert client.post("/encode", json={"model": "del", "sequences": [[[0, 1]]]}).status_code == 200

        assert client.delete("/models/del/aliases/production").status_code == 204
        assert client.delete(f"/models/del/versions/{first}").status_code == 204
        assert list(checkpoints.iterdir()) == []


def test_only_a_finished_job_can_be_deleted(start_server: StartServer) -> None:
    server = start_server(**QUIET)
    with server.client() as client:
        job_id = client.post("/train", json=toy_job()).json()["job_id"]
        refused = client.delete(f"/jobs/{job_id}")
        assert refused.status_code == 409 and "cancel it first" in refused.json()["detail"]
        assert client.post(f"/jobs/{job_id}/cancel").json()["status"] == "cancelled"
        assert client.delete(f"/jobs/{job_id}").status_code == 204
        assert client.get(f"/jobs/{job_id}").status_code == 404
        assert client.get(f"/jobs/{job_id}/metrics").status_code == 404
        assert client.get("/jobs").json() == []


def test_a_dataset_in_use_stays_until_its_job_is_done(start_server: StartServer, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = start_server(data_dir, **QUIET)
    with server.client() as client:
        walks = np.random.default_rng(0).normal(size=(32, 12, 2)).round(3).tolist()
        dataset = client.post("/datasets", json={"name": "walks", "sequences": walks}).json()
        job_id = client.post("/train", json={**toy_job(), "dataset": {"id": dataset["id"]}}).json()["job_id"]
        (stored,) = (data_dir / "datasets").iterdir()

        refused = client.delete(f"/datasets/{dataset['id']}")
        assert refused.status_code == 409 and job_id in refused.json()["detail"]
        assert stored.exists()

        client.post(f"/jobs/{job_id}/cancel")
        assert client.delete(f"/datasets/{dataset['id']}").status_code == 204
        assert client.get(f"/datasets/{dataset['id']}").status_code == 404
        assert not stored.exists()
        assert client.delete(f"/datasets/{dataset['id']}").status_code == 404


def test_deletes_need_the_api_key(start_server: StartServer) -> None:
    server = start_server(JEPA_API_KEY="s3cret", **QUIET)
    with server.client() as client:
        for path in ("/models/m/versions/1", "/jobs/" + "0" * 32, "/datasets/" + "0" * 32):
            response = client.delete(path)
            assert response.status_code == 401 and response.json()["type"] == "unauthorized", path


def test_finished_jobs_expire_and_their_versions_stay(start_server: StartServer) -> None:
    # 0.00002 days is 1.7 s; stale recovery, which expires them, runs every JEPA_JOB_STALE_S / 4.
    server = start_server(JEPA_BOOTSTRAP="0", JEPA_RETAIN_JOBS_DAYS="0.00002", JEPA_JOB_STALE_S="2")
    with server.client() as client:
        version = train_version(client)
        deadline = time.monotonic() + 30
        while client.get("/jobs").json():
            assert time.monotonic() < deadline, "the finished job was never expired"
            time.sleep(0.5)
        assert client.get(f"/models/del/versions/{version}").json()["job"] is None
        assert client.post("/encode", json={"model": "del", "sequences": [[[0, 1]]]}).status_code == 200


def test_gc_removes_old_orphans_only(start_server: StartServer, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = start_server(data_dir, JEPA_BOOTSTRAP="0")
    with server.client() as client:
        version = train_version(client)
    (kept,) = (data_dir / "checkpoints" / "del").iterdir()
    old, young = data_dir / "checkpoints" / "del" / "crashed-job", data_dir / "datasets" / "young-orphan.safetensors"
    old.mkdir()
    (old / "model.safetensors").write_bytes(b"x" * 1_000_000)
    hour_ago = time.time() - 7200
    os.utime(old / "model.safetensors", (hour_ago, hour_ago))
    young.parent.mkdir(exist_ok=True)
    young.write_bytes(b"y" * 10)

    def gc(*flags: str) -> str:
        env = server_env(data_dir)
        run = subprocess.run(
            [sys.executable, "-m", "service.cli", "gc", *flags], env=env, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr
        return " ".join(run.stdout.split())

    assert "would remove 1 orphaned artifacts, 1.0 MB; 1 younger than 3600 s kept" in gc("--dry-run")
    assert old.exists()
    assert "removed 1 orphaned artifacts, 1.0 MB; 1 younger than 3600 s kept" in gc()
    assert not old.exists() and young.exists() and kept.exists()
    with server.client() as client:
        assert client.get(f"/models/del/versions/{version}").json()["available"] is True


def test_the_default_models_only_version_is_kept_unless_forced_and_ready_says_why(start_server: StartServer) -> None:
    """Issue 26: deleting it left /ready at 503 for good, saying a first job "may be running"
    while nothing was queued."""
    server = start_server(JEPA_BOOTSTRAP="0", JEPA_DEFAULT_MODEL="del")
    with server.client() as client:
        only = train_version(client)
        refused = client.delete(f"/models/del/versions/{only}")
        assert refused.status_code == 409 and "only version" in refused.json()["detail"]
        assert "force=true" in refused.json()["detail"]
        assert client.get("/ready").status_code == 200
        with JEPAClient(server.base_url) as jepa:  # the client's way: Conflict, then force
            with pytest.raises(Conflict, match="only version"):
                jepa.delete_version("del", only)
            jepa.delete_version("del", only, force=True)
        ready = server.wait_for("/ready", 503, timeout=30)  # replicas resolve anew within JEPA_RESOLVE_TTL_S
        assert "no job is queued to train one" in ready.json()["detail"]
        assert "JEPA_DEFAULT_MODEL" in ready.json()["detail"]
        second = train_version(client)  # another model's only version goes like any other
        assert client.get("/ready").json()["version"] == second
        other = train_version(client, "other")
        assert client.delete(f"/models/other/versions/{other}").status_code == 204
    quiet = start_server(JEPA_DEFAULT_MODEL="del", **QUIET)
    with quiet.client() as client:
        job = client.post("/train", json=toy_job()).json()["job_id"]
        ready = client.get("/ready")
        assert ready.status_code == 503 and f"job {job}, queued or running, trains it" in ready.json()["detail"]
