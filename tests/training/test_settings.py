import sys
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from jepa_model.devices import resolve_device
from tests.extras import needs
from training.settings import StorageSettings


def test_sqlite_under_the_data_dir_by_default(tmp_path: Path) -> None:
    settings = StorageSettings(data_dir=tmp_path)
    assert settings.resolved_database_url == f"sqlite:///{tmp_path.resolve() / 'jepa.db'}"


def test_the_url_from_the_environment_wins_and_its_password_is_never_shown(monkeypatch) -> None:
    monkeypatch.setenv("JEPA_DATABASE_URL", "postgresql+psycopg://jepa:s3cret@db:5432/jepa")
    settings = StorageSettings()
    assert settings.resolved_database_url.endswith("jepa:s3cret@db:5432/jepa")
    assert "s3cret" not in settings.safe_database_url and "***" in settings.safe_database_url


def test_the_device_is_auto_by_default_and_nothing_else_but_cpu_or_cuda(monkeypatch) -> None:
    monkeypatch.delenv("JEPA_DEVICE", raising=False)
    assert StorageSettings().device == "auto"
    monkeypatch.setenv("JEPA_DEVICE", "cpu")
    assert StorageSettings().device == "cpu"
    monkeypatch.setenv("JEPA_DEVICE", "tpu")
    with pytest.raises(ValidationError, match="device"):
        StorageSettings()


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto means CUDA where torch sees it")
def test_auto_is_the_cpu_without_cuda_and_cuda_says_why_it_cannot_be_had() -> None:
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="torch sees no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="must be one of"):
        resolve_device("tpu")


def test_training_runs_locally_unless_the_ray_executor_is_asked_for(monkeypatch) -> None:
    for name in ("JEPA_EXECUTOR", "JEPA_RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    assert (StorageSettings().executor, StorageSettings().ray_address) == ("local", None)


@needs("ray", extra="ray")
def test_the_ray_executor_needs_the_clusters_address(monkeypatch) -> None:
    # Only with Ray installed: without it, the missing package is what the executor is refused for.
    monkeypatch.delenv("JEPA_RAY_ADDRESS", raising=False)
    with pytest.raises(ValidationError, match="JEPA_EXECUTOR=ray needs JEPA_RAY_ADDRESS"):
        StorageSettings(executor="ray")


def test_the_ray_executor_without_ray_installed_says_how_to_get_it(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what find_spec sees where Ray is not installed
    with pytest.raises(ValidationError, match=r"pip install 'jepa-service\[ray\]'"):
        StorageSettings(executor="ray", ray_address="127.0.0.1:6379")
