"""Web search providers as retrievers: ``search-r1-retriever serve --retriever serper|serpapi|brave``.

The follow-ups of Search-R1 (ASearcher, DeepResearcher, verl-tool) train against live web search, and the
original added a SerpAPI server after publication. Here a provider answers behind the same ``/retrieve``:
each result becomes ``{"id": url, "contents": "\\"Title\\"\\nsnippet", "url": url}`` — the wiki-18 passage
shape every client reads, the title quoted on the first line as in the original's web servers.

What a training run needs from a paid, rate-limited API:

* **an on-disk cache** keyed by (provider, query, k) (sqlite, ``--web-cache``): a retried step, a resumed
  run or a second evaluation never pays twice for the same search;
* **a rate limit** (``--web-rate-limit`` calls/s, a token bucket) and **a concurrency limit**
  (``--web-concurrency``) per server;
* **retries with backoff** on 429, 5xx, timeouts and connection errors (``Retry-After`` honoured), per
  query: queries are searched concurrently, never in a batch, so one slow or retried query holds up only
  the request it belongs to (the micro-batcher is not used);
* counters of calls, cache hits, errors and the estimated cost (``--web-cost-per-call`` × calls) on
  ``/metrics``.

A query that still fails after its retries fails its request with 502 naming the provider's answer; the
plugin's client retries 5xx, and what was already answered comes from the cache.

Response formats (the providers' documented JSON; tested against a local fake of each, not the live APIs):

==========  =====================================================  ===========================================
provider    request                                                results used, in order
==========  =====================================================  ===========================================
serper      ``POST {base}/search`` ``{"q", "num"}``, ``X-API-KEY``  ``answerBox``, ``organic[]``, ``peopleAlsoAsk[]``
serpapi     ``GET {base}/search.json?engine=google&q&num&api_key``  ``answer_box``, ``organic_results[]``,
                                                                   ``related_questions[]``
brave       ``GET {base}/res/v1/web/search?q&count``,               ``web.results[]`` (HTML tags of the
            ``X-Subscription-Token``                               description removed)
==========  =====================================================  ===========================================
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import json
import logging
import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from retrieval_server.errors import UpstreamError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Provider:
    name: str
    base_url: str
    key_env: str  # where the API key is read from when no --web-api-key-file is given
    cost_per_call: float  # USD, the entry plan's list price per search when this was written (docs/retrieval.md)
    max_k: int  # most results one call returns
    request: Callable[[str, str, int, str], tuple[str, str, dict]]  # (base, query, k, key) -> method, url, aiohttp kwargs
    parse: Callable[[dict], list[tuple[str, str, str]]]  # body -> [(title, snippet, url)]


def _entry(item: dict, title_key: str = "title", snippet_keys: Sequence[str] = ("snippet",), url_key: str = "link") -> tuple[str, str, str]:
    snippet = next((item[k] for k in snippet_keys if item.get(k)), "")
    return str(item.get(title_key) or ""), str(snippet), str(item.get(url_key) or "")


def _google_like(answer_box: str, organic: str, questions: str) -> Callable[[dict], list[tuple[str, str, str]]]:
    """Serper and SerpAPI return Google's page in the same shape under different field names: the answer box
    first, then the organic results, then the related questions (their question as the title)."""

    def parse(body: dict) -> list[tuple[str, str, str]]:
        out = [_entry(body[answer_box], snippet_keys=("answer", "snippet"))] if body.get(answer_box) else []
        out += [_entry(r) for r in body.get(organic, [])]
        out += [_entry(r, title_key="question") for r in body.get(questions, [])]
        return out

    return parse


_parse_serper = _google_like("answerBox", "organic", "peopleAlsoAsk")
_parse_serpapi = _google_like("answer_box", "organic_results", "related_questions")


_TAGS = re.compile(r"<[^>]+>")


def _parse_brave(body: dict) -> list[tuple[str, str, str]]:
    results = (body.get("web") or {}).get("results", [])
    return [
        (html.unescape(_TAGS.sub("", t)), html.unescape(_TAGS.sub("", s)), u)
        for t, s, u in (_entry(r, snippet_keys=("description",), url_key="url") for r in results)
    ]


PROVIDERS = {
    "serper": Provider(
        "serper",
        "https://google.serper.dev",
        "SERPER_API_KEY",
        0.001,
        100,
        lambda base, q, k, key: ("POST", f"{base}/search", {"json": {"q": q, "num": k}, "headers": {"X-API-KEY": key}}),
        _parse_serper,
    ),
    "serpapi": Provider(
        "serpapi",
        "https://serpapi.com",
        "SERPAPI_API_KEY",
        0.015,
        100,
        lambda base, q, k, key: ("GET", f"{base}/search.json", {"params": {"engine": "google", "q": q, "num": str(k), "api_key": key}}),
        _parse_serpapi,
    ),
    "brave": Provider(
        "brave",
        "https://api.search.brave.com",
        "BRAVE_API_KEY",
        0.005,
        20,
        lambda base, q, k, key: (
            "GET",
            f"{base}/res/v1/web/search",
            {"params": {"q": q, "count": str(k)}, "headers": {"X-Subscription-Token": key, "Accept": "application/json"}},
        ),
        _parse_brave,
    ),
}

# SerpAPI answers a search with no results with an "error" field; that is an empty answer, not a failure.
_NO_RESULTS = re.compile(r"hasn't returned any results|no results", re.IGNORECASE)


class ResultCache:
    """(provider, query, k) → documents, in sqlite: survives restarts, safe across threads."""

    def __init__(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.db = sqlite3.connect(str(path), check_same_thread=False)
        self.db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, documents TEXT NOT NULL, saved REAL NOT NULL)")
        self.db.commit()

    @staticmethod
    def key(provider: str, query: str, k: int) -> str:
        return hashlib.sha256(json.dumps([provider, query, k]).encode()).hexdigest()

    def get(self, key: str) -> Optional[list[dict]]:
        with self.lock:
            row = self.db.execute("SELECT documents FROM results WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, documents: list[dict]) -> None:
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO results VALUES (?, ?, ?)", (key, json.dumps(documents), time.time()))
            self.db.commit()


class TokenBucket:
    """At most ``rate`` calls a second on average, bursts of up to ``burst``."""

    def __init__(self, rate: float, burst: int = 1) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.updated = float(burst), time.monotonic()
        self.lock = asyncio.Lock()

    async def take(self) -> None:
        async with self.lock:
            while True:
                now = time.monotonic()
                self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
                self.updated = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                await asyncio.sleep((1 - self.tokens) / self.rate)


class WebSearch:
    """``await asearch(queries, k) -> (scores, documents)`` through one provider; counters for ``/metrics``."""

    def __init__(
        self,
        provider: str,
        api_key: str,
        *,
        base_url: Optional[str],
        cache_path: str | Path,
        rate_limit: float,
        concurrency: int,
        retries: int,
        timeout_s: float,
        cost_per_call: Optional[float],
        backoff_s: float = 0.5,
    ) -> None:
        self.provider = PROVIDERS[provider]
        self.api_key = api_key
        self.base_url = (base_url or self.provider.base_url).rstrip("/")
        self.cache_path = Path(cache_path)
        self.cache = ResultCache(cache_path)
        self.rate_limit, self.concurrency, self.retries, self.timeout_s = rate_limit, concurrency, retries, timeout_s
        self.cost_per_call = self.provider.cost_per_call if cost_per_call is None else cost_per_call
        self.backoff_s = backoff_s
        self.counts = {"calls": 0, "cache_hits": 0, "errors": 0, "retries": 0}
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self.session = None

    def _loop_state(self) -> None:
        import aiohttp

        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # semaphores, buckets and sessions belong to one event loop
            old, old_loop, self._loop = self.session, self._loop, loop
            if old is not None and not old.closed and old_loop is not None and old_loop.is_running():
                # the old session's connections live on its loop, which still runs: close it there
                asyncio.run_coroutine_threadsafe(old.close(), old_loop)
            self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
            self.slots = asyncio.Semaphore(self.concurrency)
            self.bucket = TokenBucket(self.rate_limit, burst=max(1, int(self.rate_limit)))

    async def aclose(self) -> None:
        """Close the HTTP session (the server's shutdown): otherwise aiohttp warns of an unclosed session."""
        if self.session is not None and not self.session.closed and self._loop is asyncio.get_running_loop():
            await self.session.close()

    async def asearch(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        self._loop_state()
        answers = await asyncio.gather(*(self.search_one(q, k) for q in queries))
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        hits = np.full((len(queries), k), None, dtype=object)
        for row, docs in enumerate(answers):
            for col, doc in enumerate(docs[:k]):
                scores[row, col], hits[row, col] = 1.0 / (col + 1), doc  # the provider's rank, as a score
        return scores, hits

    async def search_one(self, query: str, k: int) -> list[dict]:
        key = ResultCache.key(self.provider.name, query, k)
        cached = await asyncio.to_thread(self.cache.get, key)
        if cached is not None:
            self.counts["cache_hits"] += 1
            return cached
        documents = await self._call(query, min(k, self.provider.max_k))
        await asyncio.to_thread(self.cache.put, key, documents)
        return documents

    async def _call(self, query: str, k: int) -> list[dict]:
        import aiohttp

        method, url, kwargs = self.provider.request(self.base_url, query, k, self.api_key)
        last = ""
        for attempt in range(self.retries + 1):
            wait = self.backoff_s * 2**attempt
            async with self.slots:
                await self.bucket.take()
                self.counts["calls"] += 1
                try:
                    async with self.session.request(method, url, **kwargs) as resp:
                        text = await resp.text()
                        if resp.status == 200:
                            return self._documents(json.loads(text), query)
                        last = f"HTTP {resp.status}: {text[:300]}"
                        if resp.status != 429 and resp.status < 500:  # a bad key or request: retrying cannot help
                            self.counts["errors"] += 1
                            raise UpstreamError(f"{self.provider.name} refused the search for {query!r}: {last}")
                        wait = max(wait, _retry_after(resp.headers.get("Retry-After")))
                except (aiohttp.ClientError, asyncio.TimeoutError, json.JSONDecodeError) as exc:
                    last = repr(exc)
            self.counts["errors"] += 1
            if attempt < self.retries:
                self.counts["retries"] += 1
                logger.warning(
                    "%s: search for %r failed (%s); retry %d/%d in %.1f s", self.provider.name, query, last, attempt + 1, self.retries, wait
                )
                await asyncio.sleep(wait)  # outside the slot: a waiting query holds nothing others need
        raise UpstreamError(
            f"{self.provider.name} did not answer the search for {query!r} after {self.retries + 1} attempts (last: {last})"
        )

    def _documents(self, body: dict, query: str) -> list[dict]:
        if body.get("error") and not _NO_RESULTS.search(str(body["error"])):
            self.counts["errors"] += 1
            raise UpstreamError(f"{self.provider.name} answered the search for {query!r} with an error: {body['error']}")
        out = []
        for title, snippet, link in self.provider.parse(body):
            contents = f'"{title}"\n{snippet}'
            doc_id = link or f"{self.provider.name}:{hashlib.sha1(contents.encode()).hexdigest()[:16]}"
            out.append({"id": doc_id, "contents": contents, "url": link})
        return out

    def collect(self):
        """Prometheus collector: calls, cache hits, errors, retries and the estimated cost, by provider."""
        from prometheus_client.core import CounterMetricFamily

        for name, value in self.counts.items():
            family = CounterMetricFamily(f"web_search_{name}", f"web search {name.replace('_', ' ')}", labels=["provider"])
            family.add_metric([self.provider.name], value)
            yield family
        cost = CounterMetricFamily("web_search_estimated_cost_usd", "calls × --web-cost-per-call", labels=["provider"])
        cost.add_metric([self.provider.name], self.counts["calls"] * self.cost_per_call)
        yield cost

    def describe(self) -> list:
        return []  # no metrics at registration time (they are created per scrape)


def _retry_after(value: Optional[str]) -> float:
    try:
        return max(0.0, float(value)) if value is not None else 0.0
    except ValueError:
        return 1.0


def read_api_key(provider: str, key_file: Optional[str]) -> str:
    """The provider's key: ``--web-api-key-file``, else its environment variable; a clear error otherwise."""
    import os

    if key_file:
        key = Path(key_file).read_text().strip()
        if not key:
            raise ValueError(f"--web-api-key-file {key_file} is empty")
        return key
    env = PROVIDERS[provider].key_env
    key = os.environ.get(env, "").strip()
    if not key:
        raise ValueError(f"--retriever {provider} needs an API key: set {env} or pass --web-api-key-file")
    return key


def cache_path_default(provider: str) -> Path:
    return Path.home() / ".cache" / "search-r1" / "web" / f"{provider}.sqlite"
