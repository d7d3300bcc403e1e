"""A bounded soak: a minute of mixed concurrent load while a training job runs.

Zero 5xx, and the server's memory levels off. The figures are printed (pytest -s shows them;
the README's Reliability section quotes a run). JEPA_SOAK_S shortens or lengthens it.
"""

import os
import random
import statistics
import threading
import time
from collections import Counter
from pathlib import Path

from tests.e2e.servers import StartServer
from tests.factories import TINY_CONFIG

SOAK_S = float(os.environ.get("JEPA_SOAK_S", "60"))
CLIENTS = 8


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def random_request(rng: random.Random) -> tuple[str, dict]:
    def batch() -> list:
        length = rng.randint(1, 40)
        return [[[rng.uniform(-5, 5), rng.uniform(-5, 5)] for _ in range(length)] for _ in range(rng.randint(1, 32))]

    route = rng.choice(["/encode", "/predict", "/similarity"])
    if route == "/encode":
        return route, {"sequences": batch(), "normalize": rng.random() < 0.5}
    if route == "/predict":
        contexts = batch()
        body = {"contexts": contexts}
        if rng.random() < 0.5:
            body["targets"] = [seq[:4] for seq in contexts]
        return route, body
    return route, {"a": batch(), "b": batch()}


def test_a_minute_of_mixed_load_with_training_loses_nothing(start_server: StartServer) -> None:
    server = start_server(trained=True)
    server.wait_for("/ready")
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + SOAK_S

    def client_loop(seed: int) -> None:
        rng = random.Random(seed)
        with server.client() as client:
            while time.monotonic() < stop_at:
                route, body = random_request(rng)
                started = time.perf_counter()
                status = client.post(route, json=body).status_code
                with lock:
                    statuses[status] += 1
                    latencies.append(time.perf_counter() - started)

    with server.client() as admin:
        train = {"model": "soak", "dataset": {"num_samples": 512}, "config": {**TINY_CONFIG, "epochs": 10_000}}
        job_id = admin.post("/train", json=train).json()["job_id"]
        memory = [rss_mb(server.proc.pid)]
        threads = [threading.Thread(target=client_loop, args=(seed,)) for seed in range(CLIENTS)]
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            time.sleep(SOAK_S / 20)
            memory.append(rss_mb(server.proc.pid))
        for thread in threads:
            thread.join()
        job = admin.get(f"/jobs/{job_id}").json()
        admin.post(f"/jobs/{job_id}/cancel")

    requests = sum(statuses.values())
    half = len(memory) // 2
    print(
        f"\nsoak: {requests} requests in {SOAK_S:g} s from {CLIENTS} clients, statuses {dict(statuses)}, "
        f"p50 {statistics.median(latencies) * 1e3:.1f} ms, max {max(latencies) * 1e3:.0f} ms; "
        f"training job {job['status']} at epoch {job['progress']['epoch']}; "
        f"server RSS MB start {memory[0]:.0f}, half-way {memory[half]:.0f}, end {memory[-1]:.0f}, "
        f"peak {max(memory):.0f}"
    )
    assert job["status"] == "running" and job["progress"]["epoch"] > 0  # training ran throughout
    assert requests > 100 * SOAK_S / 60
    assert not [s for s in statuses if s >= 500], statuses
    assert set(statuses) == {200}, statuses  # every request was valid, so every answer is a 200
    # Levelled off: the second half grows by less than 10% of where the first half ended.
    assert max(memory[half:]) < memory[half] * 1.10, memory
