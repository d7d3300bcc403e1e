"""/models, /jobs, /health, /ready and the OpenAPI description against a real server."""

import httpx
import pytest


def test_health_and_ready(client: httpx.Client) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ready", "model": "trajectories", "version": 1}


def test_models_lists_versions_and_aliases(client: httpx.Client) -> None:
    models = {m["name"]: m for m in client.get("/models").json()}
    default = models["trajectories"]
    assert default["latest"] >= 1 and default["versions"][0]["version"] == 1
    assert len(default["versions"][0]["sha256"]) == 64


def test_a_version_reports_config_metrics_checksum_and_job(client: httpx.Client) -> None:
    body = client.get("/models/trajectories/versions/1").json()
    assert body["version"] == 1 and len(body["sha256"]) == 64 and body["job"]
    assert body["config"]["model"]["input_dim"] == 2
    assert body["config"]["preset"] == "trajectory"  # what "default" picked for toy paths
    assert body["config"]["train"]["epochs"] == 2  # the bootstrap job's setting in these tests
    assert {"final_loss", "retrieval", "oracle_retrieval", "rankme", "probe_radius_r2"} <= set(body["metrics"])
    job = client.get(f"/jobs/{body['job']}").json()
    assert job["status"] == "succeeded" and job["version"] == 1 and job["model"] == "trajectories"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/models/trajectories/versions/99", 404),
        ("/models/nope/versions/1", 404),
        ("/models/trajectories/versions/-1", 422),
        ("/models/trajectories/versions/1.5", 422),
        ("/jobs/does-not-exist", 404),
        ("/jobs?status=bogus", 422),
    ],
)
def test_unknown_or_malformed_lookups(client: httpx.Client, path: str, status: int) -> None:
    response = client.get(path)
    assert response.status_code == status and "detail" in response.json()


def test_jobs_lists_newest_first(client: httpx.Client) -> None:
    jobs = client.get("/jobs").json()
    assert jobs and all(set(job) >= {"id", "status", "progress", "created_at"} for job in jobs)
    created = [job["created_at"] for job in jobs]
    assert created == sorted(created, reverse=True)


def test_openapi_describes_every_route(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    expected = {
        "/encode": "post", "/predict": "post", "/similarity": "post", "/train": "post", "/jobs": "get",
        "/jobs/{job_id}": "get", "/models": "get", "/models/{name}/versions/{version}": "get",
        "/health": "get", "/ready": "get",
    }  # fmt: skip
    for path, method in expected.items():
        assert method in paths[path], path
    assert client.get("/docs").status_code == 200


def test_every_version_serves_its_training_plots(client: httpx.Client) -> None:
    for plot in ("loss", "embeddings"):
        response = client.get(f"/models/trajectories/versions/1/plots/{plot}.png")
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        assert response.content.startswith(b"\x89PNG") and len(response.content) > 5000
    assert client.get("/models/trajectories/versions/1/plots/other.png").status_code == 422
    assert client.get("/models/trajectories/versions/99/plots/loss.png").status_code == 404
