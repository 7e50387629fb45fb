"""Web search providers behind ``/retrieve`` (``--retriever serper|serpapi|brave``), against a local fake of
each provider's documented API (tests/fake_web_search.py): no network. The server under test is a real
``search-r1-retriever serve`` process."""

import json
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests import fake_web_search
from tests.local_app import served_in_thread


@pytest.fixture(scope="module")
def provider_url():
    with served_in_thread(fake_web_search.app) as url:
        yield url


def post(url, queries, topk=3, return_scores=False):
    body = json.dumps({"queries": queries, "topk": topk, "return_scores": return_scores}).encode()
    request = urllib.request.Request(f"{url}/retrieve", body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def served(provider, provider_url, tmp_path, monkeypatch, key=fake_web_search.KEY, extra=()):
    from retrieval_server.search.web_search import PROVIDERS
    from search_r1_plugin.sandbox.server_process import retrieval_server

    monkeypatch.setenv(PROVIDERS[provider].key_env, key)
    args = ["--retriever", provider, "--web-base-url", provider_url, "--web-cache", str(tmp_path / f"{provider}.sqlite"), *extra]
    return retrieval_server(args, tmp_path / f"{provider}_server.log")


@pytest.mark.parametrize("provider", ["serper", "serpapi", "brave"])
def test_each_provider_answers_in_the_passage_shape(provider, provider_url, tmp_path, monkeypatch):
    with served(provider, provider_url, tmp_path, monkeypatch) as url:
        status, body = post(url, [f"{provider} who wrote hamlet", f"{provider} capital of peru"], topk=2)
        status_scored, scored = post(url, [f"{provider} who wrote hamlet"], topk=2, return_scores=True)
        status_empty, empty = post(url, [f"{provider} nothing here"], topk=2)
    assert status == 200 and [len(r) for r in body["result"]] == [2, 2]
    doc = body["result"][0][0]
    q = f"{provider} who wrote hamlet"
    assert doc["contents"] == f'"Result 0 for {q}"\nSnippet 0 about {q}.'  # HTML tags of Brave's description removed
    assert doc["id"] == doc["url"] and doc["url"].startswith("https://example.com/0/")
    assert status_scored == 200 and scored["result"][0][0]["document"] == doc and scored["result"][0][0]["score"] == 1.0
    assert status_empty == 200 and empty == {"result": [[]]}


def test_an_answer_box_comes_first(provider_url, tmp_path, monkeypatch):
    with served("serper", provider_url, tmp_path, monkeypatch) as url:
        _, body = post(url, ["the answer to everything"], topk=3)
    assert body["result"][0][0]["contents"] == '"Answer to the answer to everything"\nforty-two'
    assert len(body["result"][0]) == 3


def test_rate_limits_and_server_errors_are_retried_and_every_search_is_paid_once(provider_url, tmp_path, monkeypatch):
    queries = ["rate limited question", "server error question", "plain question"]
    with served("serpapi", provider_url, tmp_path, monkeypatch) as url:
        status, body = post(url, queries)
        again_status, again = post(url, queries)  # a retried training step
        metrics = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    with served("serpapi", provider_url, tmp_path, monkeypatch) as url:  # a restarted server keeps its cache
        restarted_status, restarted = post(url, queries)
    assert status == again_status == restarted_status == 200 and body == again == restarted
    counts = json.loads(urllib.request.urlopen(f"{provider_url}/calls", timeout=10).read())["calls"]
    assert [counts[q] for q in queries] == [3, 2, 1]  # two 429s, one 503, then one answer each; never again
    assert 'web_search_calls_total{provider="serpapi"} 6.0' in metrics
    assert 'web_search_cache_hits_total{provider="serpapi"} 3.0' in metrics
    assert 'web_search_retries_total{provider="serpapi"} 3.0' in metrics
    assert 'web_search_estimated_cost_usd_total{provider="serpapi"} 0.09' in metrics


def test_a_slow_or_failing_search_holds_up_only_its_own_request(provider_url, tmp_path, monkeypatch):
    finished = []
    with served("serper", provider_url, tmp_path, monkeypatch, extra=["--web-retries", "1"]) as url:

        def ask(name, queries):
            finished.append((name, *post(url, queries)))

        slow = threading.Thread(target=ask, args=("slow", ["slow question"]))
        slow.start()
        time.sleep(0.3)  # the slow search is on its way
        ask("fast", ["quick question"])
        ask("broken", ["broken question"])
        slow.join()
    by_name = {name: (status, body) for name, status, body in finished}
    assert [name for name, *_ in finished] == ["fast", "broken", "slow"]
    assert by_name["fast"][0] == 200 and by_name["slow"][0] == 200
    status, body = by_name["broken"]
    assert status == 502 and "serper did not answer the search for 'broken question' after 2 attempts" in body["detail"]


def test_a_refused_key_is_not_retried(provider_url, tmp_path, monkeypatch):
    with served("brave", provider_url, tmp_path, monkeypatch, key="wrong") as url:
        status, body = post(url, ["key check question"])
    counts = json.loads(urllib.request.urlopen(f"{provider_url}/calls", timeout=10).read())
    assert status == 502 and "brave refused the search for 'key check question': HTTP 422" in body["detail"]
    assert counts["refused"]["key check question"] == 1  # a wrong key is not sent again


def test_no_key_is_a_clear_error_before_serving(tmp_path, monkeypatch):
    import subprocess
    import sys

    monkeypatch.delenv("SERPER_API_KEY", raising=False)
    out = subprocess.run(
        [sys.executable, "-m", "retrieval_server", "serve", "--retriever", "serper"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2 and "set SERPER_API_KEY or pass --web-api-key-file" in out.stderr


def test_the_http_session_closes_with_the_server_and_with_its_event_loop(provider_url, tmp_path):
    """The app's shutdown closes the provider session (``Backend.aclose``); a search from a new event loop
    closes the old loop's session there while that loop still runs (no unclosed-session leak)."""
    import asyncio

    from retrieval_server.search.web_search import WebSearch

    web = WebSearch(
        "serper",
        fake_web_search.KEY,
        base_url=provider_url,
        cache_path=tmp_path / "c.sqlite",
        rate_limit=100.0,
        concurrency=4,
        retries=0,
        timeout_s=30.0,
        cost_per_call=None,
    )
    first_loop = asyncio.new_event_loop()
    runner = threading.Thread(target=first_loop.run_forever, daemon=True)
    runner.start()
    asyncio.run_coroutine_threadsafe(web.asearch(["first"], 2), first_loop).result(timeout=60)
    first = web.session

    async def on_a_new_loop():
        await web.asearch(["second"], 2)
        second = web.session
        await web.aclose()
        return second

    second = asyncio.run(on_a_new_loop())
    time.sleep(0.5)  # the old loop runs the close it was handed
    assert first is not second and first.closed and second.closed
    first_loop.call_soon_threadsafe(first_loop.stop)
