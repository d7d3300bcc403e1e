"""Training options: generated from the config dataclasses, and fixed when a job is queued."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from sqlalchemy import update

from jepa_model import PRESETS, ModelConfig, TrainConfig, load_checkpoint
from jepa_model.data import needs_pieces, training_pieces
from tests.factories import run_to_a_version, stored_dataset, tiny_spec
from training.errors import InvalidInput
from training.execution import jobs
from training.execution.jobs import resolve_spec
from training.execution.runner import run_job
from training.execution.spec import TrainingSpec, TrainOptions, shortest_trained
from training.settings import StorageSettings
from training.store.db import SessionFactory, in_transaction
from training.store.models import JobRow

# The registry is scaffolding here: the database matrix runs where the database is the subject.
pytestmark = pytest.mark.database_incidental

SERVER_SET = {"input_dim", "input_mean", "input_std"}


def test_every_option_but_the_server_set_ones_is_a_bounded_documented_field() -> None:
    declared = {f.name for config in (ModelConfig, TrainConfig) for f in dataclasses.fields(config)}
    assert set(TrainOptions.model_fields) == declared - SERVER_SET | {"preset"}
    schema = TrainOptions.model_json_schema()["properties"]
    assert all(schema[name].get("description") for name in declared - SERVER_SET)
    hidden = schema["hidden_dim"]["anyOf"][0]
    assert (hidden["minimum"], hidden["maximum"]) == (1, 1024)
    assert set(schema["loss"]["anyOf"][0]["enum"]) == {"cosine", "smooth_l1", "l1", "mse", "infonce"}
    for bad in ({"input_dim": 3}, {"hidden_dim": 0}, {"loss": "hinge"}, {"mask_ratio": 1.0}):
        with pytest.raises(ValidationError):
            TrainOptions.model_validate(bad)


@pytest.mark.parametrize(
    "config",
    [
        {"objective": "steps", "encoder": "transformer"},
        {"encoder": "transformer", "hidden_dim": 30, "num_heads": 4},
        {"min_context_len": 20},
        {"pooling": "max_mean"},
        {"kernel_size": 4},
        # Each of these once got a 202 and then failed in the worker (issue 26).
        {"max_offset": 4096},  # IndexError: past the predictor's offset embedding
        {"batch_size": 1, "output_norm": "batch"},  # "Expected more than 1 value per channel"
        {"loss": "infonce", "temperature": 1e-300},  # infinite logits, then "SVD did not converge"
        {"steps": True},  # taken for 1
        {"epochs": True},
        {"lr": True},
        {"steps": "3"},
        {"lr": float("nan")},
    ],
)
def test_options_that_cannot_work_together_are_refused_when_queued(config: dict) -> None:
    with pytest.raises(ValidationError):
        TrainingSpec.model_validate({"model": "m", "dataset": {"num_samples": 64, "seq_len": 20}, "config": config})


def test_the_job_records_its_resolved_configs() -> None:
    spec = tiny_spec(num_targets=2, max_offset=1)
    assert spec.resolved is not None
    model, train = spec.configs()
    assert (train.num_targets, train.max_offset, model.hidden_dim) == (2, 1, 16)
    assert TrainingSpec.model_validate(spec.model_dump(mode="json")).resolved == spec.resolved


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> StorageSettings:
    return StorageSettings(data_dir=tmp_path / "data", database_url=database_url)


def test_a_queued_job_trains_what_was_resolved_even_after_a_preset_changes(
    factory: SessionFactory, settings: StorageSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = TrainingSpec.model_validate(
        {"model": "toy", "dataset": {"num_samples": 64, "seq_len": 12, "seed": 0}, "config": {"epochs": 1}}
    )
    job_id = in_transaction(factory, lambda s: jobs.enqueue(s, spec).id)
    queued_width = spec.configs()[0].hidden_dim
    # A deploy changes the preset the job was resolved from, while the job waits.
    changed = dataclasses.replace(PRESETS["trajectory"].model, hidden_dim=queued_width + 8)
    monkeypatch.setitem(PRESETS, "trajectory", dataclasses.replace(PRESETS["trajectory"], model=changed))
    assert TrainingSpec.model_validate({**spec.model_dump(mode="json"), "resolved": None}).configs()[0].hidden_dim == (
        queued_width + 8
    )
    version = run_to_a_version(factory, settings, job_id)
    assert load_checkpoint(settings.data_dir / version.path, version.sha256).model_config.hidden_dim == queued_width


def test_the_runner_checks_a_queued_jobs_configs_again_before_training(
    factory: SessionFactory, settings: StorageSettings
) -> None:
    # A job queued by an older release, whose configs the one check now refuses.
    spec = tiny_spec()
    assert spec.resolved is not None
    spec.resolved.train["max_offset"], spec.resolved.model["predictor_offsets"] = 4096, 5
    with pytest.raises(InvalidInput, match="max_offset"):
        spec.configs()
    stale = TrainingSpec.model_validate(spec.model_dump(mode="json"))  # as the runner loads it
    job_id = in_transaction(factory, lambda s: jobs.enqueue(s, tiny_spec()).id)
    in_transaction(
        factory,
        lambda s: s.execute(update(JobRow).where(JobRow.id == job_id).values(spec=stale.model_dump(mode="json"))),
    )
    jobs.claim(factory, job_id, "test")
    with pytest.raises(InvalidInput, match="must be less than predictor_offsets"):  # not an IndexError in torch
        run_job(factory, settings, job_id)


def test_enqueue_refuses_data_parallel_workers_that_a_local_executor_cannot_run(factory: SessionFactory) -> None:
    spec = tiny_spec(workers=2)
    with pytest.raises(InvalidInput, match="JEPA_EXECUTOR=ray"):
        in_transaction(factory, lambda s: jobs.enqueue(s, spec, executor="local"))
    assert in_transaction(factory, lambda s: jobs.enqueue(s, spec, executor="ray").id)


def test_a_stored_dataset_shape_is_the_servers() -> None:
    from training.execution.spec import SERVER_SET_DATASET_FIELDS, StoredDataset, refuse_server_set_fields

    named = {"kind": "stored", "id": "a" * 32}
    assert refuse_server_set_fields({**named, "min_len": None}) == named
    for field in SERVER_SET_DATASET_FIELDS:
        with pytest.raises(ValueError, match=f"{field} is set by the server"):
            refuse_server_set_fields({**named, field: 4096})
    assert set(SERVER_SET_DATASET_FIELDS) == set(StoredDataset.model_fields) - {"kind", "id"}


@pytest.mark.parametrize(
    "lengths",
    [[20] * 10, [2000, 2000], [100, 2000], [100, 130, 5000], [130] * 3, [5000] * 8, [64, 127], [128], [300, 127, 128]],
)
def test_the_check_knows_the_shortest_piece_that_training_reads(lengths: list[int]) -> None:
    sequences = [np.zeros((n, 1), np.float32) for n in lengths]
    read = training_pieces(sequences)[0] if needs_pieces(lengths) else sequences
    fewest = min(len(x) for x in read)
    bound = shortest_trained(min(lengths), max(lengths), len(lengths))
    assert bound <= fewest  # never more than any piece has
    if len(lengths) <= 2 or min(lengths) >= 128 or not needs_pieces(lengths):
        assert bound == fewest  # exact where the lengths between the shortest and the longest are known


def test_windows_longer_than_the_pieces_of_long_series_are_refused_when_queued(
    factory: SessionFactory, tmp_path: Path
) -> None:
    # Two 2,000-step series train as pieces of 512 steps; windows of 610 once failed in the worker.
    row = stored_dataset(factory, tmp_path, [np.zeros((2000, 1), np.float32)] * 2)
    request = {"model": "m", "dataset": {"kind": "stored", "id": row.id}, "config": {"steps": 1}}
    with factory() as session:
        for context_len, refused in ((600, True), (500, False)):
            spec = TrainingSpec.model_validate({**request, "config": {"context_len": context_len, "target_len": 10}})
            if refused:
                with pytest.raises(InvalidInput, match="610 exceeds the shortest sequence's length 512 .* pieces"):
                    resolve_spec(session, spec)
            else:
                assert resolve_spec(session, spec).configs()[1].window_len == 510
