import pytest

from jepa_model.budget import estimate_training
from training.errors import InvalidInput
from training.execution.spec import TrainingSpec


def spec(dataset: dict, config: dict) -> TrainingSpec:
    return TrainingSpec.model_validate({"model": "m", "dataset": dataset, "config": config})


def test_the_first_start_job_and_the_series_preset_fit_the_default_budget() -> None:
    spec({"num_samples": 1000, "seq_len": 20}, {"epochs": 50}).check_memory(4096)
    spec({"num_samples": 2000, "seq_len": 500}, {"preset": "series"}).check_memory(4096)


def test_a_job_whose_fields_are_each_capped_but_whose_product_is_not_is_refused() -> None:
    huge = spec(
        {"num_samples": 200_000, "seq_len": 4096},
        {"preset": "trajectory", "batch_size": 65_536, "hidden_dim": 1024, "num_layers": 8},
    )
    assert huge.estimate().total_bytes > 40 * 2**30
    with pytest.raises(InvalidInput, match="JEPA_TRAIN_MEMORY_MB"):
        huge.check_memory(4096)


def test_the_estimate_grows_with_each_factor() -> None:
    model, train = spec({"num_samples": 100, "seq_len": 64}, {"preset": "trajectory"}).configs()
    base = estimate_training(model, train, 100, 64, 2).total_bytes
    assert estimate_training(model, train, 10_000, 64, 2).total_bytes > base  # more data
    wider = spec({"num_samples": 100, "seq_len": 64}, {"preset": "trajectory", "hidden_dim": 512}).configs()
    assert estimate_training(*wider, 100, 64, 2).total_bytes > base  # a bigger model
    bigger_batch = spec({"num_samples": 100, "seq_len": 64}, {"preset": "trajectory", "batch_size": 100}).configs()
    assert estimate_training(*bigger_batch, 100, 64, 2).total_bytes > base  # more activations
