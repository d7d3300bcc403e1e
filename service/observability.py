"""Prometheus metrics (names prefixed `jepa_`), kept per app so tests can build several apps.

The request middleware is plain ASGI: it reads the status as the response starts and the route
template FastAPI resolved, so a scrape groups /models/{name} rather than every name seen.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
        self.queue_depth = Gauge("jepa_queue_depth", "Inference requests waiting for the inference thread", registry=r)
        self.model_load = Histogram(
            "jepa_model_load_seconds",
            "Time to load, verify and trace a checkpoint",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def watch_jobs(self, count_by_status: Callable[[], dict[str, int]]) -> None:
        """Report training jobs by status, counted in the registry at every scrape."""
        self.registry.register(_JobsCollector(count_by_status))


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


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)
