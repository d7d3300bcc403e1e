"""Start-up, separate workers, shutdown mid-job and PostgreSQL, with real processes."""

import signal
import socket
import time
from pathlib import Path

import httpx
from sqlalchemy.engine import make_url

from tests.e2e.servers import Process, StartServer, server_env, wait_for_job
from tests.factories import TINY_CONFIG


def test_first_start_is_not_ready_until_the_default_model_is_trained(start_server: StartServer, tmp_path: Path) -> None:
    data_dir = tmp_path / "shared"
    server = start_server(data_dir, JEPA_EMBEDDED_WORKER="0")
    with server.client() as client:
        response = client.get("/ready")
        assert response.status_code == 503 and "no version yet" in response.json()["detail"]
        assert client.post("/encode", json={"sequences": [[[0, 1]]]}).status_code == 404
        (job,) = client.get("/jobs").json()
        assert job["status"] == "queued" and job["model"] == "trajectories"

        # A separate worker process, sharing the database and data directory, trains it.
        worker = Process(["worker"], server_env(data_dir), tmp_path / "worker.log")
        try:
            assert wait_for_job(client, job["id"])["status"] == "succeeded", worker.log()
            ready = server.wait_for("/ready", 200, timeout=30).json()
            assert ready["version"] == 1
            assert client.post("/encode", json={"sequences": [[[0, 1]]]}).status_code == 200
            # host:pid of the separate worker process, not of the server
            assert client.get(f"/jobs/{job['id']}").json()["worker"] == f"{socket.gethostname()}:{worker.proc.pid}"
        finally:
            assert worker.stop(signal.SIGTERM) == 0


def test_a_job_interrupted_by_shutdown_is_finished_after_restart(start_server: StartServer, tmp_path: Path) -> None:
    data_dir = tmp_path / "shared"
    first = start_server(data_dir)
    first.wait_for("/ready")
    with first.client() as client:
        # Long enough (about 3 s here) that the shutdown, once its training process is under
        # way, finds it still training.
        body = {"model": "long", "dataset": {"num_samples": 1000}, "config": {"epochs": 20}}
        job_id = client.post("/train", json=body).json()["job_id"]
        while client.get(f"/jobs/{job_id}").json()["progress"]["epoch"] < 1:
            time.sleep(0.05)
    # uvicorn re-raises the SIGTERM it handled once shutdown is complete.
    assert first.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    assert "re-queued" in first.log() and "Application shutdown complete" in first.log()

    second = start_server(data_dir)
    with second.client() as client:
        job = wait_for_job(client, job_id)
        assert job["status"] == "succeeded" and job["attempts"] == 2 and job["version"] == 1
        (model,) = [m for m in client.get("/models").json() if m["name"] == "long"]
        assert [v["version"] for v in model["versions"]] == [1]  # the interrupted attempt left nothing


def test_the_whole_flow_on_postgresql(start_server: StartServer, fresh_postgres_url: str) -> None:
    # Trust auth ignores the password, which lets the test check that it never reaches the logs.
    url = make_url(fresh_postgres_url).set(password="s3cret-pw").render_as_string(hide_password=False)
    server = start_server(JEPA_DATABASE_URL=url)
    server.wait_for("/ready")
    with server.client() as client:
        train = {"model": "pg", "dataset": {"num_samples": 64, "seq_len": 12}, "config": TINY_CONFIG}
        job = wait_for_job(client, client.post("/train", json=train).json()["job_id"])
        assert job["status"] == "succeeded" and job["version"] == 1
        body = client.post("/encode", json={"model": "pg", "version": 1, "sequences": [[[0, 1], [2, 3]]]}).json()
        assert body["version"] == 1 and len(body["embeddings"][0]) == TINY_CONFIG["repr_dim"]
        assert httpx.get(f"{server.base_url}/models/pg/versions/1").json()["config"]["preset"] == "trajectory"
    server.stop()
    assert "s3cret-pw" not in server.log() and "postgresql+psycopg://postgres:***@" in server.log()


def test_a_job_whose_server_was_killed_is_rerun_after_restart(start_server: StartServer, tmp_path: Path) -> None:
    data_dir = tmp_path / "shared"
    fast_recovery = {"JEPA_JOB_STALE_S": "3"}
    first = start_server(data_dir, **fast_recovery)
    first.wait_for("/ready")
    with first.client() as client:
        body = {"model": "killed", "dataset": {"num_samples": 1000}, "config": {"epochs": 12}}
        job_id = client.post("/train", json=body).json()["job_id"]
        while client.get(f"/jobs/{job_id}").json()["progress"]["epoch"] < 1:
            time.sleep(0.05)
    first.stop(signal.SIGKILL)  # no shutdown at all: the job is left `running` with a stale heartbeat
    assert not list((data_dir / "checkpoints").glob("killed/*")), "a half-trained checkpoint was written"

    second = start_server(data_dir, **fast_recovery)
    with second.client() as client:
        job = wait_for_job(client, job_id)
        assert job["status"] == "succeeded" and job["attempts"] == 2 and job["version"] == 1
        assert "stopped heartbeating during attempt 1" not in (job["error"] or "")  # cleared on success
    assert len(list((data_dir / "checkpoints").glob("killed/*"))) == 1
