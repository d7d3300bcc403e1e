"""Every training config that POST /train's validation accepts trains: random configs within the
bounds the options declare (jepa_model/config.py), each either refused at submission or trained
for one step by the runner, end to end, without raising."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from jepa_model import PRESET_NAMES, ModelConfig, TrainConfig
from jepa_model.config import (
    BLOCK_POOLED_PARTS,
    ENCODERS,
    OBJECTIVES,
    POOLED_PARTS,
    STEP_POOLINGS,
    WINDOW_POOLINGS,
)
from training.errors import InvalidInput
from training.execution import jobs, runner
from training.execution.spec import TrainingSpec
from training.settings import StorageSettings
from training.store.db import SessionFactory, create_db_engine, create_session_factory, in_transaction
from training.store.migrate import upgrade_to_head

# Sizes drawn no larger than this, so that a step takes milliseconds; other values span their bounds.
TINY = {
    "hidden_dim": 8,
    "repr_dim": 32,
    "num_layers": 2,
    "predictor_hidden_dim": 8,
    "num_heads": 4,
    "kernel_size": 7,
    "predictor_offsets": 8,
    "pool_blocks": 2,
    "memory_size": 32,
    "batch_size": 24,
    "context_len": 16,
    "target_len": 16,
    "min_context_len": 16,
    "max_offset": 24,
    "max_crop_len": 24,
    "mask_block_len": 24,
    "num_targets": 4,
    "num_contexts": 4,
    "workers": 3,
    "epochs": 1,
}
# Always drawn, never the preset's: the series preset's sizes would take a minute a job.
SIZES = ("hidden_dim", "repr_dim", "num_layers", "predictor_hidden_dim", "pool_blocks", "memory_size")
FIXED = {"steps": 1}  # one optimizer step


def option_values(config: type) -> dict[str, st.SearchStrategy[Any]]:
    """For each option a request may set: unset (the preset's value) or a value within its bounds."""
    drawn = {}
    for option in dataclasses.fields(config):
        meta = option.metadata
        if meta["server"] or option.name in FIXED:
            continue
        if meta["choices"]:
            value: st.SearchStrategy[Any] = st.sampled_from(meta["choices"])
        elif isinstance(option.default, bool):
            value = st.booleans()
        elif "int" in str(option.type):
            low = meta.get("ge", meta.get("gt", 0))
            value = st.integers(low, min(meta.get("le", meta.get("lt", math.inf)), TINY.get(option.name, math.inf)))
        else:
            low, high = meta.get("ge", meta.get("gt")), meta.get("le", meta.get("lt"))
            value = st.floats(low, high, exclude_min="gt" in meta, exclude_max="lt" in meta, allow_nan=False)
        drawn[option.name] = value
    return drawn


OPTIONS = {**option_values(ModelConfig), **option_values(TrainConfig)}
OPTIONAL = sorted(set(OPTIONS) - set(SIZES))


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    # The sizes, and up to 10 other options; the rest keep the preset's values.
    chosen = [*SIZES, *draw(st.lists(st.sampled_from(OPTIONAL), max_size=10, unique=True))]
    config = {name: draw(OPTIONS[name]) for name in chosen}
    if draw(st.integers(0, 3)):  # mostly a model whose parts fit together, else anything the bounds allow
        config["objective"] = objective = draw(st.sampled_from(OBJECTIVES))
        config["encoder"] = draw(st.sampled_from(ENCODERS[objective]))
        config["pooling"] = pooling = draw(st.sampled_from(STEP_POOLINGS if objective == "steps" else WINDOW_POOLINGS))
        config["kernel_size"] = draw(st.sampled_from([1, 3, 5, 7]))
        config["num_heads"] = draw(st.sampled_from([h for h in (1, 2, 4) if config["hidden_dim"] % h == 0]))
        if objective == "window":
            config |= {"memory_size": 0, "pool_blocks": 0}
        elif (config["encoder"], pooling) != ("conv", "max_mean_ppv_lspv"):
            config["pool_blocks"] = 0
        if objective == "steps":  # a whole number of steps' parts, beside the pooled blocks' states
            blocks = BLOCK_POOLED_PARTS * config["pool_blocks"] * config["hidden_dim"]
            config["repr_dim"] = blocks + POOLED_PARTS[pooling] * draw(st.integers(1, 6))
            config["num_layers"] = max(config["num_layers"], config["pool_blocks"])
    toy = {
        "pattern": draw(st.sampled_from(["circle", "linear", "mixed"])),
        "num_samples": draw(st.integers(8, 16)),
        "seq_len": draw(st.integers(2, 16)),
        "noise": draw(st.floats(0.0, 10.0)),
        "seed": draw(st.integers(0, 2**32 - 1)),
    }
    preset = draw(st.sampled_from(PRESET_NAMES))
    return {"model": "drawn", "dataset": toy, "config": {"preset": preset, **config, **FIXED}}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SessionFactory, StorageSettings]]:
    tmp: Path = tmp_path_factory.mktemp("property")
    url = f"sqlite:///{tmp / 'jepa.db'}"
    upgrade_to_head(url)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a worker's training process runs (JEPA_TRAIN_THREADS)
    with pytest.MonkeyPatch.context() as patch:
        # Fewer held-out sequences to measure on; the plots' failures never fail a job anyway.
        patch.setattr(runner, "HELD_OUT_SEQUENCES", 16)
        patch.setattr(runner, "CALIBRATION_SEQUENCES", 4)
        patch.setattr(runner, "draw_plots", lambda *_: None)
        yield create_session_factory(create_db_engine(url)), StorageSettings(data_dir=tmp / "data", database_url=url)
    torch.set_num_threads(threads)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)
@given(request=requests())
def test_every_config_the_validation_accepts_trains(
    registry: tuple[SessionFactory, StorageSettings], request: dict[str, Any]
) -> None:
    factory, storage = registry
    try:  # what POST /train does before anything is queued
        spec = TrainingSpec.model_validate(request)
        spec.check_memory(4096)  # JEPA_TRAIN_MEMORY_MB's default
        job_id = in_transaction(factory, lambda s: jobs.enqueue(s, spec, executor="local").id)
    except (ValidationError, InvalidInput):
        event("refused at submission")
        return  # a 422: nothing reaches a worker
    event("trained")
    assert jobs.claim(factory, job_id, "property")
    assert runner.run_job(factory, storage, job_id) >= 1
