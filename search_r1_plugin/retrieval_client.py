"""Async client of a Search-R1 ``/retrieve`` server, shared by all trajectories of a process.

Trajectories call :meth:`RetrievalClient.search` one query at a time; the client
coalesces the queries that arrive within ``max_wait_ms`` (up to ``max_batch``
distinct ones; a repeated query is sent once) into one HTTP request, so hundreds of concurrent rollouts make a handful of
requests. Each request has a timeout and is retried with exponential backoff;
when the budget is spent the waiting trajectories get :class:`RetrievalError`
naming the URL, never an empty ``<information>``. An optional LRU cache keyed
by (query, topk) skips the network for repeated queries.

Several servers (one per node, or several Ray Serve ingresses): ``url`` may list them, comma-separated.
Requests go to the server with the fewest in flight; a failed attempt moves to another server at once
(failover within the same retry budget), and a server that fails is taken out of rotation for a while
that doubles with each consecutive failure (up to ``max_down_s``) and is probed back in by the next
request after that. A 429 answer takes its server out for the ``Retry-After`` it names.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Sequence

import aiohttp

from search_r1_plugin.coalescer import Coalescer
from search_r1_plugin.errors import RequestRejected, RetrievalError

logger = logging.getLogger(__name__)


def split_urls(url: str | Sequence[str]) -> list[str]:
    """``"http://a/retrieve,http://b/retrieve"`` (or a list) → the servers' URLs, in order, once each."""
    parts = url.split(",") if isinstance(url, str) else list(url)
    urls = list(dict.fromkeys(u.strip() for u in parts if u and u.strip()))
    if not urls:
        raise RetrievalError(f"no retrieval server URL in {url!r}")
    return urls


@dataclass
class Endpoint:
    """One server and what the client knows about it."""

    url: str
    in_flight: int = 0
    failures: int = 0  # consecutive
    down_until: float = 0.0  # event-loop time; out of rotation until then
    requests: int = 0

    def available(self, now: float) -> bool:
        return self.down_until <= now


@dataclass
class ClientStats:
    requests: int = 0
    queries: int = 0
    retries: int = 0
    cache_hits: int = 0
    isolated_rejections: int = 0  # coalesced requests re-sent query by query after a 4xx
    failovers: int = 0  # attempts sent to another server after one failed
    overloaded: int = 0  # 429 answers (server queue full)


class RetrievalClient:
    def __init__(
        self,
        url: str | Sequence[str],
        *,
        timeout_s: float = 30.0,
        retries: int = 5,
        backoff_s: float = 0.5,
        max_batch: int = 512,
        max_wait_ms: float = 5.0,
        cache_size: int = 0,
        api_key: str | None = None,
        max_down_s: float = 30.0,
    ) -> None:
        self.endpoints = [Endpoint(u) for u in split_urls(url)]
        self.url = ",".join(e.url for e in self.endpoints)
        self.max_down_s = max_down_s
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.cache_size = cache_size
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.stats = ClientStats()
        self._cache: OrderedDict[tuple[str, int], list[dict[str, Any]]] = OrderedDict()
        self._batches: dict[int, Coalescer] = {}  # one per top-k
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- public API -------------------------------------------------------------------------
    async def search(self, query: str, topk: int) -> list[dict[str, Any]]:
        """Documents for one query, as the server returns them (``{"document", "score"}``)."""
        key = (query, topk)
        if self.cache_size and key in self._cache:
            self._cache.move_to_end(key)
            self.stats.cache_hits += 1
            return self._cache[key]
        batches = self._batches.get(topk)
        if batches is None:
            # keyed by query, so a repeated query (e.g. a GRPO group asking the same thing) costs one slot
            # of the batch and is sent once
            batches = self._batches[topk] = Coalescer(
                lambda queries: self._send(queries, topk), max_batch=self.max_batch, max_wait_s=self.max_wait_s, key=lambda q: q
            )
        result = await batches.submit(query)
        if self.cache_size:
            self._cache[key] = result
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return result

    async def search_batch(self, queries: list[str], topk: int) -> list[list[dict[str, Any]]]:
        """One request for many queries (the original trainer's pattern), with retries."""
        return await self._post_with_retries(queries, topk)

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    # ---- batching ---------------------------------------------------------------------------
    async def _send(self, queries: list[str], topk: int) -> list[Any]:
        """One coalesced request; when the server rejects it (4xx), each query alone, so one bad query
        fails only its own trajectories (its result is the exception)."""
        try:
            return await self._post_with_retries(queries, topk)
        except RequestRejected:
            if len(queries) == 1:
                raise
            self.stats.isolated_rejections += 1
            alone = await asyncio.gather(*(self._post_with_retries([q], topk) for q in queries), return_exceptions=True)
            return [r if isinstance(r, BaseException) else r[0] for r in alone]

    # ---- HTTP -------------------------------------------------------------------------------
    def _get_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                connector=aiohttp.TCPConnector(limit=64),
                headers=self.headers,
            )
            self._loop = loop
        return self._session

    def _pick(self, tried: set[str]) -> Endpoint:
        """The available server with the fewest requests in flight, preferring one not yet tried for this
        request; when every server is out of rotation, the one due back first (a probe)."""
        now = asyncio.get_running_loop().time()
        pool = [e for e in self.endpoints if e.available(now)]
        fresh = [e for e in pool if e.url not in tried]
        if fresh or pool:
            return min(fresh or pool, key=lambda e: (e.in_flight, e.requests))
        return min(self.endpoints, key=lambda e: e.down_until)

    def _failed(self, endpoint: Endpoint, retry_after: float | None = None) -> None:
        now = asyncio.get_running_loop().time()
        if retry_after is not None:  # overloaded, not broken: back when the server says
            endpoint.down_until = now + min(retry_after, self.max_down_s)
            return
        endpoint.failures += 1
        endpoint.down_until = now + min(self.max_down_s, self.backoff_s * 2 ** (endpoint.failures - 1))

    async def _post_with_retries(self, queries: list[str], topk: int) -> list[list[dict[str, Any]]]:
        payload = {"queries": queries, "topk": topk, "return_scores": True}
        last_error: BaseException | None = None
        tried: set[str] = set()
        retry_after: float | None = None
        for attempt in range(self.retries + 1):
            endpoint = self._pick(tried)
            if attempt:
                self.stats.retries += 1
                if endpoint.url in tried:  # no other server to fail over to: wait before trying again
                    await asyncio.sleep(max(self.backoff_s * 2 ** (attempt - 1), retry_after or 0.0))
                else:
                    self.stats.failovers += 1
            tried.add(endpoint.url)
            retry_after = None
            endpoint.in_flight += 1
            try:
                async with self._get_session().post(endpoint.url, json=payload) as resp:
                    if resp.status >= 400:
                        body = (await resp.text())[:500]
                        if resp.status == 429:
                            self.stats.overloaded += 1
                            retry_after = _retry_after_s(resp.headers.get("Retry-After"))
                        elif 400 <= resp.status < 500 and resp.status != 408:
                            # The request itself is wrong: retrying (anywhere) cannot help.
                            raise RequestRejected(f"retrieval server {endpoint.url} rejected the request (HTTP {resp.status}): {body}")
                        raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status, message=body)
                    data = await resp.json()
                result = data["result"]
                if len(result) != len(queries):
                    raise RetrievalError(f"retrieval server {endpoint.url} returned {len(result)} results for {len(queries)} queries")
                endpoint.failures, endpoint.down_until = 0, 0.0
                endpoint.requests += 1
                self.stats.requests += 1
                self.stats.queries += len(queries)
                return result
            except RetrievalError:
                raise
            except (aiohttp.ClientError, asyncio.TimeoutError, KeyError, ValueError) as exc:
                last_error = exc
                self._failed(endpoint, retry_after)
                logger.warning("retrieval attempt %d/%d to %s failed: %r", attempt + 1, self.retries + 1, endpoint.url, exc)
            finally:
                endpoint.in_flight -= 1
        raise RetrievalError(
            f"retrieval server {self.url} unreachable after {self.retries + 1} attempts "
            f"(last error: {last_error!r}); is it running? start it with `search-r1-retriever serve`"
        )


def _retry_after_s(value: str | None) -> float:
    """``Retry-After`` in seconds (the delta-seconds form; anything else counts as 1 s)."""
    try:
        return max(0.0, float(value)) if value is not None else 1.0
    except ValueError:
        return 1.0


def server_health(url: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """``GET /health`` of the server behind one ``…/retrieve`` URL; RetrievalError naming the URL if unreachable."""
    base = url.rsplit("/retrieve", 1)[0]
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=timeout_s) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:  # 503 while loading or after a failed load: the body says why
        try:
            return json.loads(exc.read() or b"{}") or {"status": f"HTTP {exc.code}"}
        except ValueError:  # not our server's answer (e.g. a proxy with nothing deployed yet)
            return {"status": f"HTTP {exc.code}"}
    except Exception as exc:
        raise RetrievalError(
            f"retrieval server {url} unreachable ({exc}); start it with `search-r1-retriever serve ...` or pass the right URL"
        ) from exc


def check_ready(url: str | Sequence[str]) -> None:
    """Fail before any work unless at least one of the servers is ready; name the ones that are not."""
    problems = []
    for one in split_urls(url):
        try:
            status = server_health(one).get("status")
        except RetrievalError as exc:
            problems.append(str(exc))
            continue
        if status == "ready":
            continue
        problems.append(f"retrieval server {one} is not ready (status {status!r})")
    if len(problems) == len(split_urls(url)):
        raise RetrievalError("; ".join(problems))
    for problem in problems:
        logger.warning("%s (the other servers answer)", problem)


_CLIENTS: dict[tuple, RetrievalClient] = {}


def shared_client(url: str, **settings: Any) -> RetrievalClient:
    """One client per (url, settings) per process, so all trajectories of a worker batch together."""
    key = (url, tuple(sorted(settings.items())))
    client = _CLIENTS.get(key)
    if client is None:
        client = _CLIENTS[key] = RetrievalClient(url, **settings)
    return client


async def close_shared_clients() -> None:
    """Close the HTTP sessions of this process's shared clients (end of an event loop)."""
    for client in _CLIENTS.values():
        await client.close()


def client_from_config(cfg: Any) -> RetrievalClient:
    """The shared client for a :class:`~search_r1_plugin.settings.SearchR1Config`."""
    return shared_client(
        cfg.retriever_url,
        timeout_s=cfg.retrieval_timeout_s,
        retries=cfg.retrieval_retries,
        backoff_s=cfg.retrieval_backoff_s,
        max_batch=cfg.retrieval_max_batch,
        max_wait_ms=cfg.retrieval_max_wait_ms,
        cache_size=cfg.retrieval_cache_size,
        api_key=cfg.retrieval_api_key,
    )
