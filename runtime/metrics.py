"""Prometheus metrics, named after Triton's where Triton has a counterpart.

Triton's cumulative counters (nv_inference_*) let existing dashboards work unchanged; the
histograms (khmer_correct_*) add the distributions Triton only exposes as sums. Each server
owns its registry, so several servers in one process (tests, benchmarks) never share counts.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from runtime.batcher import BatchStats

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self, model: str) -> None:
        self.registry = CollectorRegistry()
        self.model = model
        labels = ["model"]
        r = self.registry
        self.success = Counter(
            "nv_inference_request_success", "Successful requests", labels, registry=r
        )
        self.failure = Counter(
            "nv_inference_request_failure", "Failed requests", [*labels, "reason"], registry=r
        )
        self.inferences = Counter("nv_inference_count", "Texts corrected", labels, registry=r)
        self.executions = Counter(
            "nv_inference_exec_count", "Engine batch runs", labels, registry=r
        )
        self.request_us = Counter(
            "nv_inference_request_duration_us", "Cumulative request time", labels, registry=r
        )
        self.queue_us = Counter(
            "nv_inference_queue_duration_us", "Cumulative queue time", labels, registry=r
        )
        self.compute_us = Counter(
            "nv_inference_compute_infer_duration_us", "Cumulative compute time", labels, registry=r
        )
        self.pending = Gauge(
            "nv_inference_pending_request_count",
            "Model pieces queued or computing",
            labels,
            registry=r,
        )
        self.request_seconds = Histogram(
            "khmer_correct_request_duration_seconds",
            "Request latency",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_seconds = Histogram(
            "khmer_correct_queue_duration_seconds",
            "Time a model piece waits for its batch",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.compute_seconds = Histogram(
            "khmer_correct_compute_duration_seconds",
            "Engine time per batch",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "khmer_correct_batch_size",
            "Model pieces per engine batch",
            labels,
            buckets=_BATCH_BUCKETS,
            registry=r,
        )

    def observe_batch(self, stats: BatchStats) -> None:
        m = self.model
        self.executions.labels(m).inc()
        self.batch_size.labels(m).observe(stats.size)
        self.compute_seconds.labels(m).observe(stats.compute_seconds)
        self.compute_us.labels(m).inc(stats.compute_seconds * 1e6)
        for seconds in stats.queue_seconds:
            self.queue_seconds.labels(m).observe(seconds)
            self.queue_us.labels(m).inc(seconds * 1e6)

    def observe_request(self, seconds: float, texts: int, failure: str | None = None) -> None:
        m = self.model
        if failure is None:
            self.success.labels(m).inc()
            self.inferences.labels(m).inc(texts)
        else:
            self.failure.labels(m, failure).inc()
        self.request_seconds.labels(m).observe(seconds)
        self.request_us.labels(m).inc(seconds * 1e6)

    def serve(self, host: str, port: int):
        """Start the /metrics HTTP endpoint on a daemon thread; returns the WSGI server."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server
