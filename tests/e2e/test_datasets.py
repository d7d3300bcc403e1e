"""Users' datasets over HTTP: upload in three formats, train on them, serve their width."""

import io
import time

import httpx
import numpy as np

from tests.e2e.servers import wait_for_job
from tests.factories import TINY_CONFIG


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def walks(n: int, length: int, dim: int, seed: int = 0) -> np.ndarray:
    return np.cumsum(np.random.default_rng(seed).normal(size=(n, length, dim)), axis=1).astype(np.float32)


def test_json_npy_and_csv_uploads_store_the_same_data(client: httpx.Client) -> None:
    array = walks(3, 5, 2)
    csv = "sequence_id,t,x,y\n" + "".join(
        f"{i},{t},{float(array[i, t, 0])!r},{float(array[i, t, 1])!r}\n" for i in range(3) for t in range(5)
    )
    created = [
        client.post("/datasets", json={"name": "json", "sequences": array.tolist()}),
        client.post("/datasets", files={"file": ("walks.npy", npy(array))}, data={"name": "npy"}),
        client.post("/datasets", files={"file": ("walks.csv", csv.encode())}),
    ]
    assert [r.status_code for r in created] == [201, 201, 201], [r.text for r in created]
    bodies = [r.json() for r in created]
    assert [b["name"] for b in bodies] == ["json", "npy", "walks"]
    assert {(b["num_sequences"], b["input_dim"], b["min_len"], b["max_len"]) for b in bodies} == {(3, 2, 5, 5)}
    assert len({b["sha256"] for b in bodies}) == 1  # the same sequences, stored the same way
    assert created[0].headers["location"] == f"/datasets/{bodies[0]['id']}"
    assert client.get(f"/datasets/{bodies[1]['id']}").json() == bodies[1]
    listed = {d["id"] for d in client.get("/datasets").json()}
    assert {b["id"] for b in bodies} <= listed


def test_bad_uploads_get_a_clear_4xx(client: httpx.Client) -> None:
    cases = [
        (client.post("/datasets", files={"file": ("x.npy", b"garbage")}), 422, "not a readable .npy"),
        (client.post("/datasets", files={"file": ("x.txt", b"1,2")}), 415, ".npy or .csv"),
        (client.post("/datasets", content=b"1,2", headers={"content-type": "text/csv"}), 415, "multipart"),
        (
            client.post("/datasets", files={"file": ("x.csv", b"sequence_id,t,x\na,0,1\na,2,1\nb,0,1\nb,1,2\n")}),
            422,
            "no gaps",
        ),
        (client.post("/datasets", json={"name": "n", "sequences": [[[1, 2], [3, 4]]]}), 422, "sequences"),
        (client.post("/datasets", json={"name": "n", "sequences": [[[1, None]], [[1, 2]]]}), 422, "sequences"),
        (client.get("/datasets/" + "0" * 32), 404, "not found"),
    ]
    for response, status, message in cases:
        assert response.status_code == status, response.text
        assert message in str(response.json()["detail"])


def test_a_model_trained_on_d_features_serves_exactly_d(client: httpx.Client) -> None:
    for dim in (1, 64):  # the narrowest and the widest a dataset may be
        upload = client.post("/datasets", json={"name": f"d{dim}", "sequences": walks(40, 10, dim, dim).tolist()})
        dataset = upload.json()
        train = {"model": f"walks{dim}", "dataset": {"id": dataset["id"]}, "config": TINY_CONFIG}
        response = client.post("/train", json=train)
        assert response.status_code == 202, response.text
        job = wait_for_job(client, response.json()["job_id"])
        assert job["status"] == "succeeded", job
        ok = client.post("/encode", json={"model": f"walks{dim}", "sequences": walks(2, 6, dim).tolist()})
        assert ok.status_code == 200 and len(ok.json()["embeddings"]) == 2
        wrong = client.post("/encode", json={"model": f"walks{dim}", "sequences": walks(2, 6, dim + 1).tolist()})
        assert wrong.status_code == 422 and f"expects {dim}" in wrong.json()["detail"]


def test_training_on_a_dataset_checks_it_first(client: httpx.Client) -> None:
    short = client.post("/datasets", json={"name": "short", "sequences": walks(4, 5, 2).tolist()}).json()
    too_long = client.post("/train", json={"model": "m", "dataset": {"id": short["id"]}, "config": {"context_len": 8}})
    assert too_long.status_code == 422 and "shortest sequence" in str(too_long.json()["detail"])
    missing = client.post("/train", json={"model": "m", "dataset": {"id": "0" * 32}})
    assert missing.status_code == 404


def test_a_running_job_is_cancelled_within_seconds_and_registers_nothing(client: httpx.Client) -> None:
    body = {"model": "cancel-me", "dataset": {"num_samples": 256}, "config": {**TINY_CONFIG, "epochs": 10_000}}
    job_id = client.post("/train", json=body).json()["job_id"]
    deadline = time.monotonic() + 60
    while client.get(f"/jobs/{job_id}").json()["progress"]["epoch"] < 2:
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.1)
    cancelled = client.post(f"/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    epoch_at_cancel = cancelled.json()["progress"]["epoch"]
    time.sleep(4)  # a few seconds: the worker notices at its next heartbeat and stops training
    history = client.get(f"/jobs/{job_id}/metrics").json()
    assert history["attempt"] == 1 and [e["epoch"] for e in history["epochs"]][:2] == [1, 2]
    assert len(history["epochs"]) == epoch_at_cancel, "training went on after the cancel"
    assert all(e["loss"] > 0 and "embedding_std" in e["metrics"] for e in history["epochs"])
    assert client.get(f"/jobs/{job_id}").json()["version"] is None
    assert "cancel-me" not in {m["name"] for m in client.get("/models").json()}
    again = client.post(f"/jobs/{job_id}/cancel")
    assert again.status_code == 409 and "already cancelled" in again.json()["detail"]
