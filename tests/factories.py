"""Factories for test objects: tiny specs, models, sequences and registered versions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sqlalchemy.orm import Session

from jepa_model import JEPA, TrainConfig, __version__, save_checkpoint
from jepa_model.checkpoint import CONFIG_FILE
from training.data import datasets
from training.execution import jobs
from training.execution.runner import run_job
from training.execution.spec import TrainingSpec
from training.settings import StorageSettings
from training.store.artifacts import FileStore
from training.store.db import SessionFactory, create_db_engine, create_session_factory, in_transaction
from training.store.migrate import upgrade_to_head
from training.store.models import DatasetRow, VersionRow
from training.store.registry import register_version

TINY_CONFIG: dict[str, Any] = {
    "hidden_dim": 16,
    "repr_dim": 16,
    "pool_blocks": 0,  # the series preset pools 4 blocks' states, wider than this whole embedding
    "predictor_hidden_dim": 16,
    "context_len": 4,
    "target_len": 2,
    "epochs": 2,
    "batch_size": 16,
    "seed": 0,
}


def tiny_spec(model: str = "toy", dataset: dict[str, Any] | None = None, **config: Any) -> TrainingSpec:
    """A training job that finishes in about a second."""
    return TrainingSpec.model_validate(
        {
            "model": model,
            "dataset": {"pattern": "mixed", "num_samples": 64, "seq_len": 12, "seed": 0, **(dataset or {})},
            "config": {**TINY_CONFIG, **config},
        }
    )


def tiny_model(input_dim: int = 2, seed: int = 0) -> JEPA:
    torch.manual_seed(seed)
    return JEPA(input_dim=input_dim, hidden_dim=16, repr_dim=8, predictor_hidden_dim=16).eval()


def random_sequences(lengths: list[int], dim: int = 2, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(length, dim)).astype(np.float32) for length in lengths]


def add_version(session: Session, data_dir: Path, model_name: str = "toy", seed: int = 0) -> VersionRow:
    """Save a real (untrained) checkpoint under data_dir and register it."""
    model = tiny_model(seed=seed)
    relative = Path("checkpoints") / model_name / f"seed{seed}"
    sha256 = save_checkpoint(model, data_dir / relative, TrainConfig(), "seed", __version__)
    config = json.loads((data_dir / relative / CONFIG_FILE).read_text())
    return register_version(
        session, model_name, config=config, metrics={}, sha256=sha256, path=str(relative), job_id=None
    )


def registry_with_a_version(database_url: str, data_dir: Path, model_name: str) -> None:
    """A fresh registry (migrated) holding one version of `model_name`, an untrained checkpoint in
    `data_dir`: a server on it named that model's default is ready at once, with no first-start
    training it would never test."""
    data_dir.mkdir()
    upgrade_to_head(database_url)
    engine = create_db_engine(database_url)
    try:
        with create_session_factory(engine).begin() as session:
            add_version(session, data_dir, model_name)
    finally:
        engine.dispose()


def stored_dataset(
    factory: SessionFactory,
    data_dir: Path,
    sequences: list[np.ndarray],
    name: str = "data",
    labels: list[str] | list[int] | None = None,
) -> DatasetRow:
    """Store `sequences` (with one label each, if given) as an uploaded dataset would be."""
    checked = datasets.check_sequences(sequences)
    coded = None if labels is None else datasets.parse_labels(labels, len(checked))
    return in_transaction(factory, lambda s: datasets.store_dataset(s, FileStore(data_dir), name, checked, coded))


def sines_and_squares(n: int, length: int = 20, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """(N, length, 1) float32 waves and their labels: even rows are sines, odd rows square waves,
    each with its own period, phase and amplitude, plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    period = rng.uniform(6, 12, size=(n, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1))
    amplitude = rng.uniform(0.8, 1.2, size=(n, 1))
    sine = np.sin(2 * np.pi * t / period + phase)
    square = np.where(sine >= 0, 1.0, -1.0)
    waves = amplitude * np.where((np.arange(n) % 2 == 0)[:, None], sine, square)
    waves += rng.normal(scale=0.05, size=waves.shape)
    labels = ["sine" if i % 2 == 0 else "square" for i in range(n)]
    return waves[..., None].astype(np.float32), labels


def run_to_a_version(factory: SessionFactory, settings: StorageSettings, job_id: str) -> VersionRow:
    """Claim the queued job and run it here, in process; the version it registered."""
    jobs.claim(factory, job_id, "test")
    run_job(factory, settings, job_id)
    with factory() as session:
        version = jobs.get_job(session, job_id).version
    assert version is not None, f"job {job_id} registered no version"
    return version
