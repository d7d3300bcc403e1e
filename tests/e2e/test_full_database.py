"""A database with no room left (issue 26): `/train` and alias writes answer 507, as the docs
promise for a full disk, not `503 unavailable`, which invites a retry that cannot succeed.

In process, SQLite's own full condition (SQLITE_FULL, "database or disk is full") comes from
`PRAGMA max_page_count` capping the file at its current size; against a real server, from a
filled tmpfs under its data directory (skipped where the test cannot mount one)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event

from service.app import create_app
from service.settings import Settings
from tests.e2e.disks import tmpfs
from tests.e2e.servers import StartServer
from tests.factories import add_version

TRAIN = {"model": "toy", "dataset": {"num_samples": 64, "seq_len": 12}, "config": {"epochs": 1}}
FULL = "no room left"


def first_refusal(client: TestClient | httpx.Client, method: str, path: str, body: dict, tries: int) -> httpx.Response:
    """The first answer that is not a success: a write that fits in a page already there passes."""
    for i in range(tries):
        response = client.request(method, path.format(i=i), json=body)
        if response.status_code >= 300:
            return response
    raise AssertionError(f"{tries} writes of {method} {path} all passed: the database never filled")


def cap_at_current_size(engine: Engine) -> None:
    with engine.connect() as conn:
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar()

    @event.listens_for(engine, "connect")
    def _cap(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_conn.execute(f"PRAGMA max_page_count = {pages}")  # per connection: every new one gets it

    engine.dispose()  # the pooled connections, opened before the cap


def test_a_full_sqlite_database_answers_507_for_train_and_alias_writes(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, bootstrap=False, embedded_worker=False))
    with TestClient(app) as client:
        factory = app.state.session_factory
        with factory.begin() as session:
            add_version(session, tmp_path, "toy")
        cap_at_current_size(factory.kw["bind"])
        for method, path, body, tries in (
            ("POST", "/train", TRAIN, 50),
            ("PUT", "/models/toy/aliases/a{i}", {"version": 1}, 1000),
        ):
            refused = first_refusal(client, method, path, body, tries)
            assert refused.status_code == 507, refused.text
            assert refused.json()["type"] == "insufficient_storage" and FULL in refused.json()["detail"]
        assert client.get("/models").status_code == 200  # reads go on


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MB tmpfs the test can fill. Needs root (mount)."""
    with tmpfs(tmp_path / "disk", 16, "the in-process test covers SQLITE_FULL") as disk:
        yield disk


def test_a_real_server_whose_database_disk_fills_answers_507(start_server: StartServer, small_disk: Path) -> None:
    server = start_server(small_disk / "data", JEPA_BOOTSTRAP="0", JEPA_EMBEDDED_WORKER="0")
    filler = small_disk / "filler"
    with server.client() as client:
        assert client.post("/train", json=TRAIN).status_code == 202
        filler.write_bytes(b"\0" * shutil.disk_usage(small_disk).free)  # not a byte left
        refused = first_refusal(client, "POST", "/train", TRAIN, 200)
        assert refused.status_code == 507, refused.text
        assert FULL in refused.json()["detail"]
        filler.unlink()
        assert client.post("/train", json=TRAIN).status_code == 202  # room again: writes go on
