"""Large JSON bodies take the fast path (service/json_arrays.py) over HTTP: their answers match
the binary path's, and a body it cannot vouch for still gets the exact error, with its place."""

from __future__ import annotations

import io

import httpx
import numpy as np
import orjson


def npy_encode(client: httpx.Client, batch: np.ndarray) -> np.ndarray:
    buffer = io.BytesIO()
    np.save(buffer, batch)
    headers = {"content-type": "application/x-npy", "accept": "application/x-npy"}
    response = client.post("/encode", content=buffer.getvalue(), headers=headers)
    assert response.status_code == 200, response.text
    return np.load(io.BytesIO(response.content), allow_pickle=False)


def test_large_json_matches_the_binary_path(client: httpx.Client) -> None:
    rng = np.random.default_rng(1)
    batch = np.cumsum(rng.normal(size=(64, 30, 2)), axis=1).astype(np.float32)
    body = orjson.dumps({"sequences": batch, "normalize": False}, option=orjson.OPT_SERIALIZE_NUMPY)
    assert len(body) > 2048  # past service.json_arrays.MIN_BODY_BYTES
    response = client.post("/encode", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(np.asarray(response.json()["embeddings"]), npy_encode(client, batch), atol=1e-5)


def test_large_ragged_json_answers_each_sequence_as_alone(client: httpx.Client) -> None:
    rng = np.random.default_rng(2)
    lengths = [12, 40, 25, 40, 7] * 8
    sequences = [np.cumsum(rng.normal(size=(n, 2)), axis=0).astype(np.float32) for n in lengths]
    body = orjson.dumps({"sequences": sequences}, option=orjson.OPT_SERIALIZE_NUMPY)
    response = client.post("/encode", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    embeddings = np.asarray(response.json()["embeddings"])
    for i in (0, 1, 4):
        alone = client.post("/encode", json={"sequences": [sequences[i].tolist()]}).json()["embeddings"][0]
        np.testing.assert_allclose(embeddings[i], alone, atol=1e-5)


def test_a_large_body_with_one_bad_point_names_that_point(client: httpx.Client) -> None:
    value = np.zeros((50, 20, 2)).tolist()
    value[37][11], value[37][12] = [1.0, 2.0, 3.0], [4.0]  # flattened, as many numbers as a good body
    response = client.post("/encode", json={"sequences": value})
    assert response.status_code == 422
    assert "sequences[37][11] has 3 features" in str(response.json()["detail"])
    value[37][11], value[37][12] = [1.0, True], [0.0, 0.0]
    response = client.post("/encode", json={"sequences": value})
    assert response.status_code == 422 and "sequences[37][11][1] must be a number" in str(response.json()["detail"])
