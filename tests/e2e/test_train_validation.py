"""POST /train refuses, with a 422 before anything is queued, every config that once got a 202 and
then failed in the worker, and the dataset fields that only the server may set."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from tests.e2e.servers import Server, free_port, server_env

TOY = {"num_samples": 64, "seq_len": 20, "seed": 0}


@pytest.fixture(scope="module")
def local_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose worker would train on its own host (JEPA_EXECUTOR=local), with no worker
    running: whatever it accepts stays queued, so a 202 here is a job that would have run."""
    tmp = tmp_path_factory.mktemp("validation")
    port = free_port()
    env = server_env(tmp / "data", JEPA_BOOTSTRAP="0", JEPA_EMBEDDED_WORKER="0", JEPA_EXECUTOR="local")
    server = Server(
        args=["serve", "--host", "127.0.0.1", "--port", str(port)], env=env, log_path=tmp / "server.log", port=port
    )
    try:
        server.wait_for("/health")
        yield server
    finally:
        server.stop()


@pytest.fixture
def client(local_server: Server) -> Iterator[httpx.Client]:
    with local_server.client() as client:
        yield client


def detail(response: httpx.Response) -> str:
    body = response.json()["detail"]
    return body if isinstance(body, str) else " ".join(f"{error['loc']}: {error['msg']}" for error in body)


@pytest.mark.parametrize(
    ("config", "says"),
    [
        ({"workers": 2}, "JEPA_EXECUTOR=ray"),
        ({"max_offset": 4096}, "predictor_offsets"),
        ({"batch_size": 1, "output_norm": "batch"}, "batch_size"),
        ({"loss": "infonce", "temperature": 1e-300}, "temperature"),
        ({"steps": True}, "integer"),
        ({"epochs": True}, "integer"),
        ({"lr": True}, "number"),
    ],
    ids=[
        "workers on local",
        "max_offset past the predictor",
        "batch norm of one row",
        "tiny temperature",
        "steps true",
        "epochs true",
        "lr true",
    ],
)
def test_a_config_that_would_fail_in_the_worker_gets_a_422(client: httpx.Client, config: dict, says: str) -> None:
    response = client.post("/train", json={"model": "refused", "dataset": TOY, "config": config})
    assert response.status_code == 422, response.text
    assert response.json()["type"] == "validation_error"
    assert says in detail(response), detail(response)
    assert all(job["model"] != "refused" for job in client.get("/jobs").json())  # nothing was queued


def upload(client: httpx.Client, steps: int) -> dict[str, Any]:
    walks = np.cumsum(np.random.default_rng(0).normal(size=(8, steps, 2)), axis=1).round(3)
    response = client.post("/datasets", json={"name": f"walks{steps}", "sequences": walks.tolist()})
    assert response.status_code == 201, response.text
    return response.json()


@pytest.mark.parametrize("field", ["min_len", "max_len", "input_dim", "num_sequences"])
def test_dataset_fields_the_server_sets_are_refused_when_a_client_sends_them(client: httpx.Client, field: str) -> None:
    dataset = upload(client, 100)
    config = {"context_len": 90, "target_len": 20}  # 110 steps: more than the dataset's 100
    honest = client.post("/train", json={"dataset": {"kind": "stored", "id": dataset["id"]}, "config": config})
    assert honest.status_code == 422 and "exceeds the shortest sequence's length 100" in detail(honest), honest.text
    spoofed = {"kind": "stored", "id": dataset["id"], field: 4096}
    response = client.post("/train", json={"dataset": spoofed, "config": config})
    assert response.status_code == 422, response.text
    assert f"{field} is set by the server" in detail(response)
    # The issue's own request: every one of them, with the windows that fit only the spoofed length.
    all_spoofed = {"kind": "stored", "id": dataset["id"], "min_len": 4096, "max_len": 4096, "input_dim": 2}
    response = client.post("/train", json={"dataset": all_spoofed, "config": config})
    assert response.status_code == 422 and "set by the server" in detail(response), response.text


def test_a_stored_dataset_by_id_alone_still_trains_with_its_own_shape(client: httpx.Client) -> None:
    dataset = upload(client, 30)
    accepted = client.post("/train", json={"model": "stored-ok", "dataset": {"id": dataset["id"]}, "config": {}})
    assert accepted.status_code == 202, accepted.text
    spec = client.get(f"/jobs/{accepted.json()['job_id']}").json()["spec"]
    assert (spec["dataset"]["min_len"], spec["dataset"]["input_dim"], spec["dataset"]["num_sequences"]) == (30, 2, 8)


def test_workers_on_a_local_executor_are_refused_for_a_stored_dataset_too(client: httpx.Client) -> None:
    dataset = upload(client, 24)
    config = {"workers": 2, "batch_size": 4, "seed": 1}
    response = client.post("/train", json={"model": "dp", "dataset": {"id": dataset["id"]}, "config": config})
    assert response.status_code == 422 and "JEPA_EXECUTOR=ray" in detail(response), response.text
