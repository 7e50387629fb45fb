"""Server metrics as Prometheus histograms and counters (``prometheus_client``), served at ``/metrics``.

Histograms, not a window of percentiles: buckets add up across processes, so a dashboard can aggregate
the replicas of one deployment (``histogram_quantile(0.99, sum by (le) (rate(..._bucket[1m])))``).
Each app has its own registry, so several servers (or test apps) in one process do not collide.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE  # noqa: F401  (re-exported for the app)
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("retrieval_requests", "answered /retrieve requests", registry=r)
        self.queries = Counter("retrieval_queries", "queries in answered requests", registry=r)
        self.errors = Counter("retrieval_errors", "requests that failed inside the server (500)", registry=r)
        self.rejected = Counter("retrieval_rejected", "requests refused, by reason", ["reason"], registry=r)
        self.truncated_queries = Counter("retrieval_truncated_queries", "queries cut to --max-query-chars", registry=r)
        self.batches = Counter("retrieval_batches", "encoder + search batches run", registry=r)
        self.batch_size = Histogram("retrieval_batch_size", "distinct queries per batch", buckets=BATCH_BUCKETS, registry=r)
        self.search_seconds = Histogram("retrieval_search_seconds", "encode + search time per batch", buckets=LATENCY_BUCKETS, registry=r)
        self.latency = Histogram(
            "retrieval_request_latency_seconds", "time from a request's queue entry to its answer", buckets=LATENCY_BUCKETS, registry=r
        )
        self.queue_depth = Gauge("retrieval_queue_depth_queries", "queries waiting for a batch", registry=r)

    def observe_request(self, n_queries: int, seconds: float) -> None:
        self.requests.inc()
        self.queries.inc(n_queries)
        self.latency.observe(seconds)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batches.inc()
        self.batch_size.observe(size)
        self.search_seconds.observe(seconds)

    def reject(self, reason: str) -> None:
        """``reason``: ``invalid`` (422), ``unauthorized`` (401), ``too_large`` (413), ``slow_body`` (408),
        ``overloaded`` (429)."""
        self.rejected.labels(reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
