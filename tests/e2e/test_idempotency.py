"""Idempotency-Key on POST /train and POST /datasets, over HTTP, on SQLite and PostgreSQL: a
retried request acts once, and concurrent retries through two API processes too.

The two API processes on each database are shared by the module's tests (`servers`), so each
test uses its own model name, dataset name and keys, and counts only what is its own."""

from __future__ import annotations

import contextlib
import hashlib
import io
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import DATABASES
from tests.e2e.conftest import serve
from tests.e2e.servers import Server, StartServer
from tests.factories import TINY_CONFIG
from tests.postgres import throwaway_database

QUIET = {"JEPA_EMBEDDED_WORKER": "0", "JEPA_BOOTSTRAP": "0"}  # jobs stay queued: nothing trains


def train_body(model: str, num_samples: int = 64) -> dict:
    dataset = {"pattern": "mixed", "num_samples": num_samples, "seq_len": 12, "seed": 0}
    return {"model": model, "dataset": dataset, "config": TINY_CONFIG}


def dataset_body(name: str, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"name": name, "sequences": rng.normal(size=(4, 12, 2)).round(3).tolist()}


def jobs_of(client: httpx.Client, model: str) -> list[str]:
    """The ids of the model's jobs, newest first (GET /jobs filters by status, not by model)."""
    return [job["id"] for job in client.get("/jobs", params={"limit": 1000}).json() if job["model"] == model]


def datasets_named(client: httpx.Client, name: str) -> list[str]:
    """The ids of the datasets of this name, newest first."""
    return [d["id"] for d in client.get("/datasets", params={"limit": 1000}).json() if d["name"] == name]


def dataset_files(servers: list[Server]) -> set[Path]:
    """Every dataset file in the servers' data directories."""
    return {p for s in servers for p in (Path(s.env["JEPA_DATA_DIR"]) / "datasets").glob("*.safetensors")}


@pytest.fixture(scope="module", params=DATABASES)
def servers(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    """Two API processes on one registry database, shared by the module's tests on that database."""
    tmp = tmp_path_factory.mktemp(f"idempotency-{request.param}")
    sqlite = contextlib.nullcontext(f"sqlite:///{tmp / 'jepa.db'}")
    with sqlite if request.param == "sqlite" else throwaway_database("idem_") as url:
        started: list[Server] = []
        try:
            for i in range(2):
                started.append(serve(tmp / f"data-{i}", tmp, JEPA_DATABASE_URL=url, **QUIET))
                started[-1].wait_for("/health")
            yield started
        finally:  # before the database is dropped
            for server in started:
                server.stop()


def test_a_retried_train_queues_one_job(servers: list[Server]) -> None:
    model = "idem-retried"
    with servers[0].client() as client:
        headers = {"Idempotency-Key": "retry-1"}
        first = client.post("/train", json=train_body(model), headers=headers)
        again = client.post("/train", json=train_body(model), headers=headers)
        assert first.status_code == again.status_code == 202
        assert again.json() == first.json() and again.headers["Location"] == first.headers["Location"]
        assert "Idempotent-Replayed" not in first.headers and again.headers["Idempotent-Replayed"] == "true"
        assert jobs_of(client, model) == [first.json()["job_id"]]

        other = client.post("/train", json=train_body(model, num_samples=65), headers=headers)
        assert other.status_code == 409 and other.json()["type"] == "conflict"
        assert "different request" in other.json()["detail"]

        fresh = client.post("/train", json=train_body(model), headers={"Idempotency-Key": "retry-2"})
        assert fresh.status_code == 202 and fresh.json()["job_id"] != first.json()["job_id"]
        assert len(jobs_of(client, model)) == 2


def test_concurrent_retries_through_two_processes_act_once(servers: list[Server]) -> None:
    model = "idem-concurrent"
    headers = {"Idempotency-Key": "concurrent"}

    def post(i: int) -> httpx.Response:
        with servers[i % 2].client() as client:
            return client.post("/train", json=train_body(model), headers=headers)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, range(8)))
    assert [a.status_code for a in answers] == [202] * 8, [a.text for a in answers]
    assert len({a.json()["job_id"] for a in answers}) == 1
    assert sum(a.headers.get("Idempotent-Replayed") == "true" for a in answers) == 7
    with servers[1].client() as client:
        assert len(jobs_of(client, model)) == 1


def test_a_failed_request_spends_no_key(servers: list[Server]) -> None:
    model = "idem-after-a-404"
    with servers[0].client() as client:
        headers = {"Idempotency-Key": "after-a-404"}
        missing = {**train_body(model), "dataset": {"kind": "stored", "id": "0" * 32}}
        assert client.post("/train", json=missing, headers=headers).status_code == 404
        assert client.post("/train", json=train_body(model), headers=headers).status_code == 202


@pytest.mark.parametrize("key", ["", "x" * 256, "has space", "naïve"])
def test_a_malformed_key_is_refused(servers: list[Server], key: str) -> None:
    model = f"idem-malformed-{hashlib.sha256(key.encode()).hexdigest()[:12]}"  # this request's own
    with servers[0].client() as client:
        response = client.post("/train", json=train_body(model), headers={"Idempotency-Key": key.encode()})
        assert response.status_code == 422 and response.json()["type"] == "validation_error"
        assert jobs_of(client, model) == []


def test_a_retried_upload_stores_one_dataset_whatever_its_form(servers: list[Server]) -> None:
    name = "walks-retried"
    files_before = dataset_files(servers)
    body = dataset_body(name)
    headers = {"Idempotency-Key": "upload-1"}
    with servers[0].client() as client:
        first = client.post("/datasets", json=body, headers=headers)
        assert first.status_code == 201
        # The same sequences again, as a .npy file this time: the same request.
        npy = io.BytesIO()
        np.save(npy, np.asarray(body["sequences"], dtype=np.float32))
        files = {"file": (f"{name}.npy", npy.getvalue())}
        again = client.post("/datasets", files=files, headers=headers)
        assert again.status_code == 201 and again.json() == first.json()
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.headers["Location"] == f"/datasets/{first.json()['id']}"

        other = client.post("/datasets", json=dataset_body(name, seed=1), headers=headers)
        assert other.status_code == 409 and other.json()["type"] == "conflict"
        assert datasets_named(client, name) == [first.json()["id"]]

    def upload(i: int) -> httpx.Response:
        with servers[i % 2].client() as client:
            return client.post("/datasets", json=dataset_body(name, seed=2), headers={"Idempotency-Key": "upload-2"})

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(upload, range(6)))
    assert [a.status_code for a in answers] == [201] * 6, [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    with servers[1].client() as client:
        stored = datasets_named(client, name)
        assert len(stored) == 2
    # The losers claimed the key before writing anything: this test's uploads left one file per
    # dataset, in whichever data directory its upload landed, and no other.
    assert sorted(p.stem for p in dataset_files(servers) - files_before) == sorted(stored)


def test_keys_expire(start_server: StartServer) -> None:
    server = start_server(JEPA_IDEMPOTENCY_TTL_S="1", **QUIET)
    with server.client() as client:
        headers = {"Idempotency-Key": "short-lived"}
        first = client.post("/train", json=train_body("idem"), headers=headers).json()["job_id"]
        time.sleep(1.5)
        second = client.post("/train", json=train_body("idem"), headers=headers)
        assert second.status_code == 202 and second.json()["job_id"] != first
        assert "Idempotent-Replayed" not in second.headers
