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
from typing import Any, Optional

from search_r1_plugin.retrieval_record import RecordFile, RecordTap, Replay, Retrieve

__all__ = ["CorpusSampler", "Noisy", "Recorder", "Replay", "RetrievalOptions"]


class Recorder:
    """One question's view of the retriever: every call it made and what came back, in order."""

    def __init__(self, inner: Retrieve) -> None:
        self.inner = inner
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, query: str, topk: int) -> list[dict[str, Any]]:
        results = await self.inner(query, topk)
        self.calls.append({"query": query, "topk": topk, "results": results})
        return results


class CorpusSampler:
    """Random passages of a JSONL corpus by random byte offsets: constant memory, any corpus size."""

    def __init__(self, path: str | os.PathLike) -> None:
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
