"""GET /metrics (Prometheus) and GET /info against a real server."""

import json
import re
import time

import httpx

from jepa_model import PRESETS
from tests.e2e.servers import Server


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample, by name and labels."""
    for line in text.splitlines():
        match = re.match(rf"{name}(?:{{(.*)}})? (\S+)$", line)
        if match is None:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(2))
    raise KeyError(f"{name} {labels} not in the scrape")


def test_metrics_count_requests_batches_loads_and_jobs(client: httpx.Client) -> None:
    before = client.get("/metrics").text
    for _ in range(3):
        assert client.post("/encode", json={"sequences": [[[0.0, 1.0], [1.0, 2.0]]]}).status_code == 200
    assert client.post("/encode", json={"sequences": []}).status_code == 422
    scrape = client.get("/metrics")
    assert scrape.status_code == 200 and scrape.headers["content-type"].startswith("text/plain")
    text = scrape.text
    ok = sample(text, "jepa_requests_total", route="/encode", method="POST", status="200")
    try:
        ok_before = sample(before, "jepa_requests_total", route="/encode", method="POST", status="200")
    except KeyError:
        ok_before = 0.0
    assert ok - ok_before == 3
    assert sample(text, "jepa_requests_total", route="/encode", method="POST", status="422") >= 1
    assert sample(text, "jepa_request_duration_seconds_count", route="/encode") >= 4
    assert sample(text, "jepa_batch_size_sequences_count") >= 3
    assert sample(text, "jepa_queue_depth") == 0
    assert sample(text, "jepa_model_load_seconds_count") >= 1
    assert sample(text, "jepa_jobs", status="succeeded") >= 1  # the first-start job


def test_info_names_the_served_models_and_the_limits(client: httpx.Client) -> None:
    info = client.get("/info").json()
    (default,) = [m for m in info["models"] if m["name"] == "trajectories"]
    assert default["input_dim"] == 2 and default["repr_dim"] == PRESETS["trajectory"].model.repr_dim
    assert info["default_model"] == "trajectories" and info["limits"]["max_batch"] == 4096
    assert info["auth"] == {"writes": False, "reads": False}


def test_logs_are_json_lines_carrying_the_request_id_echoed_in_the_response(server: Server) -> None:
    with server.client() as client:
        mine = client.post("/encode", json={"sequences": []}, headers={"X-Request-ID": "trace-42.a"})
        assert mine.status_code == 422 and mine.headers["x-request-id"] == "trace-42.a"
        generated = client.get("/health", headers={"X-Request-ID": "no spaces allowed"}).headers["x-request-id"]
        following = client.get("/health").headers["x-request-id"]
        # a per-process prefix and a counter (service.middleware): distinct, and no uuid4 per request
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]+", generated) and following != generated
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
        tagged = [line for line in lines if line.get("request_id") == "trace-42.a"]
        if tagged:
            break
        time.sleep(0.1)
    assert tagged and {"ts", "level", "logger", "msg"} <= set(tagged[0])
    access = [line for line in tagged if line["logger"] == "jepa.access"]  # written off the event loop
    assert access and '"POST /encode HTTP/1.1" 422' in access[0]["msg"]
