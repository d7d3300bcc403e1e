"""Short, ragged, wide series train with no config, and versions from before step models serve
what they served then: both over HTTP against a real server."""

import json
import shutil
from pathlib import Path

import httpx
import numpy as np
from safetensors.torch import load_file

from jepa_model.checkpoint import CONFIG_FILE
from tests.e2e.servers import StartServer, wait_for_job
from training.store.db import create_db_engine, create_session_factory, in_transaction
from training.store.registry import register_version

FIXTURES = Path(__file__).parent.parent / "fixtures" / "checkpoints_0_1"


def vowel_like(n: int, seed: int = 0) -> tuple[list[np.ndarray], list[str]]:
    """Shaped like JapaneseVowels: 12 features, 7 to 29 steps, a class per speaker."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, 12))
    sequences, labels = [], []
    for i in range(n):
        speaker, length = i % 3, int(rng.integers(7, 30))
        drift = np.linspace(0, 1, length)[:, None] * centres[(speaker + 1) % 3]
        sequences.append(centres[speaker] + 0.5 * drift + 0.3 * rng.normal(size=(length, 12)))
        labels.append(f"speaker{speaker}")
    return sequences, labels


def test_short_ragged_wide_series_train_with_no_config(start_server: StartServer) -> None:
    server = start_server(trained=True)
    sequences, labels = vowel_like(60)
    with server.client() as client:
        body = {"name": "vowels", "sequences": [s.tolist() for s in sequences], "labels": labels}
        dataset = client.post("/datasets", json=body)
        assert dataset.status_code == 201, dataset.text
        assert dataset.json()["min_len"] == 7  # shorter than the preset's windows (8 + 4)
        queued = client.post("/train", json={"model": "vowels", "dataset": {"id": dataset.json()["id"]}, "config": {}})
        assert queued.status_code == 202, queued.text
        job = wait_for_job(client, queued.json()["job_id"], timeout=240)
        assert job["status"] == "succeeded", job
        # The job records what "default" and the unset windows became for this data.
        spec = job["spec"]["config"]
        assert spec["preset"] == "series"
        assert spec["context_len"] + spec["target_len"] <= 7
        version = client.get(f"/models/vowels/versions/{job['version']}").json()
        train = version["config"]["train"]
        assert (train["context_len"], train["target_len"]) == (spec["context_len"], spec["target_len"])
        assert train["steps"] == 400 and version["config"]["model"]["objective"] == "steps"
        # Labels were never trained on; they measure the embeddings on a held-out quarter.
        assert version["metrics"]["label_probe_accuracy"] > 0.6  # chance is 1/3
        embedded = client.post("/encode", json={"model": "vowels", "sequences": [s.tolist() for s in sequences[:4]]})
        assert embedded.status_code == 200, embedded.text
        z = np.array(embedded.json()["embeddings"])
        assert z.shape == (4, version["config"]["model"]["repr_dim"]) and np.isfinite(z).all()
        short = client.post("/predict", json={"model": "vowels", "contexts": [sequences[0][:3].tolist()]})
        assert short.status_code == 200, short.text


def register_fixture(data_dir: Path, preset: str) -> None:
    relative = Path("checkpoints") / "old" / preset
    shutil.copytree(FIXTURES / preset, data_dir / relative)
    engine = create_db_engine(f"sqlite:///{data_dir / 'jepa.db'}")
    try:
        config = json.loads((data_dir / relative / CONFIG_FILE).read_text())
        sha = (data_dir / relative / "sha256").read_text().strip()
        in_transaction(
            create_session_factory(engine),
            lambda s: register_version(
                s, "old", config=config, metrics={}, sha256=sha, path=str(relative), job_id=None
            ),
        )
    finally:
        engine.dispose()


def test_versions_trained_before_step_models_serve_the_same_embeddings(
    start_server: StartServer, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data-old"
    server = start_server(data_dir, JEPA_BOOTSTRAP="0")  # creates the schema
    for number, preset in enumerate(("seed", "default"), start=1):
        register_fixture(data_dir, preset)
        expected = load_file(str(FIXTURES / preset / "expected.safetensors"))
        body = {"model": "old", "version": number, "sequences": expected["x"].tolist()}
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            embedded = client.post("/encode", json=body)
            predicted = client.post("/predict", json={"model": "old", "version": number, "contexts": body["sequences"]})
        assert embedded.status_code == 200, embedded.text
        np.testing.assert_allclose(embedded.json()["embeddings"], expected["target"].numpy(), atol=1e-4)
        np.testing.assert_allclose(predicted.json()["predictions"], expected["predict"].numpy(), atol=1e-4)
