"""Shared fixtures. Database tests run twice: on SQLite and on the real PostgreSQL server.

A test (or module) marked `database_incidental` uses the registry only as scaffolding: it runs on
SQLite alone, unless JEPA_TEST_ALL_DATABASES=1 asks for the whole matrix (a full PostgreSQL run).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import torch

from tests.postgres import throwaway_database
from training.store.db import SessionFactory, create_db_engine, create_session_factory
from training.store.migrate import upgrade_to_head

# One intra-op thread per test process. Two xdist processes already keep both cores busy (and
# the servers, training processes and benches the tests start share them too); OpenMP's extra
# threads would only spin while they wait. One tiny training job took 1 CPU-second with one thread
# and 12-18 with two, the machine busy. Product processes set their own counts (JEPA_*_THREADS).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway database on the PostgreSQL server, dropped after the session."""
    with throwaway_database() as url:
        yield url


@pytest.fixture
def fresh_postgres_url(postgres_url: str) -> str:
    """The session's PostgreSQL database with a clean schema: nothing left by earlier tests."""
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()
    return postgres_url


DATABASES = ("sqlite", "postgres")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "database_incidental: the database is scaffolding here; SQLite only unless JEPA_TEST_ALL_DATABASES=1"
    )
    if not hasattr(config, "workerinput"):  # the run's first process: xdist's workers inherit its environment
        compile_numba_unoptimised(config)


def compile_numba_unoptimised(config: pytest.Config) -> None:
    """The bench tests' peers (aeon's MiniRocket and MultiRocket, stumpy) are numba code, compiled
    on first use in each fresh venv: 82 s of CPU for the peers on tiny data at numba's default
    optimisation, 49 s without it, for the same typing and the same results. The tests only check
    the answers, so they compile unoptimised, into a cache of this run's own (numba's cache does not
    tell optimisation levels apart, so one under site-packages would later serve the benches slow
    code). Subprocesses (the benches' --smoke runs) inherit both settings."""
    os.environ.setdefault("NUMBA_OPT", "0")
    if "NUMBA_CACHE_DIR" not in os.environ:
        cache = tempfile.mkdtemp(prefix="jepa-tests-numba-")
        os.environ["NUMBA_CACHE_DIR"] = cache
        config.add_cleanup(lambda: shutil.rmtree(cache, ignore_errors=True))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("JEPA_TEST_ALL_DATABASES") == "1":
        return
    incidental = [
        item
        for item in items
        if item.get_closest_marker("database_incidental")
        and getattr(item, "callspec", None) is not None
        and item.callspec.params.get("database_url", "sqlite") != "sqlite"
    ]
    if incidental:
        config.hook.pytest_deselected(items=incidental)
        items[:] = [item for item in items if item not in incidental]


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jepa.db'}"
    return request.getfixturevalue("fresh_postgres_url")


@pytest.fixture
def factory(database_url: str) -> Iterator[SessionFactory]:
    upgrade_to_head(database_url)
    engine = create_db_engine(database_url)
    yield create_session_factory(engine)
    engine.dispose()
