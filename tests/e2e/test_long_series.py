"""One long recording, uploaded as it comes, trains a version whose /score finds what it never held:
over HTTP against a real server, and through the CLI both ways."""

import io
import os
from pathlib import Path

import numpy as np

from tests.e2e.servers import StartServer, registry_env, run_jepa, wait_for_job

PERIOD, LENGTH = 50, 30_000


def recording(length: int, seed: int) -> np.ndarray:
    """A noisy periodic sensor trace (T, 1)."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    wave = np.sin(2 * np.pi * t / PERIOD) + 0.3 * np.sin(4 * np.pi * t / PERIOD + 1.0)
    return (wave + 0.05 * rng.normal(size=length)).astype(np.float32)[:, None]


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def test_one_long_series_trains_and_scores_by_memory(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server(data_dir=tmp_path / "data", trained=True)
    test = recording(5000, seed=1)
    test[3000:3060, 0] = test[3000, 0]  # a stuck sensor for a little more than a period
    with server.client() as client:
        uploaded = client.post("/datasets", files={"file": ("log.npy", npy(recording(LENGTH, seed=0)[None]))})
        assert uploaded.status_code == 201, uploaded.text
        assert (uploaded.json()["num_sequences"], uploaded.json()["max_len"]) == (1, LENGTH)
        queued = client.post(
            "/train", json={"model": "sensor", "dataset": {"id": uploaded.json()["id"]}, "config": {"steps": 60}}
        )
        assert queued.status_code == 202, queued.text
        job = wait_for_job(client, queued.json()["job_id"], timeout=300)
        assert job["status"] == "succeeded", job
        assert job["spec"]["config"]["preset"] == "series"

        response = client.post("/score", json={"model": "sensor", "series": [test.tolist()], "top": 1})
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["method"], body["window"], body["calibrated"]) == ("memory", PERIOD, True)
        assert body["context_len"] is None and body["stride"] is None
        (scored,) = body["series"]
        assert len(scored["scores"]) == 5000 and None not in scored["scores"]
        (segment,) = scored["segments"]
        assert 2950 <= segment["peak"] <= 3110 and segment["percentile"] == 100.0
        assert np.percentile(scored["percentiles"][:2500], 50) < 90  # normal steps rank as normal

        forecast = client.post(
            "/score", json={"model": "sensor", "series": [test[:1000].tolist()], "method": "forecast", "stride": 50}
        )
        assert forecast.status_code == 200 and forecast.json()["method"] == "forecast", forecast.text
        on_toy = client.post("/score", json={"series": [np.zeros((40, 2)).tolist()], "method": "memory"})
        assert on_toy.status_code == 422 and "no anomaly memory" in on_toy.json()["detail"]

    np.save(tmp_path / "test.npy", test[None])
    base = {k: v for k, v in os.environ.items() if not k.startswith("JEPA_")}
    for where in (["--url", server.base_url], []):
        cli = run_jepa(
            ["score", "test.npy", "--model", "sensor", "--out", "s.npy", *where],
            {**base, "COLUMNS": "200", **registry_env(tmp_path / "data")},
            cwd=tmp_path,
        )
        assert cli.returncode == 0, cli.stdout + cli.stderr
        steps = np.load(tmp_path / "s.npy")
        assert steps.shape == (1, 5000) and 2950 <= int(np.nanargmax(steps[0])) <= 3110
