"""Deleting versions, jobs and datasets over HTTP, retention of finished jobs, and `jepa gc`,
against real servers.

Two servers are shared by the module's tests: `trainer` (an embedded worker trains jobs) and
`quiet` (nothing trains, writes need the API key). Each test uses its own model and dataset
names, and counts only what is its own. Retention, which expires every finished job, has a
server of its own."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.client import Conflict, JEPAClient
from tests.e2e.conftest import serve
from tests.e2e.servers import Server, StartServer, run_jepa, server_env, wait_for_job
from tests.factories import TINY_CONFIG

QUIET = {"JEPA_EMBEDDED_WORKER": "0", "JEPA_BOOTSTRAP": "0"}  # jobs stay queued: nothing trains
API_KEY = "s3cret"
TRAINER_DEFAULT_MODEL = "del-default"  # only test_the_default_models_only_version... trains it
QUIET_DEFAULT_MODEL = "del-quiet"  # never trained; only that test queues a job for it


def toy_job(model: str) -> dict:
    return {"model": model, "dataset": {"pattern": "mixed", "num_samples": 64, "seq_len": 12}, "config": TINY_CONFIG}


def train_version(client: httpx.Client, model: str) -> int:
    job = wait_for_job(client, client.post("/train", json=toy_job(model)).json()["job_id"])
    assert job["status"] == "succeeded", job
    return job["version"]


def data_dir_of(server: Server) -> Path:
    return Path(server.env["JEPA_DATA_DIR"])


def module_server(tmp_path_factory: pytest.TempPathFactory, name: str, **env: str) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp(name)
    server = serve(tmp / "data", tmp, **env)
    try:
        server.wait_for("/health")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def trainer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose embedded worker trains the jobs it is given; no first-start training."""
    yield from module_server(tmp_path_factory, "trainer", JEPA_BOOTSTRAP="0", JEPA_DEFAULT_MODEL=TRAINER_DEFAULT_MODEL)


@pytest.fixture(scope="module")
def quiet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server on which jobs stay queued, and whose writes need the API key."""
    yield from module_server(
        tmp_path_factory, "quiet", JEPA_API_KEY=API_KEY, JEPA_DEFAULT_MODEL=QUIET_DEFAULT_MODEL, **QUIET
    )


def with_key(server: Server) -> httpx.Client:
    client = server.client()
    client.headers["Authorization"] = f"Bearer {API_KEY}"
    return client


def model_named(client: httpx.Client, name: str) -> dict:
    (model,) = (m for m in client.get("/models").json() if m["name"] == name)
    return model


def jobs_of(client: httpx.Client, model: str) -> list[dict]:
    """The model's jobs (GET /jobs filters by status, not by model)."""
    return [job for job in client.get("/jobs", params={"limit": 1000}).json() if job["model"] == model]


def test_a_version_goes_with_its_checkpoint_unless_an_alias_points_at_it(trainer: Server) -> None:
    model = "del-alias"
    with trainer.client() as client:
        first, second = train_version(client, model), train_version(client, model)
        checkpoints = data_dir_of(trainer) / "checkpoints" / model
        assert len(list(checkpoints.iterdir())) == 2
        assert client.put(f"/models/{model}/aliases/production", json={"version": first}).status_code == 200

        refused = client.delete(f"/models/{model}/versions/{first}")
        assert refused.status_code == 409 and refused.json()["type"] == "conflict"
        assert "production" in refused.json()["detail"]

        assert client.delete(f"/models/{model}/versions/{second}").status_code == 204
        assert client.get(f"/models/{model}/versions/{second}").status_code == 404
        assert client.delete(f"/models/{model}/versions/{second}").status_code == 404
        assert [v["version"] for v in model_named(client, model)["versions"]] == [first]
        assert len(list(checkpoints.iterdir())) == 1  # the deleted version's checkpoint directory is gone
        # Within the resolve cache's TTL every request answers from the version that is left.
        time.sleep(1.2)
        encode = {"model": model, "sequences": [[[0, 1]]]}
        assert client.post("/encode", json={**encode, "version": second}).status_code == 404
        assert client.post("/encode", json=encode).status_code == 200

        assert client.delete(f"/models/{model}/aliases/production").status_code == 204
        assert client.delete(f"/models/{model}/versions/{first}").status_code == 204
        assert list(checkpoints.iterdir()) == []


def test_only_a_finished_job_can_be_deleted(quiet: Server) -> None:
    model = "del-job"
    with with_key(quiet) as client:
        job_id = client.post("/train", json=toy_job(model)).json()["job_id"]
        refused = client.delete(f"/jobs/{job_id}")
        assert refused.status_code == 409 and "cancel it first" in refused.json()["detail"]
        assert client.post(f"/jobs/{job_id}/cancel").json()["status"] == "cancelled"
        assert client.delete(f"/jobs/{job_id}").status_code == 204
        assert client.get(f"/jobs/{job_id}").status_code == 404
        assert client.get(f"/jobs/{job_id}/metrics").status_code == 404
        assert jobs_of(client, model) == []


def test_a_dataset_in_use_stays_until_its_job_is_done(quiet: Server) -> None:
    datasets_dir = data_dir_of(quiet) / "datasets"
    before = set(datasets_dir.iterdir()) if datasets_dir.exists() else set()
    with with_key(quiet) as client:
        walks = np.random.default_rng(0).normal(size=(32, 12, 2)).round(3).tolist()
        dataset = client.post("/datasets", json={"name": "walks-in-use", "sequences": walks}).json()
        job = {**toy_job("del-dataset"), "dataset": {"id": dataset["id"]}}
        job_id = client.post("/train", json=job).json()["job_id"]
        (stored,) = set(datasets_dir.iterdir()) - before  # the upload wrote one file

        refused = client.delete(f"/datasets/{dataset['id']}")
        assert refused.status_code == 409 and job_id in refused.json()["detail"]
        assert stored.exists()

        client.post(f"/jobs/{job_id}/cancel")
        assert client.delete(f"/datasets/{dataset['id']}").status_code == 204
        assert client.get(f"/datasets/{dataset['id']}").status_code == 404
        assert not stored.exists()
        assert client.delete(f"/datasets/{dataset['id']}").status_code == 404


def test_deletes_need_the_api_key(quiet: Server) -> None:
    with quiet.client() as client:  # no key
        for path in ("/models/m/versions/1", "/jobs/" + "0" * 32, "/datasets/" + "0" * 32):
            response = client.delete(path)
            assert response.status_code == 401 and response.json()["type"] == "unauthorized", path


def test_finished_jobs_expire_and_their_versions_stay(start_server: StartServer) -> None:
    # A server of its own: it expires every finished job, which the shared ones' tests read.
    # 0.00002 days is 1.7 s; stale recovery, which expires them, runs every JEPA_JOB_STALE_S / 4.
    server = start_server(JEPA_BOOTSTRAP="0", JEPA_RETAIN_JOBS_DAYS="0.00002", JEPA_JOB_STALE_S="2")
    with server.client() as client:
        version = train_version(client, "del")
        deadline = time.monotonic() + 30
        while client.get("/jobs").json():
            assert time.monotonic() < deadline, "the finished job was never expired"
            time.sleep(0.5)
        assert client.get(f"/models/del/versions/{version}").json()["job"] is None
        assert client.post("/encode", json={"model": "del", "sequences": [[[0, 1]]]}).status_code == 200


def test_gc_removes_old_orphans_only(trainer: Server) -> None:
    # gc looks at the whole data dir: the other tests on `trainer` leave no orphaned artifact
    # (each deleted version's checkpoint goes with it, which they check).
    model = "del-gc"
    data_dir = data_dir_of(trainer)
    with trainer.client() as client:
        version = train_version(client, model)
    (kept,) = (data_dir / "checkpoints" / model).iterdir()
    old, young = data_dir / "checkpoints" / model / "crashed-job", data_dir / "datasets" / "young-orphan.safetensors"
    old.mkdir()
    (old / "model.safetensors").write_bytes(b"x" * 1_000_000)
    hour_ago = time.time() - 7200
    os.utime(old / "model.safetensors", (hour_ago, hour_ago))
    young.parent.mkdir(exist_ok=True)
    young.write_bytes(b"y" * 10)

    def gc(*flags: str) -> str:
        env = server_env(data_dir)
        run = run_jepa(["gc", *flags], env)
        assert run.returncode == 0, run.stderr
        return " ".join(run.stdout.split())

    assert "would remove 1 orphaned artifacts, 1.0 MB; 1 younger than 3600 s kept" in gc("--dry-run")
    assert old.exists()
    assert "removed 1 orphaned artifacts, 1.0 MB; 1 younger than 3600 s kept" in gc()
    assert not old.exists() and young.exists() and kept.exists()
    with trainer.client() as client:
        assert client.get(f"/models/{model}/versions/{version}").json()["available"] is True


def test_the_default_models_only_version_is_kept_unless_forced_and_ready_says_why(
    trainer: Server, quiet: Server
) -> None:
    """Issue 26: deleting it left /ready at 503 for good, saying a first job "may be running"
    while nothing was queued."""
    model = TRAINER_DEFAULT_MODEL
    with trainer.client() as client:
        only = train_version(client, model)
        refused = client.delete(f"/models/{model}/versions/{only}")
        assert refused.status_code == 409 and "only version" in refused.json()["detail"]
        assert "force=true" in refused.json()["detail"]
        assert client.get("/ready").status_code == 200
        with JEPAClient(trainer.base_url) as jepa:  # the client's way: Conflict, then force
            with pytest.raises(Conflict, match="only version"):
                jepa.delete_version(model, only)
            jepa.delete_version(model, only, force=True)
        ready = trainer.wait_for("/ready", 503, timeout=30)  # replicas resolve anew within JEPA_RESOLVE_TTL_S
        assert "no job is queued to train one" in ready.json()["detail"]
        assert "JEPA_DEFAULT_MODEL" in ready.json()["detail"]
        second = train_version(client, model)  # another model's only version goes like any other
        assert client.get("/ready").json()["version"] == second
        other = train_version(client, "del-other")
        assert client.delete(f"/models/del-other/versions/{other}").status_code == 204
    with with_key(quiet) as client:
        job = client.post("/train", json=toy_job(QUIET_DEFAULT_MODEL)).json()["job_id"]
        ready = client.get("/ready")
        assert ready.status_code == 503 and f"job {job}, queued or running, trains it" in ready.json()["detail"]
        client.post(f"/jobs/{job}/cancel")  # the default model's job stays no longer than this test
