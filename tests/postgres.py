"""Throwaway databases on the test PostgreSQL server: one way to make, name and drop them, for the
session's database (tests/conftest.py), a module's own (tests/e2e/test_idempotency.py) and the
end-to-end servers' (tests/e2e/servers.py). Every name starts with `jepa_test_`."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

# The server every machine of this project runs; JEPA_TEST_POSTGRES_URL points elsewhere.
POSTGRES_ADMIN_URL = os.environ.get("JEPA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
PREFIX = "jepa_test_"


def admin_engine() -> sa.Engine:
    """An engine on the admin database, in autocommit: CREATE and DROP DATABASE refuse a transaction."""
    return sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")


def create_database(admin: sa.Engine, kind: str = "", template: str | None = None) -> str:
    """A new database named `jepa_test_<kind><random>` (a copy of `template`, if given); its name."""
    name = f"{PREFIX}{kind}{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
    return name


def drop_databases(admin: sa.Engine, names: list[str]) -> None:
    with admin.connect() as conn:
        for name in names:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def url_of(name: str) -> str:
    return sa.make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


@contextlib.contextmanager
def throwaway_database(kind: str = "") -> Iterator[str]:
    """The URL of a database of its own, dropped afterwards. Without a PostgreSQL server the test
    is skipped, or fails in CI (CI=true), where the server is part of the machine."""
    admin = admin_engine()
    try:
        name = create_database(admin, kind)
    except sa.exc.OperationalError as exc:
        admin.dispose()
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI and unreachable at {POSTGRES_ADMIN_URL}: {exc}")
        pytest.skip(f"PostgreSQL unreachable at {POSTGRES_ADMIN_URL}")
    try:
        yield url_of(name)
    finally:
        drop_databases(admin, [name])
        admin.dispose()
