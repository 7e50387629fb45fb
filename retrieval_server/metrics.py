"""Server counters and latency percentiles, exposed in Prometheus text format at ``/metrics``."""

from __future__ import annotations

import threading
from collections import deque

import numpy as np


class ServerMetrics:
    def __init__(self, window: int = 10000) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.queries = 0
        self.errors = 0
        self.rejected = 0
        self.truncated_queries = 0
        self.batches = 0
        self.latencies: deque[float] = deque(maxlen=window)
        self.batch_sizes: deque[int] = deque(maxlen=window)
        self.search_seconds = 0.0

    def observe_request(self, n_queries: int, seconds: float) -> None:
        with self.lock:
            self.requests += 1
            self.queries += n_queries
            self.latencies.append(seconds)

    def observe_batch(self, size: int, seconds: float) -> None:
        with self.lock:
            self.batches += 1
            self.batch_sizes.append(size)
            self.search_seconds += seconds

    def render(self) -> str:
        with self.lock:
            lat = np.array(self.latencies) if self.latencies else np.zeros(1)
            sizes = np.array(self.batch_sizes) if self.batch_sizes else np.zeros(1)
            lines = [
                "# TYPE retrieval_requests_total counter",
                f"retrieval_requests_total {self.requests}",
                "# TYPE retrieval_queries_total counter",
                f"retrieval_queries_total {self.queries}",
                "# TYPE retrieval_errors_total counter",
                f"retrieval_errors_total {self.errors}",
                "# TYPE retrieval_rejected_total counter",
                f"retrieval_rejected_total {self.rejected}",
                "# TYPE retrieval_truncated_queries_total counter",
                f"retrieval_truncated_queries_total {self.truncated_queries}",
                "# TYPE retrieval_batches_total counter",
                f"retrieval_batches_total {self.batches}",
                "# TYPE retrieval_search_seconds_total counter",
                f"retrieval_search_seconds_total {self.search_seconds:.6f}",
                "# TYPE retrieval_batch_size summary",
                f'retrieval_batch_size{{quantile="0.5"}} {np.percentile(sizes, 50):.1f}',
                f'retrieval_batch_size{{quantile="0.99"}} {np.percentile(sizes, 99):.1f}',
                "# TYPE retrieval_request_latency_seconds summary",
            ]
            for q in (0.5, 0.9, 0.99):
                lines.append(f'retrieval_request_latency_seconds{{quantile="{q}"}} {np.percentile(lat, q * 100):.6f}')
        return "\n".join(lines) + "\n"
