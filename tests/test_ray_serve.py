"""The retriever on Ray Serve, through its own command (``search-r1-retriever serve --ray``): a local Ray
cluster with 2 replicas behind Serve's proxy, a replica killed under load, overload, the Serve config."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
import yaml

from search_r1_plugin.retrieval_client import RetrievalClient

KEY = {"Authorization": "Bearer s3cret"}


@pytest.fixture(scope="module")
def ray_server(bm25_args, tmp_path_factory):
    from search_r1_plugin.sandbox.server_process import retrieval_server

    args = [
        "--ray",
        "--replicas",
        "2",
        "--num-cpus",
        "0.5",
        *bm25_args,
        "--api-key",
        "s3cret",
        "--max-queued",
        "8",
        "--max-batch",
        "4",
        # long enough that a flood's bodies, streamed by the proxy on a busy machine, are not taken for slow
        # clients (1 s gave 408s in the overload test beside other jobs); short enough for the 408 test
        "--body-timeout-s",
        "3",
    ]
    log = tmp_path_factory.mktemp("ray_serve") / "serve.log"
    with retrieval_server(args, log, timeout_s=240, stop_timeout_s=90) as url:
        yield url


def instances(url, n=40):
    """Which replica processes answered ``n`` health checks."""
    return {httpx.get(f"{url}/health", headers=KEY, timeout=10).json()["instance"] for _ in range(n)}


def wait_for_replicas(url, count, timeout_s=120):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            seen = instances(url)
        except (httpx.HTTPError, KeyError, ValueError):
            seen = set()
        if len(seen) == count:
            return seen
        time.sleep(1)
    raise AssertionError(f"{count} replicas not serving after {timeout_s} s: {seen}")


def test_two_replicas_serve_the_same_api(ray_server, sample_world):
    assert len(wait_for_replicas(ray_server, 2)) == 2
    assert httpx.get(f"{ray_server}/health").json() == {"status": "ready"}  # readiness only without the key
    assert httpx.post(f"{ray_server}/retrieve", json={"queries": ["a"]}).status_code == 401
    row = json.loads(open(sample_world["sample_nq/test"]).readline())
    r = httpx.post(f"{ray_server}/retrieve", json={"queries": [row["question"]], "topk": 3, "return_scores": True}, headers=KEY, timeout=30)
    assert r.status_code == 200 and any(row["golden_answers"][0] in d["document"]["contents"] for d in r.json()["result"][0])
    assert "retrieval_requests_total" in httpx.get(f"{ray_server}/metrics", headers=KEY).text


def test_a_replica_killed_under_load_is_replaced_and_no_search_is_lost(ray_server, sample_world):
    rows = [json.loads(line) for line in open(sample_world["sample_nq/test"])]
    questions = [r["question"] for r in rows][:60]
    victim = sorted(wait_for_replicas(ray_server, 2))[0]

    async def load():
        client = RetrievalClient(f"{ray_server}/retrieve", api_key="s3cret", retries=8, backoff_s=0.5, max_wait_ms=1)
        results = []
        for lo in range(0, len(questions), 6):  # waves of searches while the replica dies
            if lo == 12:
                os.kill(int(victim.split(":")[1]), signal.SIGKILL)
            results += await asyncio.gather(*[client.search(q, 3) for q in questions[lo : lo + 6]])
            await asyncio.sleep(0.2)
        await client.close()
        return results

    results = asyncio.run(load())
    # every search answered, each with the documents the index gives for it
    for question, docs in zip(questions, results):
        want = httpx.post(
            f"{ray_server}/retrieve", json={"queries": [question], "topk": 3, "return_scores": True}, headers=KEY, timeout=30
        ).json()["result"][0]
        assert [d["document"]["id"] for d in docs] == [d["document"]["id"] for d in want]
    replaced = wait_for_replicas(ray_server, 2)
    assert victim not in replaced  # Serve started a new replica in its place


def test_the_guard_answers_hostile_clients_through_the_proxy(ray_server):
    """Serve's proxy streams the body to the replica, so the replica's guard answers as early as the plain
    server's: 401 from the headers while the client is still sending, 413 at once, 408 after the timeout."""
    from tests.test_retrieval_server import raw_exchange

    head = b"POST /retrieve HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 52428800\r\n\r\n"
    status, seconds = raw_exchange(ray_server, head, [b"[" + b"1," * 500_000])
    assert status == 401 and seconds < 3
    auth = b"Authorization: Bearer s3cret\r\n"
    status, seconds = raw_exchange(
        ray_server, b"POST /retrieve HTTP/1.1\r\nHost: x\r\n" + auth + b"Content-Length: 10737418240\r\n\r\n", [b'{"queries"']
    )
    assert status == 413 and seconds < 3
    status, seconds = raw_exchange(
        ray_server, b"POST /retrieve HTTP/1.1\r\nHost: x\r\n" + auth + b"Transfer-Encoding: chunked\r\n\r\n", [b'5\r\n{"que\r\n'], wait_s=15
    )
    assert status == 408 and 2.9 < seconds < 12


def test_overload_is_429_through_the_proxy_then_recovers(ray_server):
    async def flood():
        async with httpx.AsyncClient(timeout=60, headers=KEY) as client:
            bodies = [{"queries": [f"who was born in {i} {j}" for j in range(4)], "topk": 3} for i in range(96)]
            return await asyncio.gather(*[client.post(f"{ray_server}/retrieve", json=b) for b in bodies])

    codes = [r.status_code for r in asyncio.run(flood())]
    assert set(codes) <= {200, 429} and codes.count(429) > 0 and codes.count(200) > 0, codes
    for i in range(4):
        assert httpx.post(f"{ray_server}/retrieve", json={"queries": [f"river {i}"]}, headers=KEY, timeout=30).status_code == 200


def test_autoscaling_adds_a_replica_under_load_and_removes_it_after(bm25_args, tmp_path):
    """--replicas 1 --max-replicas 2 with a target of 1 ongoing request: 8 clients in a loop make Serve start
    a second replica (a new process answers /health); when the load stops, Serve goes back to one."""
    from search_r1_plugin.sandbox.server_process import retrieval_server

    args = ["--ray", "--replicas", "1", "--max-replicas", "2", "--target-ongoing-requests", "1", "--num-cpus", "0.5", *bm25_args]
    args += ["--upscale-delay-s", "1", "--downscale-delay-s", "2"]
    with retrieval_server(args, tmp_path / "serve.log", timeout_s=240, stop_timeout_s=90) as url:
        first = wait_for_replicas(url, 1)
        stop = threading.Event()
        codes = []

        def client():
            with httpx.Client(timeout=30) as http:
                while not stop.is_set():
                    codes.append(http.post(f"{url}/retrieve", json={"queries": ["river"] * 8, "topk": 3}).status_code)

        clients = [threading.Thread(target=client) for _ in range(8)]
        for thread in clients:
            thread.start()
        try:
            scaled = wait_for_replicas(url, 2, timeout_s=120)
        finally:
            stop.set()
            for thread in clients:
                thread.join()
        assert first < scaled  # the first replica stays; a new one joins
        assert codes and set(codes) == {200}  # a replica that joins is ready before it gets traffic
        assert len(wait_for_replicas(url, 1, timeout_s=120)) == 1


def test_serve_config_for_serve_deploy(bm25_args):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "retrieval_server",
            "serve-config",
            "--port",
            "8000",
            *bm25_args,
            "--replicas",
            "3",
            "--no-batching",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    config = yaml.safe_load(out.stdout)
    app = config["applications"][0]
    assert app["import_path"] == "retrieval_server.ray_serve:build_app" and config["http_options"]["port"] == 8000
    assert app["args"]["replicas"] == 3 and app["args"]["no_batching"] is True and app["args"]["retriever"] == "bm25"
    from retrieval_server.ray_serve import build_app

    application = build_app(app["args"])  # the builder Serve calls with those args
    assert type(application).__name__ == "Application"


@pytest.mark.parametrize("kind", ["Flat", "IVF-PQ + rerank"])
def test_one_deployment_per_shard_answers_like_the_unsharded_index(
    kind, sample_world, minilm_path, dense_server, approximate_shards, tmp_path
):
    """3 shards served as 3 shard deployments behind 1 encoding replica: every query's ids and scores equal the
    unsharded Flat index's (the session's plain dense server). Flat shards from ``build-index --index-shards 3``;
    IVF-PQ shards each re-rank their candidates from their slice of the on-disk vectors (every list probed,
    every passage a candidate, so the answer must be exact)."""
    from retrieval_server.build.builder import build_dense_index
    from search_r1_plugin.sandbox.server_process import retrieval_server

    if kind == "Flat":
        built = build_dense_index(sample_world["corpus"], minilm_path, tmp_path / "idx", index_type="Flat", index_shards=3, dtype="fp32")
        index = [str(built.index_path)]
    else:
        index = [
            approximate_shards["IVF4,PQ16x4"],
            "--nprobe",
            "4",
            "--rerank-embeddings",
            approximate_shards["vectors"],
            "--rerank-k",
            "4000",
        ]
    args = [
        "--ray",
        "--shard-deployments",
        "--shard-cpus",
        "0.25",
        "--num-cpus",
        "0.5",
        "--corpus",
        str(sample_world["corpus"]),
        "--encoder",
        minilm_path,
        "--dtype",
        "fp32",  # as the fixtures' (conftest.ENCODER_DTYPE)
        "--index",
        *index,
    ]
    questions = [json.loads(line)["question"] for line in open(sample_world["sample_nq/test"])][:20]
    body = {"queries": questions, "topk": 5, "return_scores": True}
    want = httpx.post(f"{dense_server}/retrieve", json=body, timeout=60).json()["result"]
    with retrieval_server(args, tmp_path / "serve.log", timeout_s=240, stop_timeout_s=90) as url:
        got = httpx.post(f"{url}/retrieve", json=body, timeout=60).json()["result"]
        detail = httpx.get(f"{url}/health").json()
    assert detail["documents"] == len(open(sample_world["corpus"]).readlines())
    assert "3 shard deployments" in detail["retriever"]
    for a, b in zip(got, want):
        assert [d["document"]["id"] for d in a] == [d["document"]["id"] for d in b]
        assert all(abs(x["score"] - y["score"]) < 1e-4 for x, y in zip(a, b))
