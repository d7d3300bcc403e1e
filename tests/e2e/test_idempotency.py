"""Idempotency-Key on POST /train and POST /datasets, over HTTP, on SQLite and PostgreSQL: a
retried request acts once, and concurrent retries through two API processes too."""

from __future__ import annotations

import io
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.e2e.servers import Server, StartServer
from tests.factories import TINY_CONFIG

QUIET = {"JEPA_EMBEDDED_WORKER": "0", "JEPA_BOOTSTRAP": "0"}  # jobs stay queued: nothing trains


def train_body(num_samples: int = 64) -> dict:
    dataset = {"pattern": "mixed", "num_samples": num_samples, "seq_len": 12, "seed": 0}
    return {"model": "idem", "dataset": dataset, "config": TINY_CONFIG}


def dataset_body(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"name": "walks", "sequences": rng.normal(size=(4, 12, 2)).round(3).tolist()}


@pytest.fixture
def servers(start_server: StartServer, database_url: str, tmp_path: Path) -> list[Server]:
    """Two API processes on one registry database."""
    return [start_server(tmp_path / f"data-{i}", JEPA_DATABASE_URL=database_url, **QUIET) for i in range(2)]


def test_a_retried_train_queues_one_job(servers: list[Server]) -> None:
    with servers[0].client() as client:
        headers = {"Idempotency-Key": "retry-1"}
        first = client.post("/train", json=train_body(), headers=headers)
        again = client.post("/train", json=train_body(), headers=headers)
        assert first.status_code == again.status_code == 202
        assert again.json() == first.json() and again.headers["Location"] == first.headers["Location"]
        assert "Idempotent-Replayed" not in first.headers and again.headers["Idempotent-Replayed"] == "true"
        assert [job["id"] for job in client.get("/jobs").json()] == [first.json()["job_id"]]

        other = client.post("/train", json=train_body(num_samples=65), headers=headers)
        assert other.status_code == 409 and other.json()["type"] == "conflict"
        assert "different request" in other.json()["detail"]

        fresh = client.post("/train", json=train_body(), headers={"Idempotency-Key": "retry-2"})
        assert fresh.status_code == 202 and fresh.json()["job_id"] != first.json()["job_id"]
        assert len(client.get("/jobs").json()) == 2


def test_concurrent_retries_through_two_processes_act_once(servers: list[Server]) -> None:
    headers = {"Idempotency-Key": "concurrent"}

    def post(i: int) -> httpx.Response:
        with servers[i % 2].client() as client:
            return client.post("/train", json=train_body(), headers=headers)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, range(8)))
    assert [a.status_code for a in answers] == [202] * 8, [a.text for a in answers]
    assert len({a.json()["job_id"] for a in answers}) == 1
    assert sum(a.headers.get("Idempotent-Replayed") == "true" for a in answers) == 7
    with servers[1].client() as client:
        assert len(client.get("/jobs").json()) == 1


def test_a_failed_request_spends_no_key(servers: list[Server]) -> None:
    with servers[0].client() as client:
        headers = {"Idempotency-Key": "after-a-404"}
        missing = {**train_body(), "dataset": {"kind": "stored", "id": "0" * 32}}
        assert client.post("/train", json=missing, headers=headers).status_code == 404
        assert client.post("/train", json=train_body(), headers=headers).status_code == 202


@pytest.mark.parametrize("key", ["", "x" * 256, "has space", "naïve"])
def test_a_malformed_key_is_refused(servers: list[Server], key: str) -> None:
    with servers[0].client() as client:
        response = client.post("/train", json=train_body(), headers={"Idempotency-Key": key.encode()})
        assert response.status_code == 422 and response.json()["type"] == "validation_error"
        assert client.get("/jobs").json() == []


def test_a_retried_upload_stores_one_dataset_whatever_its_form(servers: list[Server], tmp_path: Path) -> None:
    body = dataset_body()
    headers = {"Idempotency-Key": "upload-1"}
    with servers[0].client() as client:
        first = client.post("/datasets", json=body, headers=headers)
        assert first.status_code == 201
        # The same sequences again, as a .npy file this time: the same request.
        npy = io.BytesIO()
        np.save(npy, np.asarray(body["sequences"], dtype=np.float32))
        files = {"file": ("walks.npy", npy.getvalue())}
        again = client.post("/datasets", files=files, headers=headers)
        assert again.status_code == 201 and again.json() == first.json()
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.headers["Location"] == f"/datasets/{first.json()['id']}"

        other = client.post("/datasets", json=dataset_body(seed=1), headers=headers)
        assert other.status_code == 409 and other.json()["type"] == "conflict"
        assert [d["id"] for d in client.get("/datasets").json()] == [first.json()["id"]]

    def upload(i: int) -> httpx.Response:
        with servers[i % 2].client() as client:
            return client.post("/datasets", json=dataset_body(seed=2), headers={"Idempotency-Key": "upload-2"})

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(upload, range(6)))
    assert [a.status_code for a in answers] == [201] * 6, [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    with servers[1].client() as client:
        assert len(client.get("/datasets").json()) == 2
    # The losers claimed the key before writing anything: one file per dataset, in whichever
    # data directory its upload landed.
    files = [p for i in range(2) for p in (tmp_path / f"data-{i}" / "datasets").glob("*.safetensors")]
    assert len(files) == 2


def test_keys_expire(start_server: StartServer) -> None:
    server = start_server(JEPA_IDEMPOTENCY_TTL_S="1", **QUIET)
    with server.client() as client:
        headers = {"Idempotency-Key": "short-lived"}
        first = client.post("/train", json=train_body(), headers=headers).json()["job_id"]
        time.sleep(1.5)
        second = client.post("/train", json=train_body(), headers=headers)
        assert second.status_code == 202 and second.json()["job_id"] != first
        assert "Idempotent-Replayed" not in second.headers
