"""One setting, every path: JEPA_MAX_SEQ_LEN bounds every sequence read at once (inference requests,
toy training data, training options counted in steps, /score's forecast windows), and
JEPA_MAX_DATASET_LEN an uploaded dataset's series. Raising either once raises it everywhere; it once
served 8k-step requests while training still refused them."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.factories import add_version
from training.store.db import in_transaction

LONGEST = 8192  # twice the default
DATASET_LONGEST = 10_000


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    data_dir = tmp_path_factory.mktemp("limits")
    settings = Settings(
        data_dir=data_dir,
        bootstrap=False,
        embedded_worker=False,
        default_model="toy",
        max_seq_len=LONGEST,
        max_dataset_len=DATASET_LONGEST,
    )
    app = create_app(settings)
    with TestClient(app) as client:
        in_transaction(app.state.session_factory, lambda s: add_version(s, data_dir, "toy"))
        yield client


def series(steps: int, count: int = 1) -> list[list[list[float]]]:
    return np.random.default_rng(0).normal(size=(count, steps, 2)).round(3).tolist()


def refused_for(response: Any, setting: str) -> bool:
    return response.status_code == 422 and setting in str(response.json()["detail"])


def test_info_reports_the_limits_the_service_was_given(client: TestClient) -> None:
    limits = client.get("/info").json()["limits"]
    assert (limits["max_seq_len"], limits["max_dataset_len"]) == (LONGEST, DATASET_LONGEST)


def test_inference_requests_take_sequences_up_to_the_setting(client: TestClient) -> None:
    assert client.post("/encode", json={"sequences": series(LONGEST)}).status_code == 200
    assert refused_for(client.post("/encode", json={"sequences": series(LONGEST + 1)}), "JEPA_MAX_SEQ_LEN")


def test_score_takes_forecast_windows_up_to_the_setting(client: TestClient) -> None:
    body = {"series": series(LONGEST + 8), "method": "forecast", "target_len": 8, "stride": 4}
    assert client.post("/score", json={**body, "context_len": LONGEST}).status_code == 200
    assert refused_for(client.post("/score", json={**body, "context_len": LONGEST + 1}), "JEPA_MAX_SEQ_LEN")


def test_training_takes_toy_data_and_options_up_to_the_setting(client: TestClient) -> None:
    def train(dataset: dict[str, Any], config: dict[str, Any]) -> Any:
        toy = {"kind": "toy", "num_samples": 8, **dataset}
        return client.post("/train", json={"model": "long", "dataset": toy, "config": {"preset": "series", **config}})

    assert train({"seq_len": LONGEST}, {}).status_code == 202
    assert refused_for(train({"seq_len": LONGEST + 1}, {}), "JEPA_MAX_SEQ_LEN")
    assert train({"seq_len": 64}, {"max_crop_len": LONGEST}).status_code == 202
    assert refused_for(train({"seq_len": 64}, {"max_crop_len": LONGEST + 1}), "JEPA_MAX_SEQ_LEN")


def test_uploads_take_series_up_to_their_own_setting(client: TestClient) -> None:
    def upload(steps: int) -> Any:
        buffer = io.BytesIO()
        np.save(buffer, np.zeros((2, steps, 1), np.float32))
        return client.post("/datasets", files={"file": ("long.npy", buffer.getvalue())})

    assert upload(DATASET_LONGEST).status_code == 201
    refused = upload(DATASET_LONGEST + 1)
    assert refused.status_code == 422 and f"a sequence needs 2 to {DATASET_LONGEST}" in refused.json()["detail"]


def test_the_training_process_is_handed_the_same_limits(tmp_path: Path) -> None:
    env = Settings(data_dir=tmp_path, max_seq_len=LONGEST, max_dataset_len=DATASET_LONGEST).process_env({})
    assert (env["JEPA_MAX_SEQ_LEN"], env["JEPA_MAX_DATASET_LEN"]) == (str(LONGEST), str(DATASET_LONGEST))
    assert "JEPA_API_KEY" not in Settings(data_dir=tmp_path, api_key="secret").process_env({})  # not the child's


def test_the_first_start_job_fits_a_limit_below_its_toy_length(tmp_path: Path) -> None:
    """The first-start job is checked as POST /train checks one: under a JEPA_MAX_SEQ_LEN shorter
    than the toy data's default 20 steps, it trains on sequences of that length, not 20."""
    settings = Settings(data_dir=tmp_path, embedded_worker=False, max_seq_len=12)
    with TestClient(create_app(settings)) as client:
        (job,) = client.get("/jobs").json()
        assert job["status"] == "queued" and job["spec"]["dataset"]["seq_len"] == 12, job
