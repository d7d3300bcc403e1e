"""Fixtures that start real servers on free ports, each with its own data directory (and, with
JEPA_TEST_E2E_DATABASE=postgres, its own PostgreSQL database: see tests/e2e/servers.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.servers import (
    E2E_DATABASE,
    MemoryLimit,
    Server,
    StartServer,
    copy_data_dir,
    databases,
    free_port,
    server_env,
)

# Tests that cannot run with JEPA_TEST_E2E_DATABASE=postgres: the registry they need is the SQLite
# file in a server's data dir (file::test -> why). They run, unchanged, in the default mode.
SQLITE_REGISTRY_ONLY = {
    "test_real_series.py::test_versions_trained_before_step_models_serve_the_same_embeddings": (
        "it registers versions by writing to the data dir's jepa.db itself"
    ),
    "test_full_database.py::test_a_real_server_whose_database_disk_fills_answers_507": (
        "it fills the disk under the data dir's jepa.db; a PostgreSQL registry is elsewhere"
    ),
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if E2E_DATABASE != "postgres":
        return
    here = Path(__file__).parent
    for item in items:
        reason = SQLITE_REGISTRY_ONLY.get(f"{item.path.name}::{getattr(item, 'originalname', item.name)}")
        if reason and item.path.parent == here:
            item.add_marker(pytest.mark.skip(reason=f"JEPA_TEST_E2E_DATABASE=postgres: {reason}"))


@pytest.fixture(scope="session", autouse=True)
def drop_data_dir_databases() -> Iterator[None]:
    """In postgres mode, drop this process's data-dir databases once its servers have stopped."""
    yield
    databases.drop_all()


def serve(data_dir: Path, log_dir: Path, memory_limit: MemoryLimit | None = None, **env: str) -> Server:
    """`jepa serve` on a free port, its log beside the test's other files."""
    port = free_port()
    return Server(
        args=["serve", "--host", "127.0.0.1", "--port", str(port)],
        env=server_env(data_dir, **env),
        log_path=log_dir / f"server-{port}.log",
        memory_limit=memory_limit,
        port=port,
    )


@pytest.fixture(scope="session")
def trained_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stopped server's data directory (its registry, the SQLite file in it or in postgres mode
    its own database, and checkpoints, paths relative to it) holding the default model its first
    start trained. Tests that need a ready model, not that first-start training (which
    test_lifecycle and the README tour exercise), start from a copy (`copy_data_dir`: the database
    too): each saves a training process's start and run."""
    tmp = tmp_path_factory.mktemp("trained")
    server = serve(tmp / "data", tmp)
    try:
        server.wait_for("/ready")
    finally:
        server.stop()
    # A copy of a registry cut off mid-write would fail every test that starts from it.
    assert "Application shutdown complete" in server.log(), server.log()
    return tmp / "data"


@pytest.fixture
def start_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[StartServer]:
    """Start servers on demand (optionally on a shared data dir, or with `trained=True` on a copy of
    `trained_data_dir`); all are stopped at teardown."""
    started: list[Server] = []

    def start(
        data_dir: Path | None = None, memory_limit: MemoryLimit | None = None, trained: bool = False, **env: str
    ) -> Server:
        data_dir = data_dir or tmp_path / f"server-data-{len(started)}"
        if trained:
            copy_data_dir(request.getfixturevalue("trained_data_dir"), data_dir)
        server = serve(data_dir, tmp_path, memory_limit, **env)
        started.append(server)
        server.wait_for("/health")
        return server

    yield start
    for server in started:
        server.stop()


@contextlib.contextmanager
def ready_on_a_copy(trained_data_dir: Path, tmp: Path) -> Iterator[Server]:
    """A ready server on a copy of `trained_data_dir` in `tmp` (its log there too), stopped after."""
    copy_data_dir(trained_data_dir, tmp / "data")
    server = serve(tmp / "data", tmp)
    try:
        server.wait_for("/ready")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, trained_data_dir: Path) -> Iterator[Server]:
    """One ready server for the suite: the bootstrapped default model (on SQLite, or in postgres
    mode on PostgreSQL)."""
    with ready_on_a_copy(trained_data_dir, tmp_path_factory.mktemp("server")) as server:
        yield server


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client
