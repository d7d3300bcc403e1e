"""POST /score: step-by-step surprise of long series, in JSON and .npy, against a real server."""

import io

import httpx
import numpy as np

from jepa_model import PRESETS
from tests.e2e.servers import StartServer
from tests.factories import random_sequences

# The first-start model's windows: the trajectory preset's.
CONTEXT, TARGET = PRESETS["trajectory"].train.context_len, PRESETS["trajectory"].train.target_len


def series(*lengths: int, seed: int = 0) -> list[np.ndarray]:
    return random_sequences(list(lengths), dim=2, seed=seed)


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def test_each_step_after_the_warm_up_gets_a_calibrated_surprise(client: httpx.Client) -> None:
    sent = series(60, 45)
    response = client.post("/score", json={"series": [s.tolist() for s in sent], "top": 2})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model"], body["version"], body["calibrated"]) == ("trajectories", 1, True)
    assert (body["context_len"], body["target_len"], body["stride"]) == (CONTEXT, TARGET, 1)
    for scored, x in zip(body["series"], sent, strict=True):
        scores, percentiles = scored["scores"], scored["percentiles"]
        assert len(scores) == len(percentiles) == len(x)
        assert scores[:CONTEXT] == [None] * CONTEXT and percentiles[:CONTEXT] == [None] * CONTEXT
        assert all(0 <= s <= 2 for s in scores[CONTEXT:]) and all(0 <= p <= 100 for p in percentiles[CONTEXT:])
        assert 1 <= len(scored["segments"]) <= 2
        for segment in scored["segments"]:
            assert CONTEXT <= segment["start"] <= segment["peak"] < segment["end"] <= len(x)
            assert segment["score"] == scores[segment["peak"]]
            assert segment["percentile"] == percentiles[segment["peak"]]


def test_windows_and_stride_can_be_set_and_npy_goes_both_ways(client: httpx.Client) -> None:
    sent = np.stack(series(50, 50, seed=1)).astype(np.float32)  # (2, 50, 2)
    options = {"context_len": 6, "target_len": 3, "stride": 4}
    as_json = client.post("/score", json={"series": sent.tolist(), **options}).json()
    assert (as_json["context_len"], as_json["target_len"], as_json["stride"]) == (6, 3, 4)
    answer = client.post(
        "/score",
        content=npy(sent),
        params=options,
        headers={"Content-Type": "application/x-npy", "Accept": "application/x-npy"},
    )
    assert answer.status_code == 200, answer.text
    steps = np.load(io.BytesIO(answer.content), allow_pickle=False)
    assert steps.shape == (2, 50) and steps.dtype == np.float32 and np.isnan(steps[:, :6]).all()
    expected = np.array([s["scores"] for s in as_json["series"]], dtype=np.float64)  # None -> nan
    np.testing.assert_allclose(steps, expected, atol=1e-6)
    assert answer.headers["X-JEPA-Version"] == "1"


def test_series_longer_than_encode_allows_are_scored(client: httpx.Client) -> None:
    (long,) = series(5000, seed=2)
    assert client.post("/encode", json={"sequences": [long.tolist()]}).status_code == 422  # JEPA_MAX_SEQ_LEN
    response = client.post("/score", json={"series": [long.tolist()], "stride": 25})
    assert response.status_code == 200, response.text
    assert len(response.json()["series"][0]["scores"]) == 5000


def test_bad_requests_get_a_422_saying_why(client: httpx.Client) -> None:
    short = client.post("/score", json={"series": [series(CONTEXT + TARGET - 1)[0].tolist()]})
    assert short.status_code == 422 and "scoring needs at least" in short.json()["detail"]
    wide = client.post("/score", json={"series": [np.zeros((30, 3)).tolist()]})
    assert wide.status_code == 422 and "features" in wide.text
    for bad in ({"stride": 0}, {"top": -1}, {"threshold": 101}, {"context_len": 0}, {"window": 3}):
        response = client.post("/score", json={"series": [series(30)[0].tolist()], **bad})
        assert response.status_code == 422, (bad, response.text)


def test_windows_past_the_points_cap_are_refused_before_any_forward_pass(start_server: StartServer) -> None:
    server = start_server(JEPA_MAX_SCORE_POINTS="10000", trained=True)
    server.wait_for("/ready")
    with server.client() as client:
        refused = client.post("/score", json={"series": [series(1000)[0].tolist()]})
        assert refused.status_code == 422 and "JEPA_MAX_SCORE_POINTS" in refused.json()["detail"]
        assert client.post("/score", json={"series": [series(1000)[0].tolist()], "stride": 20}).status_code == 200
