"""Labelled datasets through the runner: label metrics on held-out sequences, labels never trained on."""

from pathlib import Path

import numpy as np
import pytest

import training.execution.runner as runner
from jepa_model import SequenceDataset
from tests.factories import TINY_CONFIG, run_to_a_version, sines_and_squares, stored_dataset
from training.execution import jobs
from training.execution.spec import TrainingSpec
from training.settings import StorageSettings
from training.store.db import SessionFactory, in_transaction

# The registry is scaffolding here: the database matrix runs where the database is the subject.
pytestmark = pytest.mark.database_incidental

LABEL_KEYS = {
    "label_probe_accuracy",
    "label_knn_accuracy",
    "label_majority_accuracy",
    "label_classes",
    "label_held_out",
}


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> StorageSettings:
    return StorageSettings(data_dir=tmp_path / "data", database_url=database_url)


def train_on(factory: SessionFactory, settings: StorageSettings, dataset_id: str, model: str) -> dict:
    spec = TrainingSpec.model_validate({"model": model, "dataset": {"id": dataset_id}, "config": TINY_CONFIG})
    job_id = in_transaction(factory, lambda s: jobs.enqueue(s, jobs.resolve_spec(s, spec)).id)
    return dict(run_to_a_version(factory, settings, job_id).metrics)


def test_a_version_trained_on_labelled_data_reports_label_metrics(
    factory: SessionFactory, settings: StorageSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    waves, labels = sines_and_squares(40)
    labelled = stored_dataset(factory, settings.data_dir, list(waves), name="waves", labels=labels)
    plain = stored_dataset(factory, settings.data_dir, list(waves), name="plain")
    fitted_on: list[list[np.ndarray]] = []
    original_fit = runner.fit

    def spy(dataset, *args, **kwargs):  # type: ignore[no-untyped-def]
        # fit gets plain sequences, exactly as for an unlabelled dataset: nothing carries the labels.
        assert type(dataset) is SequenceDataset and dataset.kinds is None
        fitted_on.append([s.numpy() for s in dataset.data])
        return original_fit(dataset, *args, **kwargs)

    monkeypatch.setattr(runner, "fit", spy)
    metrics = train_on(factory, settings, labelled.id, "waves")
    assert set(metrics) >= LABEL_KEYS
    assert (metrics["label_classes"], metrics["label_held_out"], metrics["held_out_sequences"]) == (2, 10, 10)
    for key in ("label_probe_accuracy", "label_knn_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["label_majority_accuracy"] == 0.5  # a stratified split: five of each class
    assert len(fitted_on[0]) == 30 and all(s.shape == (20, 1) for s in fitted_on[0])

    unlabelled = train_on(factory, settings, plain.id, "plain")
    assert not any(key.startswith("label_") for key in unlabelled)
    assert unlabelled["held_out_sequences"] == 4  # a tenth, as for any unlabelled dataset


def test_a_tiny_labelled_dataset_records_its_classes_but_no_accuracies(
    factory: SessionFactory, settings: StorageSettings
) -> None:
    waves, labels = sines_and_squares(6)
    row = stored_dataset(factory, settings.data_dir, list(waves), labels=labels)
    metrics = train_on(factory, settings, row.id, "tiny")
    assert {k: v for k, v in metrics.items() if k.startswith("label_")} == {"label_classes": 2, "label_held_out": 0}
