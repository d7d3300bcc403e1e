"""Fixtures that start real servers on free ports, each with its own data directory."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.servers import MemoryLimit, Server, StartServer, free_port, server_env


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
    """A stopped server's data directory (SQLite registry and checkpoints, paths relative to it)
    holding the default model its first start trained. Tests that need a ready model, not that
    first-start training (which test_lifecycle and the README tour exercise), start from a copy:
    each saves a training process's start and run."""
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
            shutil.copytree(request.getfixturevalue("trained_data_dir"), data_dir)
        server = serve(data_dir, tmp_path, memory_limit, **env)
        started.append(server)
        server.wait_for("/health")
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, trained_data_dir: Path) -> Iterator[Server]:
    """One ready server for the suite: the bootstrapped default model on SQLite."""
    tmp = tmp_path_factory.mktemp("server")
    shutil.copytree(trained_data_dir, tmp / "data")
    server = serve(tmp / "data", tmp)
    try:
        server.wait_for("/ready")
        yield server
    finally:
        server.stop()


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client
