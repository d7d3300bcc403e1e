from pathlib import Path

from training.settings import StorageSettings


def test_sqlite_under_the_data_dir_by_default(tmp_path: Path) -> None:
    settings = StorageSettings(data_dir=tmp_path)
    assert settings.resolved_database_url == f"sqlite:///{tmp_path.resolve() / 'jepa.db'}"


def test_the_url_from_the_environment_wins_and_its_password_is_never_shown(monkeypatch) -> None:
    monkeypatch.setenv("JEPA_DATABASE_URL", "postgresql+psycopg://jepa:s3cret@db:5432/jepa")
    settings = StorageSettings()
    assert settings.resolved_database_url.endswith("jepa:s3cret@db:5432/jepa")
    assert "s3cret" not in settings.safe_database_url and "***" in settings.safe_database_url
