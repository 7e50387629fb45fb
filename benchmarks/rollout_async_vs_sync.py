"""Our per-trajectory async rollout vs the original turn-synchronous loop, same simulated engine and retriever.

Both sides run the same trajectories (per-turn token counts and number of searches drawn once) and
talk to the same simulated retrieval server over real HTTP:

* LLM: a turn of ``n`` tokens takes ``prefill + n × per_token`` seconds (a continuous-batching engine
  serves concurrent requests in parallel); ``n`` is log-normal per trajectory and turn (heavy tail, as
  real reasoning lengths), capped at 500.
* retrieval server (aiohttp, in process): a fixed cost per search batch plus a cost per query;
  requests that arrive while a batch runs are merged into the next batch, as in our server.

(a) ours: the real :func:`search_r1_plugin.rollout.run_trajectory` per trajectory, all concurrent,
    with the real :class:`RetrievalClient` coalescing their queries.
(b) original: turn by turn, the whole batch generates and waits for its slowest member, then one
    retrieval request carries that turn's queries (``RetrievalClient.search_batch``).

    python benchmarks/rollout_async_vs_sync.py --trajectories 256
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

from aiohttp import web

from search_r1_plugin.protocol import parse_action
from search_r1_plugin.retrieval_client import RetrievalClient
from search_r1_plugin.rollout import ObservationEncoder, run_trajectory
from search_r1_plugin.sandbox.tiny_model import build_tokenizer
from search_r1_plugin.settings import SearchR1Config


def plan(n: int, turns: int, seed: int) -> list[list[int]]:
    """Token counts per turn; a trajectory with k searches has k + 1 turns."""
    rng = random.Random(seed)
    return [[max(8, min(500, int(rng.lognormvariate(4.6, 0.7)))) for _ in range(rng.randint(1, turns) + 1)] for _ in range(n)]


def simulated_server(per_batch: float, per_query: float):
    queue: list[tuple[int, asyncio.Future]] = []
    state = {"task": None, "batches": 0, "requests": 0}

    async def serve() -> None:
        while queue:
            batch = queue[:]
            queue.clear()
            await asyncio.sleep(per_batch + per_query * sum(n for n, _ in batch))
            state["batches"] += 1
            for _, fut in batch:
                fut.set_result(None)
        state["task"] = None

    async def retrieve(request: web.Request) -> web.Response:
        body = await request.json()
        state["requests"] += 1
        fut = asyncio.get_running_loop().create_future()
        queue.append((len(body["queries"]), fut))
        if state["task"] is None:
            state["task"] = asyncio.get_running_loop().create_task(serve())
        await fut
        doc = {"document": {"id": "0", "contents": '"T"\nsome retrieved text'}, "score": 1.0}
        return web.json_response({"result": [[doc] * body["topk"] for _ in body["queries"]]})

    app = web.Application()
    app.router.add_post("/retrieve", retrieve)
    return app, state


class SimLLM:
    """Returns ``n`` token ids ending in a search (or, on the last turn, an answer)."""

    def __init__(self, tokenizer, plans, prefill: float, per_token: float) -> None:
        self.per_token, self.prefill = per_token, prefill
        self.filler = tokenizer.encode(" the", add_special_tokens=False)
        self.search = tokenizer.encode("<search> q </search>", add_special_tokens=False)
        self.answer = tokenizer.encode("<answer> a </answer>", add_special_tokens=False)
        self.plans = plans

    async def turn(self, tokens: int, last: bool) -> list[int]:
        await asyncio.sleep(self.prefill + tokens * self.per_token)
        tail = self.answer if last else self.search
        return self.filler * max(0, tokens - len(tail)) + tail


async def ours(llm: SimLLM, tokenizer, url: str, cfg: SearchR1Config) -> None:
    client = RetrievalClient(url, max_wait_ms=cfg.retrieval_max_wait_ms)
    enc = ObservationEncoder(tokenizer)

    async def one(turns: list[int]) -> None:
        state = {"turn": 0}

        async def generate(context, max_tokens, stop):
            i = state["turn"]
            state["turn"] += 1
            return await llm.turn(turns[i], i == len(turns) - 1), None

        await run_trajectory([1], generate, client.search, tokenizer, cfg, 10_000, obs_encoder=enc)

    await asyncio.gather(*[one(p) for p in llm.plans])
    await client.close()


async def original(llm: SimLLM, tokenizer, url: str, cfg: SearchR1Config) -> None:
    client = RetrievalClient(url)
    active = list(range(len(llm.plans)))
    turn = 0
    while active:
        outs = await asyncio.gather(*[llm.turn(llm.plans[i][turn], turn == len(llm.plans[i]) - 1) for i in active])
        searching = [i for i, ids in zip(active, outs) if parse_action(tokenizer.decode(ids)).kind == "search"]
        if searching:
            await client.search_batch(["q"] * len(searching), cfg.topk)
        active = searching
        turn += 1
    await client.close()


async def run(args) -> None:
    tokenizer = build_tokenizer(Path(tempfile.mkdtemp()))
    plans = plan(args.trajectories, args.max_turns, args.seed)
    cfg = SearchR1Config(max_turns=args.max_turns, retrieval_max_wait_ms=args.max_wait_ms)
    results = {}
    for name, fn in (("original turn-synchronous", original), ("ours per-trajectory async", ours)):
        app, state = simulated_server(args.retrieval_batch, args.retrieval_query)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        t0 = time.perf_counter()
        await fn(SimLLM(tokenizer, plans, args.prefill, args.per_token), tokenizer, f"http://127.0.0.1:{port}/retrieve", cfg)
        results[name] = (time.perf_counter() - t0, state["requests"], state["batches"])
        await runner.cleanup()
    for name, (sec, req, bat) in results.items():
        print(f"{name:28s} wall {sec:7.2f} s   retrieval requests {req:4d}   server batches {bat}")
    (a, *_), (b, *_) = results.values()
    print(f"speed-up (original / ours): {a / b:.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trajectories", type=int, default=256)
    p.add_argument("--max-turns", type=int, default=4)
    p.add_argument("--prefill", type=float, default=0.02)
    p.add_argument("--per-token", type=float, default=0.002, help="seconds per generated token per request")
    p.add_argument("--retrieval-batch", type=float, default=0.05, help="fixed seconds per server search batch")
    p.add_argument("--retrieval-query", type=float, default=0.0005, help="seconds per query in a batch")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="client-side coalescing window")
    p.add_argument("--seed", type=int, default=0)
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
