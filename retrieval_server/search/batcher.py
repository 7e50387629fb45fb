"""Dynamic micro-batching: queries from concurrent requests share one encode + one search.

Requests put their queries on a queue and await futures. One asyncio task drains
the queue, waiting at most ``max_wait_ms`` for a batch to fill up to
``max_batch`` queries, deduplicates them, and hands the batch to a single worker
thread (FAISS on GPU is not thread-safe; one owner thread is also what keeps
BLAS from oversubscribing the cores). The event loop never blocks on encoding
or search, so ``/health`` and ``/metrics`` answer during heavy load.

A request larger than ``max_batch`` is searched in ``max_batch``-sized chunks, one
after the other, so requests that arrive meanwhile are served between its chunks
(riding along with the next one) instead of waiting for all of it: one huge request
delays others by one chunk, not by its whole length.

Backpressure: at most ``max_queued`` queries may wait. A request that would pass that bound is
refused at once with :class:`Overloaded` (the app answers 429 with ``Retry-After``) instead of waiting
behind a queue that grows without bound until every caller times out; callers retry elsewhere or later.

``max_batch=1``-style behaviour of the original server is available as
``batching=False``: each request is encoded and searched on its own (still on
the one worker thread), which is the baseline of ``benchmarks/server_throughput.py``.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np

from retrieval_server.limits import Limits

SearchFn = Callable[[list[str], int], tuple[np.ndarray, np.ndarray]]


class Overloaded(Exception):
    """The queue is full; ``retry_after_s`` estimates when it will have drained."""

    def __init__(self, queued: int, limit: int, retry_after_s: float) -> None:
        super().__init__(f"{queued} queries waiting (limit {limit}); retry in {retry_after_s:.0f} s")
        self.retry_after_s = retry_after_s


@dataclass
class _Item:
    queries: list[str]
    k: int
    future: asyncio.Future


class MicroBatcher:
    def __init__(
        self,
        search: SearchFn,
        *,
        max_batch: int = Limits.max_batch,
        max_wait_ms: float = Limits.max_wait_ms,
        batching: bool = True,
        on_batch: Callable[[int, float], None] | None = None,
        max_queued: int = Limits.max_queued,
        on_queue: Callable[[int], None] | None = None,
    ) -> None:
        self.search = search
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.batching = batching
        self.on_batch = on_batch or (lambda size, seconds: None)
        self.max_queued = max_queued
        self.on_queue = on_queue or (lambda queued: None)
        self.queued = 0  # queries admitted and not answered yet
        self.recent_qps = 0.0  # exponentially averaged search rate, for Retry-After
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="retrieval")
        self.queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, queries: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores and ids (``len(queries) × k``) for one request's queries; :class:`Overloaded` when
        admitting them would queue more than ``max_queued`` (a request bigger than the bound alone is
        admitted when the queue is empty, so it can always be served)."""
        if self.queued and self.queued + len(queries) > self.max_queued:
            rate = self.recent_qps or 1000.0
            raise Overloaded(self.queued, self.max_queued, max(1.0, round(self.queued / rate)))
        self.queued += len(queries)
        self.on_queue(self.queued)
        try:
            if not self.batching or len(queries) <= self.max_batch:
                return await self._submit_chunk(queries, k)
            parts = [await self._submit_chunk(queries[lo : lo + self.max_batch], k) for lo in range(0, len(queries), self.max_batch)]
            return np.concatenate([s for s, _ in parts]), np.concatenate([i for _, i in parts])
        finally:
            self.queued -= len(queries)
            self.on_queue(self.queued)

    async def _submit_chunk(self, queries: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        fut = asyncio.get_running_loop().create_future()
        await self.queue.put(_Item(queries, k, fut))
        return await fut

    async def _collect(self) -> list[_Item]:
        items = [await self.queue.get()]
        if not self.batching:
            return items
        n = len(items[0].queries)
        deadline = time.perf_counter() + self.max_wait_s
        while n < self.max_batch:
            timeout = deadline - time.perf_counter()
            try:
                item = self.queue.get_nowait() if timeout <= 0 else await asyncio.wait_for(self.queue.get(), timeout)
            except (asyncio.QueueEmpty, asyncio.TimeoutError):
                break
            items.append(item)
            n += len(item.queries)
        return items

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = await self._collect()
            unique = list(dict.fromkeys(q for it in items for q in it.queries))
            k = max(it.k for it in items)
            t0 = time.perf_counter()
            try:
                scores, ids = await loop.run_in_executor(self.executor, self.search, unique, k)
            except Exception as exc:  # one bad batch fails its requests, never the server
                for it in items:
                    if not it.future.done():
                        it.future.set_exception(exc)
                continue
            seconds = time.perf_counter() - t0
            self.on_batch(len(unique), seconds)
            rate = len(unique) / max(seconds, 1e-6)
            self.recent_qps = rate if not self.recent_qps else 0.8 * self.recent_qps + 0.2 * rate
            row = {q: i for i, q in enumerate(unique)}
            for it in items:
                if it.future.done():  # client went away
                    continue
                rows = [row[q] for q in it.queries]
                it.future.set_result((scores[rows, : it.k], ids[rows, : it.k]))
