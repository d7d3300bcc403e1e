"""Fair turns on a real server: a small request is answered while large /score requests run, and
a large request whose client has gone stops taking turns. bench.fairness measures the figures."""

import re
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from tests.e2e.servers import StartServer, wait_for_job
from tests.e2e.test_long_series import npy, recording

HEAVY_STEPS = 150_000  # a memory score of several seconds on the 2-core CI machine
SMALL = {"model": "sensor", "sequences": [[[0.1], [0.4], [0.2]]]}


def heavy_score(base_url: str, body: bytes, seconds: list[float]) -> None:
    started = time.perf_counter()
    answer = httpx.post(
        f"{base_url}/score?model=sensor&method=memory",
        content=body,
        headers={"content-type": "application/x-npy", "accept": "application/x-npy"},
        timeout=300,
    )
    assert answer.status_code == 200, answer.text[:300]
    seconds.append(time.perf_counter() - started)


def test_small_requests_take_turns_with_large_scores(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server(data_dir=tmp_path / "data", trained=True)
    with server.client() as client:
        uploaded = client.post("/datasets", files={"file": ("log.npy", npy(recording(20_000, seed=0)[None]))})
        assert uploaded.status_code == 201, uploaded.text
        queued = client.post(
            "/train", json={"model": "sensor", "dataset": {"id": uploaded.json()["id"]}, "config": {"steps": 10}}
        )
        job = wait_for_job(client, queued.json()["job_id"], timeout=300)
        assert job["status"] == "succeeded", job
        assert client.post("/encode", json=SMALL).status_code == 200  # loaded

        body = npy(recording(HEAVY_STEPS, seed=3)[None])
        heavy_seconds: list[float] = []
        heavy = [threading.Thread(target=heavy_score, args=(server.base_url, body, heavy_seconds)) for _ in range(3)]
        for thread in heavy:
            thread.start()
        time.sleep(0.5)  # uploaded and running
        small: list[float] = []
        while any(thread.is_alive() for thread in heavy):
            started = time.perf_counter()
            assert client.post("/encode", json=SMALL).status_code == 200
            small.append(time.perf_counter() - started)
            time.sleep(0.02)
        for thread in heavy:
            thread.join()
        # Before turns, a small request waited for every large one queued before it: seconds.
        assert len(heavy_seconds) == 3 and max(heavy_seconds) > 3, heavy_seconds
        assert len(small) > 10 and max(small) < 1.5, (max(small), np.percentile(small, 99))

        # A client that gives up: its request is cancelled, and the thread is free again at once.
        try:
            httpx.post(
                f"{server.base_url}/score?model=sensor&method=memory",
                content=npy(recording(1_000_000, seed=4)[None]),
                headers={"content-type": "application/x-npy"},
                timeout=httpx.Timeout(60, read=1.0),
            )
            raise AssertionError("a 1,000,000-step memory score answered within a second")
        except httpx.ReadTimeout:
            pass
        time.sleep(0.5)
        started = time.perf_counter()
        assert client.post("/encode", json=SMALL).status_code == 200
        assert time.perf_counter() - started < 1.0
    gone = re.compile(r'POST /score\?model=sensor&method=memory HTTP/1\.1\\*" 499')  # the access log, as JSON
    deadline = time.monotonic() + 5
    while not gone.search(server.log()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert gone.search(server.log()), server.log()[-3000:]
