"""Every error body carries a stable `type`, the one service/errors.py's table gives its status:
provoked over HTTP against a real server, and checked against /openapi.json and docs/api.md."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.errors import ERROR_KINDS, ERROR_TYPES, KIND_BY_STATUS
from service.settings import Settings
from tests.e2e.servers import Server, StartServer
from tests.factories import TINY_CONFIG

KEY = "error-types-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_BODY = 20_000
TINY_TRAIN = {"model": "m", "dataset": {"num_samples": 64, "seq_len": 12}, "config": TINY_CONFIG}
ONE = {"sequences": [[[0.0, 1.0]]]}


@pytest.fixture
def bare(start_server: StartServer) -> Server:
    """No model and no worker (so /ready says 503 and jobs stay queued), a key, a small body limit
    and room for one queued job."""
    return start_server(
        JEPA_API_KEY=KEY,
        JEPA_MAX_BODY_BYTES=str(MAX_BODY),
        JEPA_BOOTSTRAP="0",
        JEPA_EMBEDDED_WORKER="0",
        JEPA_MAX_QUEUED_JOBS="1",
    )


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    status: int
    says: str  # a phrase the detail must contain
    json: Any = None
    content: Any = None
    headers: dict[str, str] = field(default_factory=dict)


CASES = [
    Case("unknown route", "GET", "/no-such-route", 404, "Not Found"),
    Case("unknown model", "POST", "/encode", 404, "not found", json={**ONE, "model": "nope"}),
    Case("wrong method", "DELETE", "/health", 405, "Method Not Allowed"),
    Case(
        "body not JSON",
        "POST",
        "/encode",
        422,
        "not valid JSON",
        content=b"{bad",
        headers={"content-type": "application/json"},
    ),
    Case(
        "field of the wrong type", "POST", "/train", 422, "valid string", json={**TINY_TRAIN, "model": 5}, headers=AUTH
    ),
    Case("Content-Length over the limit", "POST", "/encode", 413, "JEPA_MAX_BODY_BYTES", content=b"0" * (MAX_BODY + 1)),
    Case(
        "over the limit on an unknown route",
        "POST",
        "/nowhere",
        413,
        f"{MAX_BODY} bytes",
        content=b"0" * (MAX_BODY + 1),
    ),
    Case(
        "streamed past the limit",
        "POST",
        "/encode",
        413,
        "JEPA_MAX_BODY_BYTES",
        content=iter([b"0" * 4096] * 6),  # no Content-Length: chunked, counted as it arrives
        headers={"content-type": "application/json"},
    ),
    Case(
        "npy where only JSON",
        "POST",
        "/similarity",
        415,
        "application/json only",
        content=b"x",
        headers={"content-type": "application/x-npy"},
    ),
    Case(
        "multipart without a boundary",
        "POST",
        "/datasets",
        400,
        "boundary",
        content=b"x",
        headers={"content-type": "multipart/form-data", **AUTH},
    ),
    Case("no key", "POST", "/train", 401, "API key", json=TINY_TRAIN),
    Case("wrong key", "POST", "/train", 401, "API key", json=TINY_TRAIN, headers={"Authorization": "Bearer wrong"}),
    Case("not ready", "GET", "/ready", 503, "no job is queued to train one"),
]


def assert_typed(response: httpx.Response, status: int, says: str = "") -> dict[str, Any]:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"] == "application/json", response.text[:500]
    body = response.json()
    assert set(body) == {"type", "detail"}, body
    assert body["type"] == KIND_BY_STATUS[status].type, body
    assert body["detail"] and says in str(body["detail"]), body
    return body


def test_every_error_over_http_has_its_type(bare: Server) -> None:
    with bare.client() as client:
        for case in CASES:
            response = client.request(
                case.method, case.path, json=case.json, content=case.content, headers=case.headers
            )
            try:
                assert_typed(response, case.status, case.says)
            except AssertionError as exc:
                raise AssertionError(f"{case.name}: {exc}") from None
        assert client.delete("/health").headers["allow"] == "GET"
        assert client.post("/train", json=TINY_TRAIN).headers["www-authenticate"].startswith("Bearer")
        validation = client.post("/train", json={**TINY_TRAIN, "model": 5}, headers=AUTH).json()
        assert validation["detail"] == [
            {"loc": ["body", "model"], "msg": "Input should be a valid string", "type": "string_type"}
        ]

        # A stateful pair: one job fills the queue (429); cancelled twice, the second is a conflict (409).
        job = client.post("/train", json=TINY_TRAIN, headers=AUTH)
        assert job.status_code == 202, job.text
        full = assert_typed(client.post("/train", json=TINY_TRAIN, headers=AUTH), 429, "already queued")
        assert full["type"] == "overloaded"
        job_id = job.json()["job_id"]
        assert client.post(f"/jobs/{job_id}/cancel", headers=AUTH).status_code == 200
        assert_typed(client.post(f"/jobs/{job_id}/cancel", headers=AUTH), 409, "already cancelled")
        assert_typed(client.get(f"/jobs/{job_id}x"), 404, "not found")

        # One source: the schema's enum is the table's, and every documented error uses the schema.
        spec = client.get("/openapi.json").json()
    error_body = spec["components"]["schemas"]["ErrorBody"]
    assert error_body["required"] == ["type", "detail"]
    assert error_body["properties"]["type"]["enum"] == list(ERROR_TYPES)
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, status)


def test_an_unhandled_exception_is_a_typed_500_that_leaks_nothing(tmp_path: Path) -> None:
    # No route fails on purpose, so the failure is a route added to an app in this process.
    app = create_app(Settings(data_dir=tmp_path, bootstrap=False, embedded_worker=False))

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError(f"secret {tmp_path}")

    # Without the lifespan: the route needs neither the database nor the model.
    body = assert_typed(TestClient(app, raise_server_exceptions=False).get("/boom"), 500)
    assert body["type"] == "internal_error" and "secret" not in body["detail"] and "Traceback" not in body["detail"]


def test_docs_api_md_tables_every_type() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "api.md").read_text()
    rows = re.findall(r"^\| (\d{3}) \| `(\w+)` \|", docs, re.MULTILINE)
    assert [(int(status), type_) for status, type_ in rows] == [(kind.status, kind.type) for kind in ERROR_KINDS]
