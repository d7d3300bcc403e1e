"""The Python client against a real server: numpy in and out, typed errors with the detail."""

import asyncio

import numpy as np
import pytest

from jepa_model import PRESETS
from service.client import AsyncJEPAClient, BadRequest, JEPAClient, JobFailed, NotFound, Unauthorized
from tests.e2e.servers import Server, StartServer
from tests.factories import TINY_CONFIG

DIM = PRESETS["trajectory"].model.repr_dim


def walks(n: int, length: int, dim: int = 2, seed: int = 0) -> np.ndarray:
    return np.cumsum(np.random.default_rng(seed).normal(size=(n, length, dim)), axis=1).astype(np.float32)


def test_encode_predict_similarity_take_and_return_arrays(server: Server) -> None:
    with JEPAClient(server.base_url) as client:
        batch = walks(5, 20)
        z = client.encode(batch)  # equal lengths: sent and answered as .npy
        assert z.shape == (5, DIM) and z.dtype == np.float32
        ragged = [batch[0], batch[1, :7]]  # mixed lengths: sent as JSON
        np.testing.assert_allclose(client.encode(ragged)[0], z[0], atol=1e-5)
        assert np.allclose(np.linalg.norm(client.encode(batch, normalize=True), axis=1), 1, atol=1e-5)
        assert client.predict(batch[:, :8]).shape == (5, DIM)
        predictions, similarities = client.predict(batch[:, :8], batch[:, 8:12])
        assert predictions.shape == (5, DIM) and similarities.shape == (5,)
        matrix = client.similarity(batch, batch[:2])
        assert matrix.shape == (5, 2) and np.allclose(np.diag(matrix[:2]), 1, atol=1e-5)
        assert [m["name"] for m in client.models()][:1] and client.models()[0]["versions"]


def test_errors_are_typed_and_carry_the_detail(server: Server) -> None:
    with JEPAClient(server.base_url) as client:
        with pytest.raises(NotFound) as missing:
            client.encode(walks(1, 5), model="nope")
        assert missing.value.status == 404 and "not found" in missing.value.detail and missing.value.type == "not_found"
        with pytest.raises(BadRequest) as wrong:
            client.encode(walks(1, 5, dim=3))
        assert "expects 2" in wrong.value.detail and wrong.value.type == "validation_error"


def test_upload_train_wait_and_promote(server: Server) -> None:
    with JEPAClient(server.base_url) as client:
        dataset = client.upload_dataset(walks(40, 10, dim=3), name="walks3")
        assert dataset["input_dim"] == 3 and dataset["num_sequences"] == 40
        job_id = client.train(dataset["id"], config=TINY_CONFIG, model="client-walks")
        job = client.wait_for_job(job_id, timeout=120, poll_s=0.2, progress=True)
        assert job["status"] == "succeeded" and job["version"] == 1
        assert client.set_alias("client-walks", "production", 1)["version"] == 1
        assert client.encode(walks(2, 6, dim=3), model="client-walks", version="production").shape == (
            2,
            TINY_CONFIG["repr_dim"],
        )
        doomed = client.train({"pattern": "circle", "num_samples": 64}, config={**TINY_CONFIG, "epochs": 10_000})
        client.cancel(doomed)
        with pytest.raises(JobFailed) as failed:
            client.wait_for_job(doomed, timeout=60, poll_s=0.2)
        assert failed.value.job["status"] == "cancelled"


def test_the_async_client_and_the_api_key(start_server: StartServer) -> None:
    server = start_server(JEPA_API_KEY="sesame", trained=True)
    server.wait_for("/ready")

    async def scenario() -> None:
        async with AsyncJEPAClient(server.base_url) as anonymous:
            assert (await anonymous.encode(walks(3, 20))).shape == (3, DIM)  # reads are open
            with pytest.raises(Unauthorized):
                await anonymous.train({"pattern": "circle"})
        async with AsyncJEPAClient(server.base_url, api_key="sesame") as client:
            job_id = await client.train({"pattern": "linear", "num_samples": 64}, config=TINY_CONFIG, model="async")
            job = await client.wait_for_job(job_id, timeout=120, poll_s=0.2)
            assert job["version"] == 1
            z, sims = await client.predict(walks(2, 8), walks(2, 4), model="async")
            assert z.shape == (2, TINY_CONFIG["repr_dim"]) and sims.shape == (2,)

    asyncio.run(scenario())
