"""Request limits and batching of the retrieval server: the one home of their defaults (no heavy imports:
the CLI reads them for ``--help``; ``tests/test_dependency_rules.py`` fails if one is written twice)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Limits:
    default_topk: int = 3
    max_topk: int = 100
    # The original trainer sends every trajectory's query of a turn in one request (paper GRPO: 512 x 5).
    max_queries: int = 16384
    # Longer queries are cut to this many characters (the encoder keeps 256 tokens anyway), not refused.
    max_query_chars: int = 8192
    # A request body over this size is refused (413) before it is read: 16,384 queries of 2 KB fit.
    max_body_bytes: int = 32 * 2**20
    # A request's line and headers must arrive within this many seconds of the connection opening or the
    # previous response ending (408), so silent or trickling connections are closed.
    header_timeout_s: float = 10.0
    # The whole body must arrive within this many seconds (408), so a stalled client holds nothing.
    body_timeout_s: float = 10.0
    # Queries that may wait for a batch; beyond it a request is answered 429 with Retry-After.
    max_queued: int = 65536
    # Most queries per encoder/search batch (bigger requests are searched in chunks of this size), and how
    # long a batch waits to fill.
    max_batch: int = 512
    max_wait_ms: float = 2.0
