"""Every route's answers keep the contract that /openapi.json documents, checked in process.

Routes build their JSON by hand (dicts, for speed) while service/schemas.py's models only document
it, so the two can drift apart unseen: a renamed key, a field one route forgot. Here every route the
app declares is called through the ASGI stack (lifespan, middleware and the /encode fast path
included) against a tiny registered model. Each success must carry the declared status and validate
against the route's response_model, strictly and with no key the model does not declare (the
models ignore extra keys, so validation alone would pass them). Each error must be the typed
ErrorBody with the type of its status. A route added without an entry in CALLS fails
test_every_route_is_called.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from fastapi.testclient import TestClient
from httpx import Response
from pydantic import BaseModel, TypeAdapter
from starlette.routing import Mount

from service.app import create_app
from service.errors import KIND_BY_STATUS
from service.schemas import ErrorBody
from service.settings import Settings
from tests.factories import TINY_CONFIG, add_version, random_sequences, stored_dataset, tiny_spec
from training.execution import jobs
from training.plots import PLOTS_DIR
from training.store import registry
from training.store.db import SessionFactory, in_transaction
from training.store.models import JobLogRow

API_KEY = "contract-test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
MODEL, SPARE = "toy", "spare"  # the default model; one whose only version a test deletes
# PNG's signature and an empty IHDR are enough for a FileResponse to send it as image/png.
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


@dataclass(frozen=True)
class World:
    """What the calls name: records set up before the app answers its first request."""

    finished_job: str  # succeeded, with an epoch, a log line and the version it made
    doomed_job: str  # succeeded; DELETE /jobs/{id} removes it
    queued_job: str  # POST /jobs/{id}/cancel cancels it
    dataset: str
    doomed_dataset: str


Request = tuple[str, dict[str, Any]]  # the URL and httpx keyword arguments (json=, content=, headers=)


@dataclass(frozen=True)
class Call:
    """One request a route answers with success; `media` for routes without a response_model."""

    request: Callable[[World], Request]
    media: str = "application/json"


def sequences(count: int, length: int) -> list[list[list[float]]]:
    return [seq.tolist() for seq in random_sequences([length] * count)]


# (method, path template) of every route, each with the requests that must succeed there.
CALLS: dict[tuple[str, str], list[Call]] = {
    ("GET", "/docs-assets"): [Call(lambda w: ("/docs-assets/swagger-ui.css", {}), "text/css")],
    ("GET", "/openapi.json"): [Call(lambda w: ("/openapi.json", {}))],
    ("GET", "/docs"): [Call(lambda w: ("/docs", {}), "text/html")],
    ("GET", "/redoc"): [Call(lambda w: ("/redoc", {}), "text/html")],
    ("GET", "/"): [Call(lambda w: ("/", {}), "text/html")],
    ("GET", "/health"): [Call(lambda w: ("/health", {}))],
    ("GET", "/ready"): [Call(lambda w: ("/ready", {}))],
    ("GET", "/metrics"): [Call(lambda w: ("/metrics", {}), "text/plain")],
    ("GET", "/info"): [Call(lambda w: ("/info", {}))],
    ("POST", "/encode"): [
        Call(lambda w: ("/encode", {"json": {"sequences": sequences(2, 6)}})),
        Call(lambda w: ("/encode", {"json": {"sequences": sequences(2, 6), "per_step": True}})),
    ],
    ("POST", "/predict"): [
        Call(lambda w: ("/predict", {"json": {"contexts": sequences(2, 8)}})),
        Call(lambda w: ("/predict", {"json": {"contexts": sequences(2, 8), "targets": sequences(2, 4)}})),
    ],
    ("POST", "/score"): [Call(lambda w: ("/score", {"json": {"series": sequences(2, 40), "method": "forecast"}}))],
    ("POST", "/similarity"): [Call(lambda w: ("/similarity", {"json": {"a": sequences(2, 6), "b": sequences(3, 6)}}))],
    ("POST", "/train"): [
        Call(
            lambda w: (
                "/train",
                {"json": {"model": MODEL, "dataset": {"num_samples": 64, "seq_len": 12}, "config": TINY_CONFIG}},
            )
        )
    ],
    ("GET", "/jobs"): [Call(lambda w: ("/jobs", {})), Call(lambda w: ("/jobs?status=succeeded", {}))],
    ("GET", "/jobs/{job_id}"): [Call(lambda w: (f"/jobs/{w.finished_job}", {}))],
    ("POST", "/jobs/{job_id}/cancel"): [Call(lambda w: (f"/jobs/{w.queued_job}/cancel", {}))],
    ("GET", "/jobs/{job_id}/metrics"): [Call(lambda w: (f"/jobs/{w.finished_job}/metrics", {}))],
    ("GET", "/jobs/{job_id}/logs"): [Call(lambda w: (f"/jobs/{w.finished_job}/logs", {}))],
    ("DELETE", "/jobs/{job_id}"): [Call(lambda w: (f"/jobs/{w.doomed_job}", {}))],
    ("GET", "/models"): [Call(lambda w: ("/models", {}))],
    ("GET", "/models/{name}/versions/{version}"): [Call(lambda w: (f"/models/{MODEL}/versions/1", {}))],
    ("GET", "/models/{name}/versions/{version}/plots/{plot}.png"): [
        Call(lambda w: (f"/models/{MODEL}/versions/1/plots/loss.png", {}), "image/png")
    ],
    ("PUT", "/models/{name}/aliases/{alias}"): [
        Call(lambda w: (f"/models/{MODEL}/aliases/staging", {"json": {"version": 1}}))
    ],
    ("DELETE", "/models/{name}/aliases/{alias}"): [Call(lambda w: (f"/models/{MODEL}/aliases/retired", {}))],
    ("DELETE", "/models/{name}/versions/{version}"): [Call(lambda w: (f"/models/{SPARE}/versions/1", {}))],
    ("POST", "/datasets"): [
        Call(lambda w: ("/datasets", {"json": {"name": "posted", "sequences": sequences(2, 3), "labels": ["a", "b"]}}))
    ],
    ("GET", "/datasets"): [Call(lambda w: ("/datasets", {}))],
    ("GET", "/datasets/{dataset_id}"): [Call(lambda w: (f"/datasets/{w.dataset}", {}))],
    ("DELETE", "/datasets/{dataset_id}"): [Call(lambda w: (f"/datasets/{w.doomed_dataset}", {}))],
}

# Routes anyone may call, even with JEPA_AUTH_READS: probes, the dashboard page and the docs' assets.
OPEN = {("GET", "/health"), ("GET", "/ready"), ("GET", "/"), ("GET", "/docs-assets")}


@dataclass(frozen=True)
class Refusal:
    """A request a route family refuses with a domain error (with the key: not a 401)."""

    method: str
    route: tuple[str, str]
    request: Callable[[World], Request]
    status: int
    headers: dict[str, str] = field(default_factory=dict)


REFUSALS: list[Refusal] = [
    Refusal("GET", ("GET", "/docs-assets"), lambda w: ("/docs-assets/no-such-file.js", {}), 404),
    Refusal("POST", ("GET", "/health"), lambda w: ("/health", {}), 405),
    Refusal("POST", ("GET", "/ready"), lambda w: ("/ready", {}), 405),
    Refusal("POST", ("GET", "/"), lambda w: ("/", {}), 405),
    Refusal(
        "POST", ("POST", "/encode"), lambda w: ("/encode", {"json": {"model": "nope", "sequences": [[[1.0]]]}}), 404
    ),
    Refusal("POST", ("POST", "/score"), lambda w: ("/score", {"json": {"series": [[[1.0, True]]]}}), 422),
    Refusal("POST", ("POST", "/similarity"), lambda w: ("/similarity", {"json": {"a": sequences(1, 4)}}), 422),
    Refusal("POST", ("POST", "/train"), lambda w: ("/train", {"json": {"config": {"epochs": "many"}}}), 422),
    Refusal("GET", ("GET", "/jobs/{job_id}"), lambda w: ("/jobs/no-such-job", {}), 404),
    Refusal("POST", ("POST", "/jobs/{job_id}/cancel"), lambda w: (f"/jobs/{w.finished_job}/cancel", {}), 409),
    Refusal("GET", ("GET", "/models/{name}/versions/{version}"), lambda w: ("/models/nope/versions/1", {}), 404),
    Refusal(
        "PUT",
        ("PUT", "/models/{name}/aliases/{alias}"),
        lambda w: (f"/models/{MODEL}/aliases/x", {"json": {"version": 1.5}}),
        422,
    ),
    Refusal("GET", ("GET", "/datasets/{dataset_id}"), lambda w: ("/datasets/no-such-dataset", {}), 404),
    Refusal(
        "POST",
        ("POST", "/datasets"),
        lambda w: ("/datasets", {"content": b"x", "headers": {"content-type": "text/plain"}}),
        415,
    ),
]


# --- the app and its records ---------------------------------------------------------------------


def finished_job(factory: SessionFactory, model: str) -> str:
    """A job that ran and succeeded, as a worker would have left it."""
    job = in_transaction(factory, lambda s: jobs.enqueue(s, tiny_spec(model)))
    assert jobs.claim(factory, job.id, "contract-test")
    progress = {"epoch": 1, "loss": 0.5, "metrics": {"embedding_std": 0.25}}
    assert jobs.record_epoch(factory, job.id, "contract-test", progress, seconds=0.1)
    in_transaction(factory, lambda s: jobs.mark_succeeded(s, job.id, progress, "contract-test"))
    return job.id


def build_world(app: FastAPI, data_dir: Path) -> World:
    factory: SessionFactory = app.state.session_factory
    job_id = finished_job(factory, MODEL)

    def register(session: Any) -> None:
        version = add_version(session, data_dir, MODEL)
        version.job_id = job_id  # GET /jobs/{id} then reports the version and its metrics
        session.add(JobLogRow(job_id=job_id, attempt=1, level="info", message="epoch 1: loss 0.5"))
        add_version(session, data_dir, SPARE, seed=1)

    in_transaction(factory, register)
    plots = data_dir / "checkpoints" / MODEL / "seed0" / PLOTS_DIR
    plots.mkdir(exist_ok=True)
    (plots / "loss.png").write_bytes(PNG)
    in_transaction(factory, lambda s: registry.set_alias(s, MODEL, "retired", 1))
    data = random_sequences([5, 5, 6])
    return World(
        finished_job=job_id,
        doomed_job=finished_job(factory, MODEL),
        queued_job=in_transaction(factory, lambda s: jobs.enqueue(s, tiny_spec(MODEL))).id,
        dataset=stored_dataset(factory, data_dir, data, "kept", ["x", "y", "x"]).id,
        doomed_dataset=stored_dataset(factory, data_dir, data, "doomed").id,
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FastAPI, TestClient, World]]:
    data_dir = tmp_path_factory.mktemp("contract")
    settings = Settings(
        data_dir=data_dir,
        bootstrap=False,
        embedded_worker=False,
        default_model=MODEL,
        api_key=API_KEY,
        auth_reads=True,  # so that every route but the open ones has a 401 to check
    )
    app = create_app(settings)
    with TestClient(app) as client:
        yield app, client, build_world(app, data_dir)


# --- the checks ----------------------------------------------------------------------------------


def declared_routes(app: FastAPI) -> dict[tuple[str, str], RouteContext]:
    """Each route by method and path, as the app serves it: with what include_router added, such
    as the documented error responses."""
    routes: dict[tuple[str, str], RouteContext] = {}
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, Mount):
            routes[("GET", route.path)] = context
        else:
            assert isinstance(route, APIRoute), f"a route of a kind this test does not know: {route!r}"
            routes |= {(method, context.path_format): context for method in context.methods}
    return routes


def _container_of(annotation: Any) -> type | None:
    """dict or list for the annotations whose values have keys or items to walk; else None."""
    annotation = _unannotated(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return dict
    origin = typing.get_origin(annotation)
    return origin if origin in (dict, list) else None


def _unannotated(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def undeclared_keys(annotation: Any, value: Any, where: str = "body") -> list[str]:
    """Where `value` (decoded JSON) has a key that `annotation`'s models do not declare."""
    annotation = _unannotated(annotation)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        # Only the branches of the value's own shape can explain its keys: the best one counts.
        fitting = [arg for arg in typing.get_args(annotation) if _container_of(arg) is type(value)]
        return min((undeclared_keys(arg, value, where) for arg in fitting), key=len, default=[])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel) and isinstance(value, dict):
        fields = annotation.model_fields
        found = [f"{where}.{key}" for key in value if key not in fields]
        for name, info in fields.items():
            if name in value:
                found += undeclared_keys(info.annotation, value[name], f"{where}.{name}")
        return found
    args = typing.get_args(annotation)
    if origin is list and args and isinstance(value, list):
        return [key for i, item in enumerate(value) for key in undeclared_keys(args[0], item, f"{where}[{i}]")]
    if origin is dict and len(args) == 2 and isinstance(value, dict):
        return [key for k, item in value.items() for key in undeclared_keys(args[1], item, f"{where}.{k}")]
    return []


def assert_matches(model: Any, response: Response) -> None:
    """The body validates against `model` in strict mode and has no key the model lacks."""
    assert response.headers["content-type"].startswith("application/json"), response.headers["content-type"]
    TypeAdapter(model).validate_json(response.content, strict=True)
    assert undeclared_keys(model, response.json()) == [], f"keys {model} does not declare"


def is_api_route(route: RouteContext) -> bool:
    return isinstance(route.original_route, APIRoute)


def assert_success(route: RouteContext, call: Call, response: Response) -> None:
    declared = route.status_code if is_api_route(route) and route.status_code else 200
    assert response.status_code == declared, response.text[:1000]
    model = route.response_model if is_api_route(route) else None
    if model is not None:
        assert_matches(model, response)
    elif declared == 204:
        assert response.content == b""
    else:
        assert response.headers["content-type"].startswith(call.media), response.headers["content-type"]
        assert response.content


ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorBody"}


def assert_error(app: FastAPI, key: tuple[str, str], status: int, response: Response) -> None:
    """A typed ErrorBody, whose status /openapi.json documents for the route, as JSON."""
    assert response.status_code == status, response.text[:1000]
    assert_matches(ErrorBody, response)
    assert response.json()["type"] == KIND_BY_STATUS[status].type
    route = declared_routes(app)[key]
    # 405 is never documented: a documented operation is a route with its method.
    if status != 405 and is_api_route(route) and route.include_in_schema:
        documented = app.openapi()["paths"][key[1]][key[0].lower()]["responses"]
        assert str(status) in documented, f"{status} is not among the statuses documented for the route"
        assert documented[str(status)].get("content", {}).get("application/json", {}).get("schema") == ERROR_SCHEMA


def send(client: TestClient, method: str, request: Request, authorized: bool = True) -> Response:
    url, kwargs = request
    headers = {**(AUTH if authorized else {}), **kwargs.pop("headers", {})}
    return client.request(method, url, headers=headers, **kwargs)


def route_id(key: tuple[str, str]) -> str:
    return " ".join(key)


@pytest.mark.parametrize("key", list(CALLS), ids=route_id)
def test_each_success_matches_the_response_model(
    served: tuple[FastAPI, TestClient, World], key: tuple[str, str]
) -> None:
    app, client, world = served
    route = declared_routes(app)[key]
    for call in CALLS[key]:
        assert_success(route, call, send(client, key[0], call.request(world)))


@pytest.mark.parametrize("key", sorted(set(CALLS) - OPEN), ids=route_id)
def test_each_route_refuses_a_missing_key_with_a_typed_401(
    served: tuple[FastAPI, TestClient, World], key: tuple[str, str]
) -> None:
    app, client, world = served
    response = send(client, key[0], CALLS[key][0].request(world), authorized=False)
    assert_error(app, key, 401, response)


@pytest.mark.parametrize("refusal", REFUSALS, ids=lambda r: f"{route_id(r.route)} {r.status}")
def test_each_family_refuses_with_a_typed_error_body(
    served: tuple[FastAPI, TestClient, World], refusal: Refusal
) -> None:
    app, client, world = served
    response = send(client, refusal.method, refusal.request(world))
    assert_error(app, refusal.route, refusal.status, response)


def test_every_route_is_called(served: tuple[FastAPI, TestClient, World]) -> None:
    app, _, _ = served
    declared = set(declared_routes(app))
    assert declared - set(CALLS) == set(), "routes this test never calls: add them to CALLS"
    assert set(CALLS) - declared == set(), "CALLS names routes the app no longer has"


def test_every_open_route_has_a_refusal() -> None:
    """The others are refused without the key (the 401 test); these need a refusal of their own."""
    assert OPEN - {refusal.route for refusal in REFUSALS} == set()


def test_the_strictness_check_finds_an_undeclared_key_and_a_missing_field() -> None:
    """The checks above would pass anything if undeclared_keys never found a key."""
    from service.schemas import JobLogs

    line = {"id": 1, "attempt": 1, "created_at": "2024-01-01T00:00:00Z", "level": "info", "message": "m"}
    assert undeclared_keys(JobLogs, {"job_id": "j", "lines": [line | {"colour": "red"}], "next_since": 1}) == [
        "body.lines[0].colour"
    ]
    assert undeclared_keys(
        ErrorBody, {"type": "validation_error", "detail": [{"loc": [], "msg": "", "type": "", "x": 1}]}
    )
    with pytest.raises(ValueError, match="next_since"):
        TypeAdapter(JobLogs).validate_json(b'{"job_id": "j", "lines": []}', strict=True)
