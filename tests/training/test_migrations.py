from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from training.db import create_db_engine
from training.migrate import upgrade_to_head
from training.models import Base


def test_head_creates_the_registry_and_is_idempotent(database_url: str) -> None:
    upgrade_to_head(database_url)
    upgrade_to_head(database_url)  # every entry point runs it at start
    engine = create_db_engine(database_url)
    try:
        assert set(inspect(engine).get_table_names()) >= {"models", "versions", "aliases", "jobs", "alembic_version"}
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
