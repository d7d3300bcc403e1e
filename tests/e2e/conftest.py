"""Fixtures that start real servers on free ports, each with its own data directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.servers import MemoryLimit, Server, StartServer, free_port, server_env


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """Start servers on demand (optionally on a shared data dir); all are stopped at teardown."""
    started: list[Server] = []

    def start(data_dir: Path | None = None, memory_limit: MemoryLimit | None = None, **env: str) -> Server:
        port = free_port()
        data_dir = data_dir or tmp_path / f"data-{port}"
        server = Server(
            args=["serve", "--host", "127.0.0.1", "--port", str(port)],
            env=server_env(data_dir, **env),
            log_path=tmp_path / f"server-{port}.log",
            memory_limit=memory_limit,
            port=port,
        )
        started.append(server)
        server.wait_for("/health")
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One ready server for the suite: bootstrapped default model on SQLite."""
    tmp = tmp_path_factory.mktemp("server")
    port = free_port()
    server = Server(
        args=["serve", "--host", "127.0.0.1", "--port", str(port)],
        env=server_env(tmp / "data"),
        log_path=tmp / "server.log",
        port=port,
    )
    try:
        server.wait_for("/ready")
        yield server
    finally:
        server.stop()


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client
