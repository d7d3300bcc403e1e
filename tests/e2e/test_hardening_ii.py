"""Misconfiguration and protocol abuse, against real servers: blank keys, keys in query strings,
unauthenticated metrics, slow headers, racing alias writes, and versions that no longer load."""

from __future__ import annotations

import io
import json
import shutil
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.e2e.disks import tmpfs
from tests.e2e.servers import Server, StartServer, wait_for_job
from tests.factories import TINY_CONFIG, registry_with_a_version

KEY = "another-k3y-never-logged"
AUTH = {"Authorization": f"Bearer {KEY}"}
TINY_TRAIN = {"model": "trajectories", "dataset": {"num_samples": 64, "seq_len": 12}, "config": TINY_CONFIG}


def test_a_blank_key_is_no_key_and_says_so(start_server: StartServer) -> None:
    server = start_server(JEPA_API_KEY="   ", JEPA_BOOTSTRAP="0")
    with server.client() as client:
        assert client.get("/info").json()["auth"] == {"writes": False, "reads": False}
    assert "JEPA_API_KEY is not set (or blank)" in server.log()


def test_metrics_need_the_key_with_auth_reads_and_query_keys_are_redacted(start_server: StartServer) -> None:
    server = start_server(JEPA_API_KEY=KEY, JEPA_AUTH_READS="1", JEPA_BOOTSTRAP="0", JEPA_EMBEDDED_WORKER="0")
    with server.client() as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers=AUTH).status_code == 200
        assert client.get("/health").status_code == 200  # probes stay open
        assert client.get(f"/models?api_key={KEY}&token={KEY}").status_code == 401
    server.stop()
    log = server.log()
    assert "/models?api_key=REDACTED&token=REDACTED" in log
    assert KEY not in log


def test_headers_trickled_slower_than_the_deadline_lose_the_connection(start_server: StartServer) -> None:
    server = start_server(JEPA_HEADER_TIMEOUT_S="1", JEPA_BOOTSTRAP="0", JEPA_EMBEDDED_WORKER="0")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        started, closed = time.monotonic(), False
        while time.monotonic() - started < 8:
            try:
                sock.sendall(b"X-Slow: 1\r\n")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            sock.settimeout(0.3)
            try:
                if sock.recv(1024) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
        assert closed, "the server kept a connection whose headers never finished"
        assert time.monotonic() - started < 4
    with server.client() as client:  # ordinary requests are unaffected
        assert client.get("/health").status_code == 200


def race_alias(server: Server, alias: str, count: int = 40) -> list[int]:
    def put(_: int) -> int:
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            return client.put(f"/models/trajectories/aliases/{alias}", json={"version": 1}).status_code

    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(put, range(count)))


def test_concurrent_puts_of_one_new_alias_all_succeed(server: Server) -> None:
    statuses = race_alias(server, "raced")
    assert statuses == [200] * len(statuses)


def test_concurrent_puts_of_one_new_alias_all_succeed_on_postgres(
    start_server: StartServer, fresh_postgres_url: str, tmp_path: Path
) -> None:
    registry_with_a_version(fresh_postgres_url, tmp_path / "data", "trajectories")  # the version 1 the aliases name
    server = start_server(tmp_path / "data", JEPA_DATABASE_URL=fresh_postgres_url, JEPA_BOOTSTRAP="0")
    server.wait_for("/ready")
    for round_ in range(3):
        statuses = race_alias(server, f"raced{round_}")
        assert statuses == [200] * len(statuses)


def test_a_version_whose_config_no_longer_loads_is_unavailable(start_server: StartServer, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = start_server(data_dir, trained=True)
    server.wait_for("/ready")
    with server.client() as client:
        jobs = [client.post("/train", json=TINY_TRAIN).json()["job_id"] for _ in range(2)]
        assert [wait_for_job(client, job)["status"] for job in jobs] == ["succeeded"] * 2
        config_of = {job: data_dir / "checkpoints" / "trajectories" / job / "config.json" for job in jobs}
        config_of[jobs[0]].write_text("{not json")
        edited = json.loads(config_of[jobs[1]].read_text())
        edited["model"]["hidden_dim"] += 1
        config_of[jobs[1]].write_text(json.dumps(edited))
        for number in (2, 3):
            version = client.get(f"/models/trajectories/versions/{number}").json()
            assert version["available"] is False and "config.json" in version["problem"]
            assert str(data_dir) not in version["problem"]
            refused = client.post("/encode", json={"version": number, "sequences": [[[0.0, 1.0]]]})
            assert refused.status_code == 503 and "config.json" in refused.json()["detail"]
            assert str(data_dir) not in refused.json()["detail"]
        assert client.get("/models/trajectories/versions/1").json()["available"] is True


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 48 MB tmpfs: a disk the test can fill. Needs root (mount)."""
    with tmpfs(tmp_path / "disk", 48, "the disk-full path is covered by unit tests") as disk:
        yield disk


def test_an_upload_on_a_full_disk_gets_507_and_leaves_nothing_behind(
    start_server: StartServer, small_disk: Path
) -> None:
    data_dir = small_disk / "data"
    server = start_server(data_dir, JEPA_BOOTSTRAP="0", JEPA_EMBEDDED_WORKER="0")
    dataset = io.BytesIO()
    np.save(dataset, np.zeros((64, 1024, 16), np.float32))  # 4 MB
    filler = small_disk / "filler"
    with server.client() as client:
        free = shutil.disk_usage(small_disk).free
        filler.write_bytes(b"\0" * (free - 1024 * 1024))  # leave 1 MB
        full = client.post("/datasets", files={"file": ("d.npy", dataset.getvalue())})
        assert full.status_code == 507, full.text
        assert "no room" in full.json()["detail"] and str(small_disk) not in full.json()["detail"]
        leftovers = (
            [p for p in (data_dir / "datasets").rglob("*") if p.is_file()] if (data_dir / "datasets").exists() else []
        )
        assert leftovers == []
        not_ready = client.get("/ready")
        assert not_ready.status_code == 503 and "disk" in not_ready.json()["detail"]
        filler.unlink()
        assert client.post("/datasets", files={"file": ("d.npy", dataset.getvalue())}).status_code == 201
