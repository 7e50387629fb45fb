"""What an evaluation's searches go through on their way to the retrieval server (docs/evaluation.md).

All of it wraps one ``retrieve(query, topk) -> results`` (the client's ``search``) and changes nothing
else, so every method of :mod:`.methods` gets it:

* :class:`Recorder` keeps every call a question made (failure attribution reads the passages);
* :class:`RecordTap` (``--record FILE``) appends every distinct (query, top-k) → results to a JSONL file;
* :class:`Replay` answers from such a file (``--replay FILE``): a query it lacks is an error naming the
  query, or goes to ``--replay-fallback URL``. Training reads the same file (``search_r1.retrieval_replay``);
* :class:`Noisy` makes the retriever worse on purpose (``--retrieval-noise p``: each passage replaced by
  a random passage of the corpus with probability p; ``--drop-top1``), seeded by the query so a rerun
  and a replay see the same noise.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional

Retrieve = Callable[[str, int], Awaitable[list[dict[str, Any]]]]


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


class Recorder:
    """One question's view of the retriever: every call it made and what came back, in order."""

    def __init__(self, inner: Retrieve) -> None:
        self.inner = inner
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, query: str, topk: int) -> list[dict[str, Any]]:
        results = await self.inner(query, topk)
        self.calls.append({"query": query, "topk": topk, "results": results})
        return results


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
        self.records = load_records(path)
        self.fallback = fallback

    async def __call__(self, query: str, topk: int) -> list[dict[str, Any]]:
        hit = self.records.get(record_key(query, topk))
        if hit is not None:
            return hit
        if self.fallback is None:
            raise KeyError(f"query {query!r} (top-{topk}) is not in the retrieval record {self.path}; record it, or pass a fallback URL")
        return await self.fallback(query, topk)


class CorpusSampler:
    """Random passages of a JSONL corpus by random byte offsets: constant memory, any corpus size."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.size = os.path.getsize(self.path)
        if self.size == 0:
            raise ValueError(f"corpus {self.path} is empty")

    def sample(self, rng: random.Random) -> dict[str, Any]:
        with open(self.path, "rb") as f:
            for _ in range(100):
                f.seek(rng.randrange(self.size))
                f.readline()  # the rest of the line the offset fell in
                line = f.readline() or (f.seek(0) or f.readline())  # past the end: the first line
                if line.strip():
                    return json.loads(line)
        raise ValueError(f"no passage found in {self.path}")


class Noisy:
    """Each passage replaced by a random corpus passage with probability ``p``; ``drop_top1`` shifts the list
    by one (asks for one more and drops the best). Seeded by (seed, query, position)."""

    def __init__(self, inner: Retrieve, p: float = 0.0, corpus: Optional[CorpusSampler] = None, drop_top1: bool = False, seed: int = 0):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"retrieval noise must be in [0, 1]; got {p}")
        if p > 0 and corpus is None:
            raise ValueError("retrieval noise needs the corpus to draw random passages from (--noise-corpus)")
        self.inner, self.p, self.corpus, self.drop_top1, self.seed = inner, p, corpus, drop_top1, seed

    async def __call__(self, query: str, topk: int) -> list[dict[str, Any]]:
        results = await self.inner(query, topk + 1 if self.drop_top1 else topk)
        results = list(results[1:] if self.drop_top1 else results)[:topk]
        if self.p <= 0:
            return results
        out = []
        for i, item in enumerate(results):
            rng = random.Random(f"{self.seed}/{query}/{i}")
            if rng.random() < self.p:
                doc = await asyncio.to_thread(self.corpus.sample, rng)
                out.append({"document": doc, "score": None} if "document" in item else doc)
            else:
                out.append(item)
        return out


@dataclasses.dataclass
class RetrievalOptions:
    """The evaluation's retrieval switches (``search-r1 eval --record/--replay/--retrieval-noise/--drop-top1``)."""

    record: Optional[str] = None
    replay: Optional[str] = None
    replay_fallback: Optional[str] = None
    noise: float = 0.0
    noise_corpus: Optional[str] = None
    drop_top1: bool = False
    noise_seed: int = 0

    def retriever(self, search: Retrieve, fallback: Optional[Retrieve] = None) -> Retrieve:
        """Server or replay, then the record tap, then noise on top (seeded by the query, so a replay of a
        noisy run with the same flags sees the same noise)."""
        base: Retrieve = Replay(self.replay, fallback) if self.replay else search
        if self.record:
            base = RecordTap(base, RecordFile(self.record))
        if self.noise > 0 or self.drop_top1:
            corpus = CorpusSampler(self.noise_corpus) if self.noise_corpus else None
            return Noisy(base, self.noise, corpus, self.drop_top1, self.noise_seed)
        return base

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
