"""Per-trajectory async rollout with micro-batched retrieval vs the original turn-synchronous loop.

Both sides run the same trajectories (same per-turn token counts, same number of
searches) against the same simulated engine and retriever:

* LLM: a turn of ``n`` tokens takes ``prefill + n × per_token`` seconds; token
  counts are drawn per trajectory and turn from a log-normal (heavy tail, as real
  reasoning lengths); a continuous-batching engine serves concurrent requests in
  parallel, so each request's latency is its own.
* retriever: a fixed cost per search batch plus a cost per query; concurrent
  requests merge into the next batch, as in our server.

(a) ours: every trajectory is its own coroutine (:func:`run_trajectory`);
    searches coalesce in :class:`RetrievalClient`-style micro-batches.
(b) original: turn by turn, the whole batch generates and waits for the slowest
    trajectory, then one retrieval request carries that turn's queries.

    python benchmarks/rollout_async_vs_sync.py --trajectories 256
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time

from search_r1_plugin.rollout import Trajectory  # noqa: F401  (the loop measured below)


def plan(n: int, turns: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.randint(1, turns)  # searches before answering
        out.append([max(8, min(500, int(rng.lognormvariate(4.6, 0.7)))) for _ in range(k + 1)])
    return out


class SimRetriever:
    """Our server's behaviour: a fixed cost per search batch plus a cost per query; requests that
    arrive while a batch runs are merged into the next one (server-side micro-batching). The client
    side coalesces queries that arrive within ``max_wait`` into one request."""

    def __init__(self, per_batch: float, per_query: float, max_wait: float) -> None:
        self.per_batch, self.per_query, self.max_wait = per_batch, per_query, max_wait
        self.client_pending: list[asyncio.Future] = []
        self.queue: list[tuple[int, asyncio.Future]] = []
        self.requests = self.batches = 0
        self.server_task: asyncio.Task | None = None

    async def _server(self) -> None:
        while self.queue:
            batch, self.queue = self.queue, []
            await asyncio.sleep(self.per_batch + self.per_query * sum(n for n, _ in batch))
            self.batches += 1
            for _, f in batch:
                f.set_result(None)
        self.server_task = None

    async def search_request(self, n: int) -> None:
        self.requests += 1
        fut = asyncio.get_running_loop().create_future()
        self.queue.append((n, fut))
        if self.server_task is None:
            self.server_task = asyncio.get_running_loop().create_task(self._server())
        await fut

    async def search_batched(self) -> None:
        fut = asyncio.get_running_loop().create_future()
        self.client_pending.append(fut)
        if len(self.client_pending) == 1:
            async def flush():
                await asyncio.sleep(self.max_wait)
                batch, self.client_pending = self.client_pending, []
                await self.search_request(len(batch))
                for f in batch:
                    f.set_result(None)
            asyncio.get_running_loop().create_task(flush())
        await fut


async def llm_turn(tokens: int, prefill: float, per_token: float) -> None:
    await asyncio.sleep(prefill + tokens * per_token)


async def ours(plans, args, retriever) -> None:
    async def one(turns: list[int]) -> None:
        for i, tokens in enumerate(turns):
            await llm_turn(tokens, args.prefill, args.per_token)
            if i < len(turns) - 1:
                await retriever.search_batched()
    await asyncio.gather(*[one(p) for p in plans])


async def original(plans, args, retriever) -> None:
    active = list(range(len(plans)))
    turn = 0
    while active:
        # every active trajectory generates; the batch waits for the slowest one
        await asyncio.gather(*[llm_turn(plans[i][turn], args.prefill, args.per_token) for i in active])
        searching = [i for i in active if turn < len(plans[i]) - 1]
        if searching:
            await retriever.search_request(len(searching))
        active = searching
        turn += 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trajectories", type=int, default=256)
    p.add_argument("--max-turns", type=int, default=4)
    p.add_argument("--prefill", type=float, default=0.02)
    p.add_argument("--per-token", type=float, default=0.002, help="seconds per generated token per request")
    p.add_argument("--retrieval-batch", type=float, default=0.05, help="fixed seconds per server search batch")
    p.add_argument("--retrieval-query", type=float, default=0.0005, help="seconds per query in a batch")
    p.add_argument("--max-wait", type=float, default=0.005)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    plans = plan(args.trajectories, args.max_turns, args.seed)
    results = {}
    for name, fn in (("original turn-synchronous", original), ("ours per-trajectory async", ours)):
        r = SimRetriever(args.retrieval_batch, args.retrieval_query, args.max_wait)
        t0 = time.perf_counter()
        asyncio.run(fn(plans, args, r))
        results[name] = (time.perf_counter() - t0, r.requests, r.batches)
    for name, (sec, req, bat) in results.items():
        print(f"{name:28s} wall {sec:7.2f} s   retrieval requests {req:4d}   server batches {bat}")
    (a, *_), (b, *_) = results.values()
    print(f"speed-up (original / ours): {a / b:.2f}x")


if __name__ == "__main__":
    main()
