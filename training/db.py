"""Database engines and sessions, for SQLite (embedded default) and PostgreSQL (scale-out)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

T = TypeVar("T")

SessionFactory = sessionmaker[Session]


def create_db_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        # Several processes (API, workers, training children) share the file: WAL lets readers
        # run beside the single writer, and busy_timeout makes writers queue instead of failing.
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def create_session_factory(engine: Engine) -> SessionFactory:
    return sessionmaker(engine, expire_on_commit=False)


def in_transaction(factory: SessionFactory, fn: Callable[[Session], T], attempts: int = 5) -> T:
    """Run `fn` in its own transaction, retrying when a concurrent writer got there first.

    Unique-number allocation (version numbers) and SQLite's single writer both surface races as
    IntegrityError or OperationalError; the whole transaction is simply tried again.
    """
    for attempt in range(attempts):
        try:
            with factory.begin() as session:
                return fn(session)
        except (IntegrityError, OperationalError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")
