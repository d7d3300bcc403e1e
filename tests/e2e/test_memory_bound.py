"""The largest request each format accepts, and hostile ones past the caps, sent to a server in a
memory cgroup: its peak RSS stays under the README's bound, and /health stays quick while the
hostile ones are refused."""

from __future__ import annotations

import io
import subprocess
import sys

import httpx
import numpy as np
import orjson

from tests.e2e.servers import MemoryLimit, StartServer, peak_rss_bytes

# The README's figure ("Reliability"): the server's peak RSS for any accepted request.
PEAK_RSS_BOUND = 1536 * 2**20
CGROUP_LIMIT = 3 * 2**30  # the server was killed under this
MAX_POINTS = 2_097_152  # JEPA_MAX_REQUEST_POINTS' default
BODY_CAP = 64 * 2**20  # JEPA_MAX_BODY_BYTES' default


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


# Runs in its own process: a thread in the test's process would wait for the GIL behind the
# client's own JSON encoding, and measure that instead of the server.
HEALTH_WATCHER = """
import sys, threading, time, httpx
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
worst = 0.0
with httpx.Client(base_url=sys.argv[1], timeout=30) as client:
    while not done.is_set():
        started = time.perf_counter()
        client.get("/health")
        worst = max(worst, time.perf_counter() - started)
        time.sleep(0.02)
print(worst)
"""


def watch_health(base_url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", HEALTH_WATCHER, base_url], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def test_the_largest_accepted_requests_stay_under_the_memory_bound(start_server: StartServer) -> None:
    limit = MemoryLimit(CGROUP_LIMIT)
    try:
        server = start_server(memory_limit=limit)
        server.wait_for("/ready")
        rng = np.random.default_rng(0)
        largest = rng.normal(size=(4096, MAX_POINTS // 4096 // 2, 2)).astype(np.float32)  # (4096, 256, 2)
        ragged_csv = "sequence_id,t,x\n" + "".join(f"s{i // 4096},{i % 4096},0.5\n" for i in range(4_000_000))
        json_headers = {"content-type": "application/json"}
        bodies = {
            "encode": orjson.dumps({"sequences": largest}, option=orjson.OPT_SERIALIZE_NUMPY),
            "predict": orjson.dumps(
                {"contexts": largest[:2048], "targets": largest[2048:]}, option=orjson.OPT_SERIALIZE_NUMPY
            ),
            "dataset": orjson.dumps(
                {"name": "json", "sequences": largest.reshape(4096, -1, 1)}, option=orjson.OPT_SERIALIZE_NUMPY
            ),
        }
        with httpx.Client(base_url=server.base_url, timeout=120) as client:
            accepted = [
                client.post("/encode", content=bodies["encode"], headers=json_headers),
                client.post("/encode", content=npy(largest), headers={"content-type": "application/x-npy"}),
                client.post("/predict", content=bodies["predict"], headers=json_headers),
                client.post("/datasets", content=bodies["dataset"], headers=json_headers),
                client.post("/datasets", files={"file": ("big.npy", npy(np.zeros((4096, 4095, 2), np.float16)))}),
                client.post("/datasets", files={"file": ("big.csv", ragged_csv.encode())}),
            ]
            # /health is only promised to stay quick during hostile bodies: orjson holds the GIL
            # while it parses, so the largest accepted JSON bodies can delay it (README).
            watcher = watch_health(server.base_url)
            refused = [
                client.post(
                    "/encode",
                    content=b'{"sequences": [' + b"[]," * (BODY_CAP // 3 - 20) + b"[]]}",
                    headers=json_headers,
                ),
                client.post(
                    "/encode",
                    content=npy(np.zeros((4096, 4095, 2), np.float16)),
                    headers={"content-type": "application/x-npy"},
                ),
            ]
        worst = float(watcher.communicate("", timeout=60)[0])
        assert [r.status_code for r in accepted] == [200, 200, 200, 201, 201, 201], [r.text[:200] for r in accepted]
        assert [r.status_code for r in refused] == [422, 422], [r.text[:200] for r in refused]
        peak = peak_rss_bytes(server.proc.pid)
        assert peak < PEAK_RSS_BOUND, f"peak RSS {peak >> 20} MB"
        assert worst < 1.0, f"/health took {worst:.2f} s during the hostile requests"
        print(
            f"peak RSS {peak >> 20} MB, cgroup peak {(limit.peak_bytes() or 0) >> 20} MB, /health worst {worst:.3f} s"
        )
    finally:
        limit.remove()
