"""Database engines and sessions, for SQLite (embedded default) and PostgreSQL (scale-out).

Two kinds of failure are retried, separately. `in_transaction` retries a transaction that lost a
race with a concurrent writer (a few times, within a second). `retry_unreachable` outlasts a
database that cannot be reached at all (restarting, failing over, a cut network) for as long as
the caller allows, JEPA_DB_RETRY_S for a training job's writes.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

T = TypeVar("T")

SessionFactory = sessionmaker[Session]

log = logging.getLogger("jepa.db")

# PostgreSQL errors that mean "another transaction got in the way", by SQLSTATE: serialization
# failure, deadlock, lock not available.
PG_CONTENTION = frozenset({"40001", "40P01", "55P03"})
# SQLite's messages for a file it cannot use right now (a full or failing disk, a lost mount),
# as opposed to a wrong statement ("no such table").
SQLITE_UNAVAILABLE = ("unable to open", "disk i/o", "full", "readonly", "read-only")
# A database whose disk (or quota, or size cap) has no room: SQLite's SQLITE_FULL ("database or disk
# is full") and PostgreSQL's disk_full (SQLSTATE 53100).
SQLITE_FULL = 13
PG_DISK_FULL = "53100"
# Waits between attempts to reach an unreachable database: doubling from the first, capped.
UNREACHABLE_FIRST_WAIT_S = 0.25
UNREACHABLE_MAX_WAIT_S = 5.0
# A PostgreSQL host that drops packets would otherwise hold a connection attempt for minutes.
PG_CONNECT_TIMEOUT_S = 10
# PostgreSQL ends a session whose transaction has sat idle this long. A process cut off from the
# network mid-transaction never sends its COMMIT, and the server would otherwise keep its row
# locks until TCP keepalive gives up on it, hours later: stale-job recovery waited on the lost
# job's row (tests/e2e/test_netns.py caught it). No transaction here pauses anywhere near this long.
PG_IDLE_IN_TRANSACTION_S = 30


class DatabaseUnreachable(RuntimeError):
    """The database stayed unreachable for the whole retry window. The message names no host."""


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
    query = make_url(url).query
    connect_args: dict[str, Any] = {} if "connect_timeout" in query else {"connect_timeout": PG_CONNECT_TIMEOUT_S}
    if "options" not in query:
        connect_args["options"] = f"-c idle_in_transaction_session_timeout={PG_IDLE_IN_TRANSACTION_S * 1000}"
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args)


def create_session_factory(engine: Engine) -> SessionFactory:
    return sessionmaker(engine, expire_on_commit=False)


def is_contention(exc: BaseException) -> bool:
    """Whether `exc` says a concurrent writer got there first (worth trying again at once)."""
    if isinstance(exc, IntegrityError):
        return True  # unique-number allocation (version numbers) lost a race
    if not isinstance(exc, OperationalError) or exc.connection_invalidated:
        return False
    if isinstance(exc.orig, sqlite3.OperationalError):
        return "locked" in str(exc.orig) or "busy" in str(exc.orig)  # SQLite's single writer
    return getattr(exc.orig, "sqlstate", None) in PG_CONTENTION


def is_unreachable(exc: BaseException) -> bool:
    """Whether `exc` says the database could not be reached or dropped the connection (refused,
    restarting, a cut network; SQLite: its file cannot be opened or written), rather than that
    the statement or the data was wrong."""
    if not isinstance(exc, DBAPIError) or is_contention(exc):
        return False
    if exc.connection_invalidated or isinstance(exc, InterfaceError):
        return True
    if isinstance(exc.orig, sqlite3.OperationalError):
        message = str(exc.orig).lower()
        return any(sign in message for sign in SQLITE_UNAVAILABLE)
    return isinstance(exc, OperationalError)


# A file write fails with these when the disk, the user's quota, or the largest file allowed is
# full; the database's own full disk is `is_storage_full`.
STORAGE_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def is_storage_full(exc: BaseException) -> bool:
    """Whether `exc` says the database has no room for the write: its disk is full. Retrying at
    once does not help; the caller is told so (507) rather than that the database is away."""
    if not isinstance(exc, DBAPIError):
        return False
    orig = exc.orig
    if isinstance(orig, sqlite3.Error):
        return getattr(orig, "sqlite_errorcode", None) == SQLITE_FULL or "database or disk is full" in str(orig)
    return getattr(orig, "sqlstate", None) == PG_DISK_FULL


def in_transaction(factory: SessionFactory, fn: Callable[[Session], T], attempts: int = 5) -> T:
    """Run `fn` in its own transaction, retrying when a concurrent writer got there first.

    Unique-number allocation (version numbers) and SQLite's single writer both surface races as
    IntegrityError or OperationalError; the whole transaction is simply tried again. A database
    that cannot be reached is not retried here: see `retry_unreachable`.
    """
    for attempt in range(attempts):
        try:
            with factory.begin() as session:
                return fn(session)
        except (IntegrityError, OperationalError) as exc:
            if attempt == attempts - 1 or not is_contention(exc):
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def retry_unreachable(fn: Callable[[], T], window_s: float, doing: str, stop: threading.Event | None = None) -> T:
    """Call `fn` until it gets through, while it fails only because the database is unreachable.

    Waits between attempts double up to UNREACHABLE_MAX_WAIT_S. After `window_s` (or once `stop`
    is set) raises DatabaseUnreachable, whose message says what was being done (`doing`) but not
    where the database is. `fn` should be one whole transaction, safe to run again: a commit
    whose acknowledgement was lost is retried too.
    """
    deadline = time.monotonic() + window_s
    wait = UNREACHABLE_FIRST_WAIT_S
    while True:
        try:
            return fn()
        except DBAPIError as exc:
            if not is_unreachable(exc):
                raise
            left = deadline - time.monotonic()
            if left <= 0 or (stop is not None and stop.is_set()):
                raise DatabaseUnreachable(
                    f"the database was unreachable for {window_s:g} s ({type(exc).__name__}) while {doing}"
                ) from exc
            log.warning("database unreachable while %s (%s); retrying in %.2g s", doing, type(exc).__name__, wait)
            if stop is not None:
                stop.wait(min(wait, left))
            else:
                time.sleep(min(wait, left))
            wait = min(wait * 2, UNREACHABLE_MAX_WAIT_S)
