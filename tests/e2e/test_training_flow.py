"""Training through the API: POST /train -> job -> new version -> serve it."""

import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.e2e.servers import Server, StartServer, training_processes, wait_for_job
from tests.factories import TINY_CONFIG
from training.execution.forkserver import TRAINING_PROCESS_NAME

TINY_TRAIN = {"dataset": {"pattern": "circle", "num_samples": 64, "seq_len": 12, "seed": 1}, "config": TINY_CONFIG}


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_train_then_serve_the_new_version(client: httpx.Client) -> None:
    response = client.post("/train", json={"model": "circles", **TINY_TRAIN})
    assert response.status_code == 202
    job_id = response.json()["job_id"]
    assert response.headers["location"] == f"/jobs/{job_id}"
    assert response.json()["status"] == "queued"

    job = wait_for_job(client, job_id)
    assert job["status"] == "succeeded", job
    assert job["progress"]["epoch"] == job["progress"]["epochs"] == 2
    assert job["version"] == 1 and job["metrics"]["final_loss"] == job["progress"]["loss"]
    assert set(job["progress"]["metrics"]) == {"retrieval", "embedding_std", "rankme"}  # per-epoch monitor
    assert 0 <= job["metrics"]["retrieval"] <= 1 and job["metrics"]["held_out_sequences"] == 1024
    assert job["started_at"] <= job["finished_at"]

    encoded = client.post("/encode", json={"model": "circles", "version": 1, "sequences": [[[0, 1], [1, 0]]]})
    assert encoded.status_code == 200 and encoded.json()["dim"] == TINY_CONFIG["repr_dim"]

    second = wait_for_job(client, client.post("/train", json={"model": "circles", **TINY_TRAIN}).json()["job_id"])
    assert second["version"] == 2
    latest = client.post("/encode", json={"model": "circles", "sequences": [[[0, 1], [1, 0]]]}).json()
    assert latest["version"] == 2
    assert client.get("/models/circles/versions/2").json()["job"] == second["id"]


def test_the_default_model_gets_new_versions_too(start_server: StartServer) -> None:
    # A server of its own: the suite's shared one keeps its default model at version 1, which
    # other files' tests assert, whichever order the files run in.
    server = start_server(trained=True)
    with server.client() as client:
        job = wait_for_job(client, client.post("/train", json={"config": {"epochs": 1}}).json()["job_id"])
        assert job["model"] == "trajectories" and job["status"] == "succeeded" and job["version"] == 2
        body = client.post("/encode", json={"version": job["version"], "sequences": [[[0, 1]]]}).json()
    assert body["version"] == job["version"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (
            {"dataset": {"seq_len": 10}, "config": {"context_len": 8, "target_len": 4}},
            "exceeds the shortest sequence's length",
        ),
        ({"config": {"epochs": 0}}, "greater than or equal to 1"),
        ({"config": {"epochs": 10**9}}, "less than or equal to"),
        ({"config": {"hidden_dim": 10**6}}, "less than or equal to"),
        ({"config": {"lr": "fast"}}, "valid number"),
        ({"config": {"preset": "magic"}}, "unknown preset"),
        ({"config": {"dropout": 0.1}}, "Extra inputs"),
        ({"dataset": {"pattern": "spiral"}}, "'circle', 'linear' or 'mixed'"),
        ({"model": "../etc"}, "pattern"),
    ],
)
def test_configs_that_cannot_work_are_refused(client: httpx.Client, body: dict, needle: str) -> None:
    before = len(client.get("/jobs").json())
    response = client.post("/train", json=body)
    assert response.status_code == 422
    assert needle in str(response.json()["detail"])
    assert len(client.get("/jobs").json()) == before  # nothing queued


def test_training_runs_in_another_process_and_serving_goes_on(client: httpx.Client, server: Server) -> None:
    body = {"model": "busy", "dataset": {"num_samples": 1000}, "config": {"epochs": 15}}
    job_id = client.post("/train", json=body).json()["job_id"]
    deadline = time.monotonic() + 60
    while not (children := training_processes(server.proc.pid)):
        assert time.monotonic() < deadline and client.get(f"/jobs/{job_id}").json()["status"] in ("queued", "running")
        time.sleep(0.05)
    (child,) = children
    # Forked by the server's fork server, not started as a fresh interpreter: it skipped the import.
    fork_server = parent_pid(child)
    assert fork_server != server.proc.pid and parent_pid(fork_server) == server.proc.pid
    assert Path(f"/proc/{child}/comm").read_text().strip() == TRAINING_PROCESS_NAME

    served = 0
    sequences = np.random.default_rng(0).normal(size=(32, 20, 2)).tolist()
    while client.get(f"/jobs/{job_id}").json()["status"] == "running":
        response = client.post("/encode", json={"sequences": sequences})
        assert response.status_code == 200
        served += 1
    assert served >= 5, "the API answered too few requests while a job trained"
    job = wait_for_job(client, job_id)
    assert job["status"] == "succeeded"
