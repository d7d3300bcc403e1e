"""POST /encode with per_step: per-step representations in JSON and .npy, against a real server."""

import io

import httpx
import numpy as np

from jepa_model import PRESETS
from tests.e2e.servers import StartServer, wait_for_job
from tests.factories import TINY_CONFIG, random_sequences

DIM = PRESETS["trajectory"].model.repr_dim  # the first-start model's: a forward LSTM


def test_a_forward_lstms_per_step_rows_are_its_prefixes_embeddings(client: httpx.Client) -> None:
    sent = [s.tolist() for s in random_sequences([12, 7], dim=2, seed=3)]
    body = client.post("/encode", json={"sequences": sent, "per_step": True}).json()
    assert body["dim"] == DIM and "embeddings" not in body
    per_step = [np.asarray(z) for z in body["per_step"]]
    assert [z.shape for z in per_step] == [(12, DIM), (7, DIM)]
    pooled = np.asarray(client.post("/encode", json={"sequences": sent}).json()["embeddings"])
    np.testing.assert_allclose([z[-1] for z in per_step], pooled, atol=1e-4)  # the last row is the embedding
    prefix = np.asarray(client.post("/encode", json={"sequences": [sent[0][:5]]}).json()["embeddings"][0])
    np.testing.assert_allclose(per_step[0][4], prefix, atol=1e-4)

    normed = client.post("/encode", json={"sequences": sent, "per_step": True, "normalize": True}).json()
    np.testing.assert_allclose(np.linalg.norm(np.asarray(normed["per_step"][1]), axis=1), 1.0, atol=1e-5)


def test_per_step_goes_both_ways_as_npy(client: httpx.Client) -> None:
    sent = np.stack(random_sequences([9, 9, 9], dim=2, seed=4))
    buffer = io.BytesIO()
    np.save(buffer, sent, allow_pickle=False)
    answer = client.post(
        "/encode",
        content=buffer.getvalue(),
        params={"per_step": "true"},
        headers={"Content-Type": "application/x-npy", "Accept": "application/x-npy"},
    )
    assert answer.status_code == 200, answer.text
    steps = np.load(io.BytesIO(answer.content), allow_pickle=False)
    assert steps.shape == (3, 9, DIM) and steps.dtype == np.float32
    as_json = client.post("/encode", json={"sequences": sent.tolist(), "per_step": True}).json()["per_step"]
    np.testing.assert_allclose(steps, np.asarray(as_json), atol=1e-5)


def test_per_step_answers_are_bounded_and_other_encoders_say_why(start_server: StartServer) -> None:
    server = start_server(JEPA_MAX_REQUEST_POINTS="4000", trained=True)
    server.wait_for("/ready")
    with server.client() as client:
        sequence = random_sequences([200], dim=2)[0].tolist()  # 400 numbers in, 200 x R out
        refused = client.post("/encode", json={"sequences": [sequence], "per_step": True})
        assert refused.status_code == 422 and "JEPA_MAX_REQUEST_POINTS" in refused.json()["detail"]
        config = {**TINY_CONFIG, "encoder": "transformer", "num_heads": 2, "epochs": 1}
        job_id = client.post("/train", json={"model": "attends", "config": config}).json()["job_id"]
        assert wait_for_job(client, job_id)["status"] == "succeeded"
        body = {"model": "attends", "sequences": [sequence[:20]], "per_step": True}
        answer = client.post("/encode", json=body)
        assert answer.status_code == 422 and "no per-step embeddings" in answer.json()["detail"]
