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


def dead_url():
    from search_r1_plugin.sandbox.server_process import free_port

    return f"http://127.0.0.1:{free_port()}/retrieve"  # nothing listens there


def test_several_servers_share_the_load_and_one_dead_url_costs_nothing():
    async def go():
        a, b = FakeServer(), FakeServer()
        (ra, url_a), (rb, url_b) = await serve(a), await serve(b)
        client = RetrievalClient(",".join([url_a, dead_url(), url_b]), max_wait_ms=1, max_batch=4, backoff_s=0.2)
        results = []
        for wave in range(20):  # waves of concurrent trajectories, as a training step sends them
            results += await asyncio.gather(*[client.search(f"q{wave}-{i}", 1) for i in range(12)])
        await client.close()
        await ra.cleanup()
        await rb.cleanup()
        return a, b, client, results

    a, b, client, results = run(go())
    assert [r[0]["document"]["contents"].split("\n")[0] for r in results] == [f'"q{w}-{i}"' for w in range(20) for i in range(12)]
    assert len(a.requests) > 10 and len(b.requests) > 10  # load spread over the live servers
    dead = next(e for e in client.endpoints if e.url not in (client.endpoints[0].url, client.endpoints[2].url))
    assert dead.failures >= 1 and dead.requests == 0
    # the dead URL was out of rotation: far fewer failovers than requests
    assert 1 <= client.stats.failovers < client.stats.requests / 4, client.stats


def test_a_failed_server_is_probed_back_in():
    async def go():
        flaky = FakeServer(fail_first=2)  # two 503s, then healthy
        steady = FakeServer()
        (rf, url_f), (rs, url_s) = await serve(flaky), await serve(steady)
        client = RetrievalClient([url_f, url_s], max_wait_ms=1, backoff_s=0.1, max_down_s=0.3)
        for i in range(6):
            await client.search(f"first{i}", 1)
        await asyncio.sleep(0.5)  # past the longest time out of rotation
        before = len(flaky.requests)
        await asyncio.gather(*[client.search(f"later{i}", 1) for i in range(8)])
        await client.close()
        await rf.cleanup()
        await rs.cleanup()
        return flaky, before

    flaky, before = run(go())
    assert len(flaky.requests) > before  # back in rotation, and answering


def test_overload_429_is_retried_after_the_servers_retry_after():
    class Busy(FakeServer):
        async def handle(self, request):
            if not self.requests:
                self.requests.append([])
                return web.Response(status=429, text="busy", headers={"Retry-After": "0.5"})
            return await super().handle(request)

    async def go():
        busy = Busy()
        runner, url = await serve(busy)
        client = RetrievalClient(url, max_wait_ms=1, backoff_s=0.01)
        t0 = asyncio.get_running_loop().time()
        docs = await client.search("q", 1)
        waited = asyncio.get_running_loop().time() - t0
        await client.close()
        await runner.cleanup()
        return client, docs, waited

    client, docs, waited = run(go())
    assert docs[0]["document"]["contents"] == '"q"\nabout q'
    assert client.stats.overloaded == 1 and waited >= 0.5  # not the 0.01 s backoff


def test_all_servers_dead_names_every_url():
    async def go():
        urls = [dead_url(), dead_url()]
        client = RetrievalClient(urls, retries=3, backoff_s=0.01)
        with pytest.raises(RetrievalError) as err:
            await client.search("q", 1)
        await client.close()
        return urls, str(err.value)

    urls, message = run(go())
    assert all(u in message for u in urls) and "after 4 attempts" in message
