from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from jepa_model.devices import resolve_device
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
