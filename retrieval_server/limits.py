"""Request limits of the retrieval server (no heavy imports: the CLI reads the defaults for ``--help``)."""

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
