import os
import subprocess
import sys
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from training.store.db import create_db_engine
from training.store.migrate import upgrade_to_head
from training.store.models import Base

HEAD = "0006"


def test_head_creates_the_registry_and_is_idempotent(database_url: str) -> None:
    upgrade_to_head(database_url)
    upgrade_to_head(database_url)  # every entry point runs it at start
    engine = create_db_engine(database_url)
    try:
        assert set(inspect(engine).get_table_names()) >= {
            "models",
            "versions",
            "aliases",
            "jobs",
            "datasets",
            "job_epochs",
            "alembic_version",
        }
    finally:
        engine.dispose()


def test_the_migrations_match_the_orm_models(database_url: str) -> None:
    upgrade_to_head(database_url)
    engine = create_db_engine(database_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    finally:
        engine.dispose()
    assert diff == [], f"ORM models and migrations differ; add a migration: {diff}"


def test_processes_starting_together_migrate_once(database_url: str) -> None:
    """Every entry point migrates at start; several at once must neither fail nor double-apply."""
    script = "import sys; from training.store.migrate import upgrade_to_head; upgrade_to_head(sys.argv[1])"
    procs = [subprocess.Popen([sys.executable, "-c", script, database_url], stderr=subprocess.PIPE) for _ in range(4)]
    errors = [p.communicate(timeout=120)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    engine = create_db_engine(database_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [HEAD]
    finally:
        engine.dispose()


def test_the_alembic_command_uses_the_same_migrations(tmp_path: Path) -> None:
    """Developers run `alembic upgrade head` from the repository root; alembic.ini points it at
    training/store/migrations, the scripts the services run from inside the package."""
    root = Path(__file__).resolve().parents[3]
    env = {k: v for k, v in os.environ.items() if not k.startswith("JEPA_")} | {"JEPA_DATA_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"], cwd=root, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    engine = create_db_engine(f"sqlite:///{tmp_path / 'jepa.db'}")
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [HEAD]
    finally:
        engine.dispose()
