"""Concurrent callers' items, run as one batch: the plugin's one micro-batcher.

Trajectories of a rollout run concurrently and each asks for one thing at a time (a search, a turn of
generation); one batched call costs about as much as one single call. :class:`Coalescer` collects what
arrives within ``max_wait_s`` (up to ``max_batch`` items) and hands it to ``run_batch`` at once. Used by the
retrieval client (one HTTP request per batch of queries), the CPU rollout server ``hf`` and the evaluation's
vLLM policy (one ``generate`` per batch).

What every caller can rely on:

* a caller that is cancelled while waiting (e.g. another task of its ``gather`` failed) gives up its
  result; every other caller of the batch is still answered;
* ``run_batch`` raising fails the callers of that batch only; it may also return an exception *instance*
  for one item, which fails that item's callers alone;
* with ``key``, items with equal keys share one slot of the batch and one result (a GRPO group asking the
  same query sends it once);
* with ``one_at_a_time``, batches run one after the other (one model on one device): items that arrive
  while a batch runs make up the next one.

The retrieval server keeps its own :class:`retrieval_server.search.batcher.MicroBatcher` (it must stay
standalone, and it also bounds its queue).
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Generic, Hashable, Optional, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    def __init__(
        self,
        run_batch: Callable[[list[T]], Awaitable[list[Any]]],
        *,
        max_batch: int,
        max_wait_s: float,
        key: Optional[Callable[[T], Hashable]] = None,
        one_at_a_time: bool = False,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.key = key
        self.one_at_a_time = one_at_a_time
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._pending: dict[Hashable, tuple[T, list[asyncio.Future]]] = {}
        self._flusher: Optional[asyncio.Task] = None
        self._lock: Optional[asyncio.Lock] = None
        self._tasks: set[asyncio.Task] = set()  # batches running (kept referenced until done)

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop: what waited in the old one is gone
            self._loop, self._pending, self._flusher, self._lock = loop, {}, None, asyncio.Lock()
        fut = loop.create_future()
        slot = self.key(item) if self.key is not None else object()
        if slot in self._pending:
            self._pending[slot][1].append(fut)
        else:
            self._pending[slot] = (item, [fut])
        if len(self._pending) >= self.max_batch:
            self._start(delay=0.0)
        elif self._flusher is None:
            self._start(delay=self.max_wait_s)
        return await fut

    def _start(self, delay: float) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
        self._flusher = asyncio.get_running_loop().create_task(self._flush_after(delay))

    async def _flush_after(self, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        if self.one_at_a_time:
            async with self._lock:  # what arrives while another batch runs joins this one, up to max_batch
                batch = self._take()
                if self._pending:  # more than a batch waited: the next one goes as soon as this is done
                    self._start(delay=0.0)
                await self._run(batch)
            return
        self._flusher = None
        while self._pending:  # everything waiting, in batches of max_batch, all at once
            task = asyncio.get_running_loop().create_task(self._run(self._take()))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _take(self) -> list[tuple[T, list[asyncio.Future]]]:
        """Up to ``max_batch`` waiting items, oldest first."""
        slots = list(self._pending)[: self.max_batch]
        self._flusher = None
        return [self._pending.pop(s) for s in slots]

    async def _run(self, batch: list[tuple[T, list[asyncio.Future]]]) -> None:
        if not batch:
            return
        try:
            results = await self.run_batch([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} items returned {len(results)} results")
        except Exception as exc:  # this batch's callers fail; nothing else does
            results = [exc] * len(batch)
        for (_, futures), result in zip(batch, results):
            for fut in futures:
                if fut.done():  # cancelled while waiting: nothing to deliver
                    continue
                if isinstance(result, BaseException):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)
