"""The embedded worker under faults: PostgreSQL cut away mid-training (through a TCP proxy), what
/ready says when the worker is dead or the disk is full, and stale jobs recovered by the API."""

import shutil
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from service.app import create_app
from service.routes import health
from service.settings import Settings
from tests.e2e.proxy import TCPProxy
from tests.e2e.servers import Server, StartServer, wait_for_job
from tests.factories import TINY_CONFIG, add_version, tiny_spec
from tests.training.execution.test_jobs import age_heartbeat
from training.execution import jobs
from training.store.db import SessionFactory, create_db_engine, create_session_factory, in_transaction
from training.store.migrate import upgrade_to_head
from training.store.models import JobRow, JobStatus

CUT_S = 8
# The default model, so that once it has a version /ready can answer 200 without a first-start job.
MODEL = "trajectories"


def train_body(epochs: int) -> dict:
    return {"model": MODEL, "dataset": {"num_samples": 64, "seq_len": 12}, "config": {**TINY_CONFIG, "epochs": epochs}}


@pytest.fixture
def proxy(fresh_postgres_url: str) -> Iterator[TCPProxy]:
    url = make_url(fresh_postgres_url)
    proxy = TCPProxy(url.host or "127.0.0.1", url.port or 5432)
    proxy.restore()
    yield proxy
    proxy.cut()


def serve_through(start_server: StartServer, proxy: TCPProxy, postgres_url: str, **env: str) -> Server:
    through = make_url(postgres_url).set(host="127.0.0.1", port=proxy.port).render_as_string(False)
    return start_server(JEPA_DATABASE_URL=through, JEPA_BOOTSTRAP="0", **env)


def cut_once_training(server: Server, proxy: TCPProxy, job_id: str) -> None:
    """Wait until the job has recorded an epoch, then cut the database away for CUT_S seconds."""
    deadline = time.monotonic() + 60
    with server.client() as client:
        while client.get(f"/jobs/{job_id}").json()["progress"]["epoch"] < 1:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
    proxy.cut()
    not_ready = server.wait_for("/ready", 503, timeout=10)
    assert "database unavailable" in not_ready.json()["detail"]
    time.sleep(CUT_S)
    proxy.restore()


def assert_the_worker_still_trains(server: Server) -> None:
    with server.client() as client:
        after = client.post("/train", json=train_body(epochs=2)).json()["job_id"]
        assert wait_for_job(client, after, timeout=60)["status"] == "succeeded", server.log()
    server.wait_for("/ready", 200, timeout=30)
    assert "Exception in thread" not in server.log()


def test_a_database_outage_mid_training_does_not_fail_the_job(
    start_server: StartServer, proxy: TCPProxy, fresh_postgres_url: str
) -> None:
    """An 8 s cut once killed the worker thread: the job stayed `running` and later jobs `queued`."""
    server = serve_through(start_server, proxy, fresh_postgres_url)
    with server.client() as client:
        job_id = client.post("/train", json=train_body(epochs=12)).json()["job_id"]
        cut_once_training(server, proxy, job_id)
        job = wait_for_job(client, job_id, timeout=60)
    assert (job["status"], job["attempts"], job["error"]) == ("succeeded", 1, None), server.log()
    assert "database unreachable while recording epoch" in server.log()  # it waited, then went on
    assert_the_worker_still_trains(server)


def test_an_outage_past_the_retry_window_leaves_no_job_stuck(
    start_server: StartServer, proxy: TCPProxy, fresh_postgres_url: str
) -> None:
    """Past JEPA_DB_RETRY_S the attempt gives up; once the database is back, stale recovery
    re-queues the job (nobody could record its failure) and the worker trains it again."""
    server = serve_through(start_server, proxy, fresh_postgres_url, JEPA_DB_RETRY_S="1", JEPA_JOB_STALE_S="3")
    with server.client() as client:
        job_id = client.post("/train", json=train_body(epochs=6)).json()["job_id"]
        cut_once_training(server, proxy, job_id)
        job = wait_for_job(client, job_id, timeout=60)
    assert (job["status"], job["attempts"]) == ("succeeded", 2), server.log()
    assert "DatabaseUnreachable: the database was unreachable for 1 s" in server.log()
    assert_the_worker_still_trains(server)


@pytest.fixture
def app_settings(tmp_path: Path) -> Iterator[Settings]:
    """An in-process app on SQLite whose default model already has a version."""
    data_dir = tmp_path / "data"
    url = f"sqlite:///{data_dir / 'jepa.db'}"
    data_dir.mkdir()
    upgrade_to_head(url)
    engine = create_db_engine(url)
    with create_session_factory(engine).begin() as session:
        add_version(session, data_dir, MODEL)
    engine.dispose()
    interval = sys.getswitchinterval()
    yield Settings(data_dir=data_dir, database_url=url, bootstrap=False, worker_poll_s=0.05)
    sys.setswitchinterval(interval)  # the lifespan tunes it for serving


class Fatal(BaseException):
    """What no loop catches (a stand-in for whatever might still kill the thread)."""


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_ready_reports_a_dead_worker(app_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    claiming = threading.Event()

    def fatal(*_args: object) -> None:
        if claiming.is_set():
            raise Fatal()

    monkeypatch.setattr(jobs, "claim_next", fatal)
    with TestClient(create_app(app_settings)) as client:
        assert client.get("/ready").status_code == 200
        claiming.set()
        deadline = time.monotonic() + 10
        while (response := client.get("/ready")).status_code == 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert response.status_code == 503
    assert response.json()["detail"].startswith("the training worker has stopped (Fatal)")


def test_ready_reports_a_full_disk(app_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    with TestClient(create_app(app_settings)) as client:
        assert client.get("/ready").status_code == 200
        real = shutil.disk_usage(app_settings.data_dir)
        monkeypatch.setattr(health.shutil, "disk_usage", lambda _path: real._replace(free=5 * 1024**2))
        response = client.get("/ready")
    assert response.status_code == 503
    assert response.json()["detail"].startswith("the data directory's disk is full or nearly so (5 MiB free)")


def stored(factory: SessionFactory, job_id: str) -> JobRow:
    with factory() as session:
        return jobs.get_job(session, job_id)


def test_the_api_recovers_stale_jobs_without_a_worker(app_settings: Settings) -> None:
    """Recovery used to live only in workers' loops: with every worker gone, a job they held stayed
    `running` for good."""
    engine = create_db_engine(app_settings.resolved_database_url)
    factory = create_session_factory(engine)
    job_id = in_transaction(factory, lambda s: jobs.enqueue(s, tiny_spec()).id)
    assert jobs.claim_next(factory, "a-worker-that-died") == job_id
    age_heartbeat(factory, job_id, 600)
    settings = app_settings.model_copy(update={"embedded_worker": False})
    try:
        with TestClient(create_app(settings)):
            deadline = time.monotonic() + 10
            while (job := stored(factory, job_id)).status != JobStatus.QUEUED:
                assert time.monotonic() < deadline, job.status
                time.sleep(0.05)
        assert "a-worker-that-died stopped heartbeating" in (job.error or "")
    finally:
        engine.dispose()
