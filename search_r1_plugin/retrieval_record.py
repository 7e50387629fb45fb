"""Retrieval results saved and reused: ``(query, top-k) → results`` in a JSONL file.

``search-r1 eval --record FILE`` writes one (:class:`RecordTap`), ``--replay FILE`` answers from one
(:class:`Replay`), and training reads the same file with ``search_r1.retrieval_replay=FILE``: a
retriever-free CI, or a cheap ablation, reuses real retrieval results. A query the file lacks is an error
naming it, unless a fallback retriever (a server URL) is given.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

from search_r1_plugin.rollout import Retrieve


def record_key(query: str, topk: int) -> str:
    return json.dumps([query, int(topk)], ensure_ascii=False)


class RecordFile:
    """Appends (query, top-k) → results once per distinct key; safe across the run's concurrent questions."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.seen = set(load_records(self.path)) if self.path.exists() else set()

    def add(self, query: str, topk: int, results: list[dict[str, Any]]) -> None:
        key = record_key(query, topk)
        if key in self.seen:
            return
        self.seen.add(key)
        with open(self.path, "a") as f:
            f.write(json.dumps({"query": query, "topk": int(topk), "results": results}, ensure_ascii=False) + "\n")


@lru_cache(maxsize=4)
def _cached_records(path: str, mtime_ns: int, size: int) -> dict[str, list[dict[str, Any]]]:
    return load_records(path)


def load_records(path: str | Path) -> dict[str, list[dict[str, Any]]]:
    records = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                records[record_key(row["query"], row["topk"])] = row["results"]
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{n}: not a retrieval record ({e})") from e
    return records


class RecordTap:
    """Writes what the retriever (server or replay) returned to a :class:`RecordFile`, below any noise: a
    record is the clean retrieval, so one record serves a whole noise sweep."""

    def __init__(self, inner: Retrieve, record: RecordFile) -> None:
        self.inner, self.record = inner, record

    async def __call__(self, query: str, topk: int) -> list[dict[str, Any]]:
        results = await self.inner(query, topk)
        self.record.add(query, topk, results)
        return results


class Replay:
    """Answers from a record file; a miss is an error naming the query unless a fallback retriever is given."""

    def __init__(self, path: str | Path, fallback: Optional[Retrieve] = None) -> None:
        self.path = str(path)
        stat = os.stat(self.path)
        self.records = _cached_records(self.path, stat.st_mtime_ns, stat.st_size)  # every agent loop of a worker shares one read
        self.fallback = fallback

    async def __call__(self, query: str, topk: int) -> list[dict[str, Any]]:
        hit = self.records.get(record_key(query, topk))
        if hit is not None:
            return hit
        if self.fallback is None:
            raise KeyError(f"query {query!r} (top-{topk}) is not in the retrieval record {self.path}; record it, or pass a fallback URL")
        return await self.fallback(query, topk)
