"""RetrievalClient against an in-process server: coalescing, dedup, cache, retries, clear errors."""

import asyncio

import pytest
from aiohttp import web

from search_r1_plugin.retrieval_client import RetrievalClient, RetrievalError


class FakeServer:
    """Answers each query with one document whose contents echo the query; can fail on purpose."""

    def __init__(self, fail_first: int = 0, status: int = 503) -> None:
        self.requests: list[list[str]] = []
        self.fail_first, self.status = fail_first, status

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body["queries"])
        if len(self.requests) <= self.fail_first:
            return web.Response(status=self.status, text="nope")
        docs = [
            [{"document": {"id": str(i), "contents": f'"{q}"\nabout {q}'}, "score": 1.0}] * body["topk"]
            for i, q in enumerate(body["queries"])
        ]
        return web.json_response({"result": docs})


async def serve(fake: FakeServer):
    app = web.Application()
    app.router.add_post("/retrieve", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/retrieve"


def run(coro):
    return asyncio.run(coro)


def test_concurrent_queries_coalesce_and_dedupe():
    async def go():
        fake = FakeServer()
        runner, url = await serve(fake)
        client = RetrievalClient(url, max_wait_ms=20, max_batch=64)
        queries = [f"q{i % 50}" for i in range(100)]  # 50 distinct, each asked twice
        results = await asyncio.gather(*[client.search(q, 2) for q in queries])
        await client.close()
        await runner.cleanup()
        return fake, client, queries, results

    fake, client, queries, results = run(go())
    for q, docs in zip(queries, results):  # every caller gets its own query's documents
        assert len(docs) == 2 and docs[0]["document"]["contents"] == f'"{q}"\nabout {q}'
    assert len(fake.requests) <= 2 and sum(len(r) for r in fake.requests) == 50  # batched, duplicates sent once
    assert max(len(r) for r in fake.requests) <= 64


def test_cache_skips_the_network():
    async def go():
        fake = FakeServer()
        runner, url = await serve(fake)
        client = RetrievalClient(url, cache_size=10, max_wait_ms=1)
        first = await client.search("x", 3)
        second = await client.search("x", 3)
        other_k = await client.search("x", 1)
        await client.close()
        await runner.cleanup()
        return fake, client, first, second, other_k

    fake, client, first, second, other_k = run(go())
    assert first == second and len(other_k) == 1
    assert len(fake.requests) == 2 and client.stats.cache_hits == 1  # (query, topk) is the key


def test_retries_then_succeeds():
    async def go():
        fake = FakeServer(fail_first=2, status=503)
        runner, url = await serve(fake)
        client = RetrievalClient(url, retries=3, backoff_s=0.01, max_wait_ms=1)
        docs = await client.search("y", 1)
        await client.close()
        await runner.cleanup()
        return fake, client, docs

    fake, client, docs = run(go())
    assert len(fake.requests) == 3 and client.stats.retries == 2 and docs[0]["document"]["id"] == "0"


def test_bad_request_is_not_retried_and_names_the_server():
    async def go():
        fake = FakeServer(fail_first=10, status=422)
        runner, url = await serve(fake)
        client = RetrievalClient(url, retries=3, backoff_s=0.01, max_wait_ms=1)
        try:
            with pytest.raises(RetrievalError, match=r"rejected the request \(HTTP 422\)"):
                await client.search("z", 1)
        finally:
            await client.close()
            await runner.cleanup()
        return fake

    assert len(run(go()).requests) == 1


def test_dead_server_fails_loudly_after_the_retry_budget():
    from search_r1_plugin.sandbox.server_process import free_port

    url = f"http://127.0.0.1:{free_port()}/retrieve"

    async def go():
        client = RetrievalClient(url, retries=2, backoff_s=0.01, max_wait_ms=1)
        try:
            await asyncio.gather(client.search("a", 1), client.search("b", 1))
        finally:
            await client.close()

    with pytest.raises(RetrievalError, match="unreachable after 3 attempts"):
        run(go())


def test_a_rejected_query_fails_only_its_own_trajectory():
    """A server that refuses one query (HTTP 422) fails the coalesced request; the client re-sends the
    queries one by one, so only the trajectory that asked the bad query sees the error."""

    class Strict(FakeServer):
        async def handle(self, request):
            body = await request.json()
            if any(len(q) > 100 for q in body["queries"]):
                self.requests.append(body["queries"])
                return web.json_response({"detail": [{"loc": ["body", "queries"], "msg": "too long"}]}, status=422)
            return await super().handle(request)

    async def go():
        fake = Strict()
        runner, url = await serve(fake)
        client = RetrievalClient(url, max_wait_ms=20, max_batch=64, retries=3, backoff_s=0.01)
        queries = [f"q{i}" for i in range(63)] + ["x" * 5025]
        results = await asyncio.gather(*[client.search(q, 1) for q in queries], return_exceptions=True)
        await client.close()
        await runner.cleanup()
        return fake, client, results

    fake, client, results = run(go())
    assert all(isinstance(r, list) and r[0]["document"]["contents"].startswith(f'"q{i}"') for i, r in enumerate(results[:63]))
    assert isinstance(results[63], RetrievalError) and "422" in str(results[63])
    assert client.stats.isolated_rejections == 1 and client.stats.retries == 0  # a 4xx is never retried
    assert len(fake.requests) == 1 + 64  # the coalesced request, then one per query
