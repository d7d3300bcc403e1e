"""Auth, size limits and admission control, against real servers."""

import io
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from sqlalchemy.engine import make_url

from jepa_model import PRESETS
from tests.e2e.proxy import TCPProxy
from tests.e2e.servers import StartServer, wait_for_job
from tests.factories import TINY_CONFIG, registry_with_a_version

KEY = "k3y-that-must-never-be-logged"
AUTH = {"Authorization": f"Bearer {KEY}"}
NPY_HEADERS = {"content-type": "application/x-npy", "accept": "application/x-npy"}
TINY_TRAIN = {"model": "m", "dataset": {"num_samples": 64, "seq_len": 12}, "config": TINY_CONFIG}


def test_writes_need_the_key_and_limits_hold(start_server: StartServer) -> None:
    server = start_server(
        JEPA_API_KEY=KEY, JEPA_MAX_BATCH="4", JEPA_MAX_SEQ_LEN="12", JEPA_MAX_BODY_BYTES="20000", trained=True
    )
    server.wait_for("/ready")
    with server.client() as client:
        for method, path, body in [
            ("POST", "/train", TINY_TRAIN),
            ("POST", "/datasets", {"name": "d", "sequences": [[[0.0]] * 2] * 2}),
            ("PUT", "/models/trajectories/aliases/production", {"version": 1}),
            ("DELETE", "/models/trajectories/aliases/production", None),
            ("POST", "/jobs/0123/cancel", None),
        ]:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
                response = client.request(method, path, json=body, headers=headers)
                assert response.status_code == 401, (method, path, headers, response.text)
                assert response.headers["www-authenticate"].startswith("Bearer")
                assert "API key" in response.json()["detail"]
        assert client.post("/train", json=TINY_TRAIN, headers=AUTH).status_code == 202
        assert (
            client.put("/models/trajectories/aliases/production", json={"version": 1}, headers=AUTH).status_code == 200
        )

        # Reads stay open without JEPA_AUTH_READS, and so do the probes.
        assert client.post("/encode", json={"sequences": [[[0.0, 1.0]]]}).status_code == 200
        assert client.get("/models").status_code == 200
        assert client.get("/health").status_code == 200 and client.get("/ready").status_code == 200

        too_many = client.post("/encode", json={"sequences": [[[0.0, 1.0]]] * 5})
        assert too_many.status_code == 422 and "at most 4 per request" in too_many.json()["detail"]
        too_long = client.post("/encode", json={"sequences": [[[0.0, 1.0]] * 13]})
        assert too_long.status_code == 422 and "at most 12 (JEPA_MAX_SEQ_LEN)" in too_long.json()["detail"]

        big = b'{"sequences": [[' + b"[0.0, 1.0]," * 3000 + b"[0.0, 1.0]]]}"
        assert client.post("/encode", content=big, headers={"content-type": "application/json"}).status_code == 413
    assert chunked_status(server.port, big) == 413  # no Content-Length: counted as it streams
    server.stop()
    assert KEY not in server.log()


def chunked_status(port: int, body: bytes) -> int:
    """POST `body` with chunked transfer encoding (no Content-Length) and return the status."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            b"POST /encode HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        for start in range(0, len(body), 4096):
            chunk = body[start : start + 4096]
            try:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
        else:
            sock.sendall(b"0\r\n\r\n")
        return int(sock.recv(1024).split(b" ", 2)[1])


def test_reads_need_the_key_with_auth_reads_and_the_job_queue_is_bounded(start_server: StartServer) -> None:
    server = start_server(
        JEPA_API_KEY=KEY, JEPA_AUTH_READS="1", JEPA_MAX_QUEUED_JOBS="1", JEPA_BOOTSTRAP="0", JEPA_EMBEDDED_WORKER="0"
    )
    with server.client() as client:
        for path in ("/models", "/jobs", "/datasets"):
            assert client.get(path).status_code == 401
            assert client.get(path, headers=AUTH).status_code == 200
        one = {"sequences": [[[0.0, 1.0]]]}
        for path, body in (("/encode", one), ("/predict", {"contexts": one["sequences"]})):
            refused = client.post(path, json=body)  # served past FastAPI's routing (service/fast_routes.py)
            assert refused.status_code == 401 and refused.json()["type"] == "unauthorized"
            assert refused.headers["www-authenticate"].startswith("Bearer")
            assert client.post(path, json=body, headers={"Authorization": f"Basic {KEY}"}).status_code == 401
            # the key passes (no model is trained here, so the answer is then 404, not 401)
            assert client.post(path, json=body, headers=AUTH).status_code == 404
            assert client.post(path, json=body, headers={"Authorization": f"bearer {KEY}"}).status_code == 404
        assert client.get("/health").status_code == 200
        # Issue 26: the API's description and its pages are reads like any other.
        for path in ("/openapi.json", "/docs", "/redoc"):
            refused = client.get(path)
            assert refused.status_code == 401 and refused.json()["type"] == "unauthorized", path
            assert client.get(path, headers=AUTH).status_code == 200, path
        assert "/train" in client.get("/openapi.json", headers=AUTH).json()["paths"]
        # The dashboard's page holds no data: it asks for the key and sends it with every fetch.
        assert client.get("/").status_code == 200

        assert client.post("/train", json=TINY_TRAIN, headers=AUTH).status_code == 202
        refused = client.post("/train", json=TINY_TRAIN, headers=AUTH)
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert "1 training jobs are already queued" in refused.json()["detail"]


def test_without_a_key_the_service_warns_at_start(server: object) -> None:
    log = server.log()  # type: ignore[attr-defined]
    assert "JEPA_API_KEY is not set" in log


def test_the_key_is_a_security_scheme_in_openapi(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_a_corrupt_version_is_refused_while_the_others_serve(start_server: StartServer, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = start_server(data_dir, trained=True)
    server.wait_for("/ready")
    with server.client() as client:
        job = client.post("/train", json={**TINY_TRAIN, "model": "trajectories"}).json()
        assert wait_for_job(client, job["job_id"])["version"] == 2
        client.put("/models/trajectories/aliases/production", json={"version": 1})
        weights = next((data_dir / "checkpoints" / "trajectories" / job["job_id"]).glob("*.safetensors"))
        weights.write_bytes(weights.read_bytes()[:-100])  # truncated, as by a full disk

        broken = client.post("/encode", json={"version": 2, "sequences": [[[0.0, 1.0]]]})
        assert broken.status_code == 503 and "v2 is unavailable" in broken.json()["detail"]
        assert "sha256" in broken.json()["detail"]
        assert client.post("/encode", json={"version": 1, "sequences": [[[0.0, 1.0]]]}).status_code == 200
        assert client.post("/encode", json={"sequences": [[[0.0, 1.0]]]}).json()["version"] == 1
        v2 = client.get("/models/trajectories/versions/2").json()
        assert v2["available"] is False and "sha256" in v2["problem"]
        assert client.get("/models/trajectories/versions/1").json()["available"] is True
        assert client.get("/ready").status_code == 200  # the default (production -> v1) is intact


def test_without_its_database_the_service_is_not_ready_but_keeps_serving(
    start_server: StartServer, fresh_postgres_url: str, tmp_path: Path
) -> None:
    url = make_url(fresh_postgres_url)
    proxy = TCPProxy(url.host or "127.0.0.1", url.port or 5432)
    proxy.restore()
    registry_with_a_version(fresh_postgres_url, tmp_path / "data", "trajectories")
    through = url.set(host="127.0.0.1", port=proxy.port).render_as_string(False)
    server = start_server(tmp_path / "data", JEPA_DATABASE_URL=through, JEPA_BOOTSTRAP="0")
    server.wait_for("/ready")
    request = {"sequences": [[[0.0, 1.0], [1.0, 2.0]]]}
    try:
        with server.client() as client:
            assert client.post("/encode", json=request).status_code == 200
            proxy.cut()
            not_ready = server.wait_for("/ready", 503, timeout=30)
            assert "database unavailable" in not_ready.json()["detail"]
            time.sleep(1.5)  # past the name cache's lifetime: its refresh fails
            served = [client.post("/encode", json=request).status_code for _ in range(20)]
            assert served == [200] * 20  # the loaded model keeps answering from the last known registry
            assert client.get("/models").status_code == 503  # what needs the database says so
            proxy.restore()
            server.wait_for("/ready", 200, timeout=30)
    finally:
        proxy.cut()


def test_sigterm_lets_in_flight_requests_finish(start_server: StartServer) -> None:
    server = start_server(trained=True)
    server.wait_for("/ready")
    buffer = io.BytesIO()
    np.save(buffer, np.random.default_rng(0).normal(size=(4096, 200, 2)).astype(np.float32))
    results: list[httpx.Response] = []

    def slow_request() -> None:
        with server.client() as client:
            results.append(client.post("/encode", content=buffer.getvalue(), headers=NPY_HEADERS))

    thread = threading.Thread(target=slow_request)
    thread.start()
    time.sleep(0.3)  # the request is in flight: sent, and being encoded
    assert server.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    thread.join(30)
    assert [r.status_code for r in results] == [200]
    assert np.load(io.BytesIO(results[0].content)).shape == (4096, PRESETS["trajectory"].model.repr_dim)
    assert "Application shutdown complete" in server.log()
