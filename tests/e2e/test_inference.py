"""/encode, /predict and /similarity against a real server."""

import io
import math
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from jepa_model import PRESETS
from tests.e2e.servers import StartServer
from tests.factories import random_sequences

DIM = PRESETS["trajectory"].model.repr_dim  # the first-start model's width


def seqs(*lengths: int, seed: int = 0) -> list:
    return [s.tolist() for s in random_sequences(list(lengths), dim=2, seed=seed)]


def test_encode_returns_one_embedding_per_sequence(client: httpx.Client) -> None:
    body = client.post("/encode", json={"sequences": seqs(20, 20, 20)}).json()
    assert body["model"] == "trajectories" and body["version"] == 1 and body["dim"] == DIM
    assert np.asarray(body["embeddings"]).shape == (3, DIM)


def test_mixed_lengths_embed_as_each_sequence_would_alone(client: httpx.Client) -> None:
    batch = seqs(5, 17, 1, 9)
    together = np.asarray(client.post("/encode", json={"sequences": batch}).json()["embeddings"])
    for i, sequence in enumerate(batch):
        alone = client.post("/encode", json={"sequences": [sequence]}).json()["embeddings"][0]
        np.testing.assert_allclose(together[i], alone, atol=1e-5)


def test_normalize_and_encoder_choice(client: httpx.Client) -> None:
    batch = seqs(12, 8)
    normed = np.asarray(client.post("/encode", json={"sequences": batch, "normalize": True}).json()["embeddings"])
    np.testing.assert_allclose(np.linalg.norm(normed, axis=1), 1.0, atol=1e-5)
    context = client.post("/encode", json={"sequences": batch, "encoder": "context"})
    target = client.post("/encode", json={"sequences": batch, "encoder": "target"})
    assert context.status_code == target.status_code == 200
    # After training, the EMA target encoder lags the context encoder: the two must differ.
    assert not np.allclose(context.json()["embeddings"], target.json()["embeddings"])


def test_predict_scores_only_when_targets_are_given(client: httpx.Client) -> None:
    contexts, targets = seqs(8, 8, 6), seqs(4, 4, 4, seed=1)
    plain = client.post("/predict", json={"contexts": contexts}).json()
    assert np.asarray(plain["predictions"]).shape == (3, DIM) and "similarities" not in plain
    scored = client.post("/predict", json={"contexts": contexts, "targets": targets}).json()
    np.testing.assert_allclose(scored["predictions"], plain["predictions"], atol=1e-6)
    assert len(scored["similarities"]) == 3 and all(-1 <= s <= 1 for s in scored["similarities"])

    # Entry i is the cosine between prediction i and the target encoder's embedding of targets[i].
    target_embeddings = np.asarray(client.post("/encode", json={"sequences": targets}).json()["embeddings"])
    predictions = np.asarray(plain["predictions"])
    expected = (predictions * target_embeddings).sum(1) / (
        np.linalg.norm(predictions, axis=1) * np.linalg.norm(target_embeddings, axis=1)
    )
    np.testing.assert_allclose(scored["similarities"], expected, atol=1e-5)


def test_predict_pairs_contexts_with_targets(client: httpx.Client) -> None:
    response = client.post("/predict", json={"contexts": seqs(8, 8), "targets": seqs(4)})
    assert response.status_code == 422 and "2 contexts but 1 targets" in response.json()["detail"]


def test_similarity_is_the_cosine_matrix(client: httpx.Client) -> None:
    a, b = seqs(10, 6), seqs(10, 7, 3)
    body = client.post("/similarity", json={"a": a, "b": b}).json()
    matrix = np.asarray(body["similarities"])
    assert matrix.shape == (2, 3) and body["version"] == 1
    assert math.isclose(matrix[0, 0], 1.0, abs_tol=1e-5)  # a[0] == b[0] (same seed)
    assert np.all(np.abs(matrix) <= 1 + 1e-6)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"sequences": [[[0.0, 1.0, 2.0]]]}, "sequences[0][0] has 3 features; model 'trajectories' v1 expects 2"),
        ({"sequences": [[[0.0, 1.0], [1.0]]]}, "sequences[0][1] has 1 features"),
        ({"sequences": [[[0.0, 1.0]], []]}, "sequences[1] is empty"),
        ({"sequences": [[[0.0, 1e39]]]}, "beyond float32 range"),
    ],
)
def test_malformed_sequences_name_the_problem(client: httpx.Client, body: dict, needle: str) -> None:
    response = client.post("/encode", json=body)
    assert response.status_code == 422
    assert needle in response.json()["detail"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"sequences": [[[0, NaN]]]}', "NaN and Infinity are not JSON numbers"),
        ('{"sequences": [[[0, Infinity]]]}', "NaN and Infinity are not JSON numbers"),
        ('{"sequences": [[[true, 1]]]}', "sequences[0][0][0] must be a number, got bool"),
        ('{"sequences": [[["1", 1]]]}', "sequences[0][0][0] must be a number, got str"),
        ('{"sequences": [[0, 1]]}', "sequences[0][0] must be a list of 2 numbers, got int"),
        ('{"sequences": [[[0, 1]], [[0, 1], null]]}', "sequences[1][1] must be a list of 2 numbers, got NoneType"),
        ('{"sequences": []}', "sequences must be a non-empty list"),
        ('{"encoder": "target"}', "sequences is required"),
        ('{"sequences": [[[0, 1]]], "version": -1}', "version must be a positive integer"),
        ('{"sequences": [[[0, 1]]], "version": 1.5}', ["body", "version", "int"]),
        ('{"sequences": [[[0, 1]]], "encoder": "online"}', ["body", "encoder"]),
        ('{"sequences": [[[0, 1]]], "extra": 1}', ["body", "extra"]),
        ("[1, 2]", "must be a JSON object"),
        ("not json", "not valid JSON"),
    ],
)
def test_invalid_bodies_get_422_that_says_where(client: httpx.Client, raw: str, expected: str | list) -> None:
    response = client.post("/encode", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    if isinstance(expected, list):  # a field pydantic checks: FastAPI's list of errors with locations
        assert expected in [error["loc"] for error in detail]
    else:
        assert expected in detail


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"model": "nope"}, "model 'nope' not found"),
        ({"version": 99}, "has no version 99"),
        ({"version": "canary"}, "has no alias 'canary'"),
    ],
)
def test_unknown_models_and_versions_are_404(client: httpx.Client, extra: dict, needle: str) -> None:
    for route, body in [
        ("/encode", {"sequences": seqs(4)}),
        ("/predict", {"contexts": seqs(4)}),
        ("/similarity", {"a": seqs(4), "b": seqs(4)}),
    ]:
        response = client.post(route, json={**body, **extra})
        assert response.status_code == 404 and needle in response.json()["detail"], (route, response.text)


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_binary_bodies_and_answers_match_json(client: httpx.Client) -> None:
    batch = np.asarray(seqs(20, 20, 20), dtype=np.float32)
    as_json = np.asarray(client.post("/encode", json={"sequences": batch.tolist()}).json()["embeddings"])
    response = client.post(
        "/encode?encoder=target&version=1",
        content=npy_bytes(batch),
        headers={"content-type": "application/x-npy", "accept": "application/x-npy"},
    )
    assert response.status_code == 200 and response.headers["content-type"] == "application/x-npy"
    assert response.headers["x-jepa-model"] == "trajectories" and response.headers["x-jepa-version"] == "1"
    as_npy = np.load(io.BytesIO(response.content), allow_pickle=False)
    assert as_npy.dtype == np.float32 and as_npy.shape == (3, DIM)
    np.testing.assert_allclose(as_npy, as_json, atol=1e-5)

    predicted = client.post("/predict", content=npy_bytes(batch[:, :8]), headers={"content-type": "application/x-npy"})
    assert predicted.status_code == 200 and np.asarray(predicted.json()["predictions"]).shape == (3, DIM)

    wrong = client.post("/encode", content=npy_bytes(batch[..., :1]), headers={"content-type": "application/x-npy"})
    assert wrong.status_code == 422 and "1 features" in wrong.json()["detail"]
    pickled = np.array([{"x": 1}], dtype=object)
    refused = client.post("/encode", content=npy_bytes(pickled), headers={"content-type": "application/x-npy"})
    assert refused.status_code == 422 and "not a readable .npy" in refused.json()["detail"]


def test_the_openapi_schema_documents_json_and_binary_bodies(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/encode"]["post"]["requestBody"]["content"]
    assert set(body["application/json"]["schema"]["properties"]) >= {"sequences", "model", "version", "encoder"}
    assert "application/x-npy" in body
    similarity = spec["paths"]["/similarity"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"a", "b"} <= set(similarity["required"])


def test_past_the_queue_limit_requests_get_429_at_once(start_server: StartServer) -> None:
    server = start_server(JEPA_MAX_QUEUE="1", trained=True)
    server.wait_for("/ready")
    body = {"sequences": seqs(*[20] * 256)}
    with ThreadPoolExecutor(16) as pool, server.client() as client:
        responses = list(pool.map(lambda _: client.post("/encode", json=body), range(48)))
    statuses = {r.status_code for r in responses}
    assert statuses == {200, 429}, statuses
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.headers["retry-after"] == "1" and "retry" in refused.json()["detail"]
