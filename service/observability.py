"""Prometheus metrics (names prefixed `jepa_`), kept per app so tests can build several apps.

service.middleware records each request under the route template FastAPI resolved, so a scrape
groups /models/{name} rather than every name seen.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "jepa_requests", "HTTP requests by route and status", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "jepa_request_duration_seconds", "HTTP request latency", ["route"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.batch_size = Histogram(
            "jepa_batch_size_sequences", "Sequences per micro-batched forward pass", buckets=BATCH_BUCKETS, registry=r
        )
        # Summed over live processes when there are several (service.processes).
        self.queue_depth = Gauge(
            "jepa_queue_depth",
            "Inference requests waiting for the inference thread",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.model_load = Histogram(
            "jepa_model_load_seconds",
            "Time to load, verify and trace a checkpoint",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        # Set in each of `jepa serve --workers N`'s processes: values live in files there.
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        self._jobs: Collector | None = None
        self._stop = threading.Event()
        if self.multiprocess_dir:
            _forget_dead_processes(Path(self.multiprocess_dir))

    def watch_queue(self, depth: Callable[[], int]) -> None:
        """Report the inference queue's depth: read at each scrape in one process; with several,
        sampled each second into this process's file, since any process may answer the scrape."""
        if not self.multiprocess_dir:
            self.queue_depth.set_function(depth)
            return

        def sample() -> None:
            while not self._stop.wait(1.0):
                self.queue_depth.set(depth())

        threading.Thread(target=sample, name="jepa-queue-gauge", daemon=True).start()

    def close(self) -> None:
        self._stop.set()

    def scrape(self) -> bytes:
        """The exposition text: this process's registry, or every process's files summed."""
        if not self.multiprocess_dir:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)
        if self._jobs is not None:
            registry.register(self._jobs)
        return generate_latest(registry)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        children = self._children.get((route, method, status))
        if children is None:  # labels() takes a lock and builds a key: once per route and status
            children = (self.requests.labels(route, method, str(status)), self.latency.labels(route))
            if len(self._children) < 4096:
                self._children[(route, method, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    def watch_jobs(self, count_by_status: Callable[[], dict[str, int]]) -> None:
        """Report training jobs by status, counted in the registry at every scrape."""
        self._jobs = _JobsCollector(count_by_status)
        self.registry.register(self._jobs)


class _JobsCollector(Collector):
    def __init__(self, count_by_status: Callable[[], dict[str, int]]) -> None:
        self.count_by_status = count_by_status

    def collect(self):  # type: ignore[no-untyped-def]
        family = GaugeMetricFamily("jepa_jobs", "Training jobs by status", labels=["status"])
        try:
            counts = self.count_by_status()
        except Exception:  # noqa: BLE001 - a scrape must not fail because the database is down
            counts = {}
        for status, count in sorted(counts.items()):
            family.add_metric([status], count)
        yield family

    def describe(self):  # type: ignore[no-untyped-def]
        return []


def _forget_dead_processes(directory: Path) -> None:
    """Drop live-gauge files of processes that are gone (one uvicorn replaced, say): a `livesum`
    gauge would otherwise go on counting a dead process's last value."""
    for path in directory.glob("gauge_live*_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, str(directory))
        except PermissionError:
            pass  # alive, someone else's
