import subprocess
import sys

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from training.db import create_db_engine
from training.migrate import upgrade_to_head
from training.models import Base

HEAD = "0003"


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
    script = "import sys; from training.migrate import upgrade_to_head; upgrade_to_head(sys.argv[1])"
    procs = [subprocess.Popen([sys.executable, "-c", script, database_url], stderr=subprocess.PIPE) for _ in range(4)]
    errors = [p.communicate(timeout=120)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    engine = create_db_engine(database_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [HEAD]
    finally:
        engine.dispose()
