"""Bring a database's schema to the newest alembic revision, safely from many processes at once.

Every entry point (API replicas, workers, the CLI) calls `upgrade_to_head` at start. When several
start together, one migrates while the others wait for it and then find nothing left to do:
PostgreSQL serialises them with an advisory lock, SQLite with a lock file beside the database.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text

from training.store.db import create_db_engine

# The migrations ship inside this package (package data in pyproject.toml), so any install has them.
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Any fixed 64-bit number names the lock; every process that migrates must use the same one.
MIGRATION_LOCK_KEY = 0x4A455041  # "JEPA"


def alembic_config(url: str) -> Config:
    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise RuntimeError(f"alembic migrations not found at {MIGRATIONS_DIR}: the package was built without them")
    cfg = Config()  # no alembic.ini at run time: that file is for developers running `alembic` by hand
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["url"] = url  # passed as an attribute: an .ini option would mangle '%' in passwords
    return cfg


@contextmanager
def migration_lock(conn: Connection) -> Iterator[None]:
    """Hold the cross-process migration lock for the database behind `conn`."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        conn.commit()  # the lock belongs to the session, so it outlives this transaction
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
            conn.commit()
        return
    database = conn.engine.url.database
    if conn.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate.lock", "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)  # released when the file closes
        yield


def upgrade_to_head(url: str) -> None:
    cfg = alembic_config(url)
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn, migration_lock(conn):
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            conn.commit()
    finally:
        engine.dispose()
