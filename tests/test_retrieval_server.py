"""The retrieval server as a real process on 127.0.0.1 (real MiniLM weights, FAISS, BM25)."""

import json
import subprocess
import sys

import httpx
import numpy as np
import pytest

from retrieval_server.search.encoder import method_name

# The payload the original Search-R1 trainer sends, and how it reads the answer.
ORIGINAL_PAYLOAD = {"queries": ["In which city was the painter born?", "capital of a country"], "topk": 3, "return_scores": True}


def post(url, payload, **kw):
    return httpx.post(f"{url}/retrieve", json=payload, timeout=30, **kw)


def test_original_client_shape(dense_server):
    r = post(dense_server, ORIGINAL_PAYLOAD)
    assert r.status_code == 200
    result = r.json()["result"]
    assert len(result) == 2 and all(len(docs) == 3 for docs in result)
    contents = result[0][0]["document"]["contents"]  # the original client's access path
    assert contents.startswith('"') and "\n" in contents
    assert isinstance(result[0][0]["score"], float)


def test_return_scores_false_gives_documents(dense_server):
    r = post(dense_server, {"queries": ["river"], "topk": 2, "return_scores": False})
    assert r.status_code == 200
    docs = r.json()["result"][0]
    assert set(docs[0]) >= {"id", "contents"} and "score" not in docs[0]
    r = post(dense_server, {"queries": ["river"]})  # topk null -> server default (3)
    assert len(r.json()["result"][0]) == 3


def test_flat_results_equal_brute_force(dense_server, dense_index, sample_world, minilm_path):
    from retrieval_server.search.encoder import Encoder

    emb = np.memmap(dense_index.index_path.parent / f"emb_{method_name(minilm_path)}.memmap", dtype=np.float32, mode="r").reshape(-1, 384)
    queries = ["In which country was a poet born?", "founded in 1200", "chemist", "Lobelguia capital"]
    q = Encoder(minilm_path, dtype="fp32").encode(queries, is_query=True, batch_size=64)
    expected = np.argsort(-(q @ emb.T), axis=1)[:, :5]
    result = post(dense_server, {"queries": queries, "topk": 5, "return_scores": True}).json()["result"]
    corpus = [json.loads(line) for line in open(sample_world["corpus"])]
    for qi, docs in enumerate(result):
        got = [d["document"]["id"] for d in docs]
        assert got == [corpus[i]["id"] for i in expected[qi]]
        assert np.allclose([d["score"] for d in docs], (q[qi] @ emb[expected[qi]].T), atol=1e-4)


def test_bm25_finds_exact_entity(bm25_server, sample_world):
    row = json.loads(open(sample_world["sample_nq/test"]).readline())
    docs = post(bm25_server, {"queries": [row["question"]], "topk": 3, "return_scores": True}).json()["result"][0]
    assert any(row["golden_answers"][0] in d["document"]["contents"] for d in docs)
    # a query matching nothing returns no documents rather than arbitrary ones
    assert post(bm25_server, {"queries": ["zzzzqqqq"], "topk": 3}).json()["result"] == [[]]


def malformed_payloads():
    out = []
    bad_values = [None, 1, 1.5, "x", True, {}, [1], [None], [["a"]], [{"q": 1}]]
    for v in bad_values:
        out.append({"queries": v, "topk": 3})
    for k in [21, 10**9, "x", 3.5, [3], {"k": 3}]:
        out.append({"queries": ["a"], "topk": k})
    for rs in ["maybe", 2, None, [True], {"a": 1}]:
        out.append({"queries": ["a"], "return_scores": rs})
    out.append({"topk": 3})
    out.append({"queries": ["a"] * 65})
    out.append([1, 2, 3])
    out.append("just a string")
    out.append(42)
    # combine to reach > 200 distinct cases
    combos = []
    for i in range(200):
        base = dict(out[i % len(out)]) if isinstance(out[i % len(out)], dict) else {"queries": out[i % len(out)]}
        base[f"noise_{i}"] = i  # unknown keys are ignored; the bad field still fails
        combos.append(base)
    return out + combos


def test_malformed_payloads_get_4xx_and_server_stays_healthy(dense_server):
    payloads = malformed_payloads()
    assert len(payloads) >= 200
    with httpx.Client(timeout=30) as client:
        for p in payloads:
            r = client.post(f"{dense_server}/retrieve", json=p)
            assert 400 <= r.status_code < 500, (p, r.status_code, r.text[:200])
            detail = r.json()["detail"]
            assert detail and "loc" in detail[0]  # names the field
        for raw in [b"{bad json", b"", b"\xff\xfe", b'{"queries": ["a"], "topk": }']:
            r = client.post(f"{dense_server}/retrieve", content=raw, headers={"content-type": "application/json"})
            assert r.status_code == 422
        assert client.get(f"{dense_server}/health").json()["status"] == "ready"
        assert post(dense_server, ORIGINAL_PAYLOAD).status_code == 200


def test_error_names_the_field(dense_server):
    r = post(dense_server, {"queries": ["a"], "topk": 21})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "topk"]
    assert "20" in r.json()["detail"][0]["msg"]
    r = post(dense_server, {"queries": ["a"] * 65})
    assert r.status_code == 422 and "64" in r.json()["detail"][0]["msg"]


def test_values_the_original_accepts(dense_server):
    """Read as the original server's pydantic model reads them; topk null or <= 0 means the default."""
    base = post(dense_server, {"queries": ["river"], "topk": 3, "return_scores": True}).json()["result"]
    for topk in ("3", 3.0, 3):
        for rs in (True, 1, "true"):
            r = post(dense_server, {"queries": ["river"], "topk": topk, "return_scores": rs})
            assert r.status_code == 200 and r.json()["result"] == base, (topk, rs)
    for topk in (0, -1, None):
        r = post(dense_server, {"queries": ["river"], "topk": topk, "return_scores": True})
        assert r.status_code == 200 and r.json()["result"] == base  # server default topk is 3


def test_original_trainer_payloads(bm25_server, sample_world):
    """What the original Search-R1 trainer sends, against a server with default limits."""
    # a turn where no trajectory searches
    r = post(bm25_server, {"queries": [], "topk": 3, "return_scores": True})
    assert r.status_code == 200 and r.json() == {"result": []}
    # the paper's GRPO turn: 512 prompts x 5 rollouts in one request
    questions = [json.loads(line)["question"] for line in open(sample_world["sample_nq/test"])]
    queries = [questions[i % len(questions)] + f" {i}" for i in range(2560)]
    r = post(bm25_server, {"queries": queries, "topk": 3, "return_scores": False})
    assert r.status_code == 200
    result = r.json()["result"]
    assert len(result) == 2560 and all(1 <= len(docs) <= 3 and "contents" in docs[0] for docs in result)
    # one over-long query (the original has no length limit): answered, as the encoder would truncate it
    long = "who was born in " + "x" * 5025
    r = post(bm25_server, {"queries": ["capital city", long], "topk": 3, "return_scores": True})
    assert r.status_code == 200 and len(r.json()["result"]) == 2


def test_metrics_endpoint(dense_server):
    post(dense_server, ORIGINAL_PAYLOAD)
    text = httpx.get(f"{dense_server}/metrics").text
    assert "retrieval_requests_total" in text and 'retrieval_request_latency_seconds_bucket{le="0.1"}' in text
    assert "retrieval_queue_depth_queries" in text


def test_concurrent_requests_are_batched_and_all_answered(dense_server):
    import asyncio

    async def go():
        async with httpx.AsyncClient(timeout=60) as client:

            async def one(i):
                r = await client.post(f"{dense_server}/retrieve", json={"queries": [f"who was born in {i}"], "topk": 2})
                return r.status_code, r.json()["result"]

            return await asyncio.gather(*[one(i) for i in range(200)])

    before = httpx.get(f"{dense_server}/metrics").text
    results = asyncio.run(go())
    assert all(code == 200 and len(res) == 1 and len(res[0]) == 2 for code, res in results)
    after = httpx.get(f"{dense_server}/metrics").text

    def batches(t):
        return int(float(next(line.split()[-1] for line in t.splitlines() if line.startswith("retrieval_batches_total"))))

    assert batches(after) - batches(before) < 200  # coalesced across requests


def test_auth(bm25_args, tmp_path):
    from search_r1_plugin.sandbox.server_process import retrieval_server

    key_file = tmp_path / "key"
    key_file.write_text("s3cret\n")
    args = [
        *bm25_args,
        "--api-key-file",
        str(key_file),
    ]
    with retrieval_server(args, tmp_path / "auth.log") as url:
        assert post(url, {"queries": ["a"]}).status_code == 401
        assert post(url, {"queries": ["a"]}, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert post(url, {"queries": ["a"]}, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        # without the key: readiness only, no paths or model details, no API docs
        assert httpx.get(f"{url}/health").json() == {"status": "ready"}
        detailed = httpx.get(f"{url}/health", headers={"Authorization": "Bearer s3cret"}).json()
        assert detailed["status"] == "ready" and "bm25" in detailed["retriever"]
        for path in ("/docs", "/openapi.json"):  # nothing but /health without the key; API docs off with it
            assert httpx.get(f"{url}{path}").status_code == 401
            assert httpx.get(f"{url}{path}", headers={"Authorization": "Bearer s3cret"}).status_code == 404


def test_index_file_names_come_from_the_model_not_where_it_lives(minilm_path, tmp_path):
    """Index files are named from the encoder's own name (its folder, or the name its config records when
    the folder is generic), never from the folders above it: a checkout in ``code5/`` or in a folder named
    after a commit hash must not turn MiniLM into ``e5``."""
    assert method_name("intfloat/e5-base-v2") == "e5" and method_name("BAAI/bge-base-en-v1.5") == "bge"
    assert method_name("/models/my-encoder") == "my-encoder"
    for parent in ("code5", "0e5d9c1a2b3c4d5e6f708192a3b4c5d6e7f80912", "e5-experiments"):
        for folder in ("model", "all-MiniLM-L6-v2"):
            link = tmp_path / parent / folder
            link.parent.mkdir(exist_ok=True)
            link.symlink_to(minilm_path, target_is_directory=True)
            assert method_name(str(link)) == "minilm", link
    assert method_name(minilm_path) == "minilm"


def test_builder_resumes_after_interruption(sample_world, minilm_path, tmp_path):
    from retrieval_server.build.builder import build_dense_index

    out = tmp_path / "idx"
    cmd = [
        sys.executable,
        "-m",
        "retrieval_server",
        "build-index",
        "--corpus",
        str(sample_world["corpus"]),
        "--encoder",
        minilm_path,
        "--out",
        str(out),
        "--shard-size",
        "40",
        "--index-type",
        "HNSW32",
    ]
    # Interrupt a build after its first shards: encode only the first 80 passages.
    subprocess.run(cmd + ["--limit", "80"], check=True, capture_output=True)
    shards = sorted((out / f"shards_{method_name(minilm_path)}").glob("emb_*.npy"))
    assert len(shards) == 2
    mtimes = {p: p.stat().st_mtime_ns for p in shards}
    # a build killed while writing leaves only a temporary file, never a half shard
    (out / f"shards_{method_name(minilm_path)}" / "emb_000000000080_000000000120.tmp.npy").write_bytes(b"garbage")
    summary = build_dense_index(sample_world["corpus"], minilm_path, out, index_type="HNSW32", shard_size=40)
    assert summary.shards_reused == 2 and all(p.stat().st_mtime_ns == t for p, t in mtimes.items())
    assert not (out / f"emb_{method_name(minilm_path)}.memmap").exists()  # the raw embeddings are kept only with --save-embedding
    assert summary.index_path.name == f"{method_name(minilm_path)}_HNSW32.index"
    assert summary.passages == len(open(sample_world["corpus"]).readlines())
    import faiss

    assert faiss.read_index(str(summary.index_path)).ntotal == summary.passages


def test_index_corpus_mismatch_is_reported(sample_world, dense_index, minilm_path, tmp_path):
    from search_r1_plugin.sandbox.server_process import retrieval_server

    short = tmp_path / "short.jsonl"
    short.write_text("".join(open(sample_world["corpus"]).readlines()[:10]))
    with pytest.raises(RuntimeError, match="corpus"):
        with retrieval_server(
            ["--index", str(dense_index.index_path), "--corpus", str(short), "--encoder", minilm_path], tmp_path / "bad.log", timeout_s=60
        ):
            pass


def test_corpus_lookup_exact(sample_world):
    from retrieval_server.data.corpus import Corpus

    lines = [json.loads(line) for line in open(sample_world["corpus"])]
    c = Corpus(sample_world["corpus"])
    assert len(c) == len(lines)
    for i in (0, 1, len(lines) // 2, len(lines) - 1):
        assert c[i] == lines[i]
    with pytest.raises(IndexError):
        c.raw(len(lines))


def test_rerank_exact_matches_brute_force():
    from retrieval_server.search.index import rerank_exact

    rng = np.random.default_rng(0)
    emb = rng.standard_normal((500, 16)).astype(np.float32)
    q = rng.standard_normal((7, 16)).astype(np.float32)
    exact = np.argsort(-(q @ emb.T), axis=1)[:, :3]
    cand = np.argsort(-(q @ emb.T), axis=1)[:, :50]
    cand = np.ascontiguousarray(cand[:, rng.permutation(50)])  # the index's order does not matter
    cand[0, 10:] = -1  # fewer hits than asked
    scores, ids = rerank_exact(q, cand, emb, 3)
    assert (ids[1:] == exact[1:]).all()
    assert set(ids[0]) <= set(cand[0][cand[0] >= 0])
    short = np.full((1, 5), -1)
    short[0, :2] = [3, 4]
    _, ids = rerank_exact(q[:1], short, emb, 3)
    assert ids[0, 2] == -1 and set(ids[0, :2]) == {3, 4}


def test_server_rerank_from_disk_memmap(sample_world, dense_index, dense_args, minilm_path, tmp_path):
    """The --rerank-embeddings path end to end: results equal exact search over the on-disk vectors."""
    from retrieval_server.search.encoder import Encoder
    from search_r1_plugin.sandbox.server_process import retrieval_server

    memmap = dense_index.index_path.parent / f"emb_{method_name(minilm_path)}.memmap"
    emb = np.memmap(memmap, dtype=np.float32, mode="r").reshape(-1, 384)
    queries = ["a chemist born in 1800", "capital city"]
    q = Encoder(minilm_path, dtype="fp32").encode(queries, is_query=True, batch_size=64)
    expected = np.argsort(-(q @ emb.T), axis=1)[:, :3]
    corpus = [json.loads(line)["id"] for line in open(sample_world["corpus"])]
    args = [
        *dense_args,
        "--rerank-embeddings",
        str(memmap),
        "--rerank-k",
        "20",
    ]
    with retrieval_server(args, tmp_path / "rerank.log") as url:
        result = post(url, {"queries": queries, "topk": 3, "return_scores": True}).json()["result"]
    for qi, docs in enumerate(result):
        assert [d["document"]["id"] for d in docs] == [corpus[i] for i in expected[qi]]


def test_serve_checks_its_arguments():
    """A missing --index/--corpus or FlashRAG config is a clear error (exit 2), not a traceback."""
    for args, expected in ((["--retriever", "flashrag"], "--flashrag-config"), (["--corpus", "x.jsonl"], "--index and --corpus")):
        out = subprocess.run([sys.executable, "-m", "retrieval_server", "serve", *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and expected in out.stderr, out.stderr


def test_encoder_family_is_recorded_with_the_index_and_wins_over_the_name(
    dense_index, dense_args, dense_server, sample_world, minilm_path, tmp_path
):
    """MiniLM served from a directory whose name says "e5" must not get E5 prefixes: the index says how
    its passages were encoded. Asking for another family than the index's is refused."""
    from search_r1_plugin.sandbox.server_process import retrieval_server

    meta = json.loads(open(f"{dense_index.index_path}.meta.json").read())
    assert meta["family"] == "plain" and meta["query_prefix"] == "" and meta["pooling"] == "mean"
    misleading = tmp_path / "e5-baseline-minilm"
    misleading.symlink_to(minilm_path, target_is_directory=True)
    queries = [json.loads(line)["question"] for line in open(sample_world["sample_nq/test"])][:11]
    with retrieval_server(
        ["--index", str(dense_index.index_path), "--corpus", str(sample_world["corpus"]), "--encoder", str(misleading)],
        tmp_path / "server.log",
    ) as url:
        got = post(url, {"queries": queries, "topk": 3}).json()["result"]
    want = post(dense_server, {"queries": queries, "topk": 3}).json()["result"]
    assert [[d["id"] for d in r] for r in got] == [[d["id"] for d in r] for r in want]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "retrieval_server",
            "serve",
            *dense_args,
            "--encoder-family",
            "e5",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "built with family 'plain'" in out.stderr, out.stderr


def test_encoder_family_guess_and_explicit_setting():
    from retrieval_server.search.encoder import guess_family, resolve_family

    assert guess_family("intfloat/e5-base-v2") == "e5" and guess_family("BAAI/bge-large-en-v1.5") == "bge"
    assert guess_family("/models/all-MiniLM-L6-v2") == "plain"
    assert resolve_family("/models/weights", "e5") == "e5"  # E5 weights in a folder without "e5" in its name
    with pytest.raises(ValueError, match="--encoder-family"):
        resolve_family("x", "e6")


def test_non_finite_numbers_are_a_422_not_a_500(dense_server):
    bodies = [
        b'{"queries": ["a"], "topk": NaN}',
        b'{"queries": ["a"], "topk": Infinity}',
        b'{"queries": ["a"], "topk": 1e400}',
        b'{"queries": [NaN]}',
        b'{"queries": ["a"], "return_scores": -Infinity}',
    ]
    with httpx.Client(timeout=30) as client:
        for raw in bodies:
            r = client.post(f"{dense_server}/retrieve", content=raw, headers={"content-type": "application/json"})
            assert r.status_code == 422, (raw, r.status_code, r.text[:200])
            assert r.json()["detail"][0]["loc"][0] == "body"
        assert client.get(f"{dense_server}/health").json()["status"] == "ready"


def test_every_corpus_row_shape_is_answered_as_the_wire_format(tmp_path):
    """Corpora in the wild: integer ids, no id, title/text instead of contents. Every hit comes back as the
    server's Document promises (string id, contents "Title"\\ntext, other fields kept), never a 500."""
    from retrieval_server.build.builder import build_bm25_index
    from search_r1_plugin.sandbox.server_process import retrieval_server

    rows = [
        {"id": 7, "title": "Zorblax", "text": "Zorblax is a river in Quux.", "year": 1901},
        {"title": "Mirrel", "text": "Mirrel is a mountain."},
        {"id": "c", "contents": '"Plain"\nA plain row about rivers.'},
    ]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    index = build_bm25_index(corpus, tmp_path / "bm25")
    with retrieval_server(
        ["--retriever", "bm25", "--index", str(index.index_path), "--corpus", str(corpus)], tmp_path / "server.log"
    ) as url:
        for query, want in [
            ("Zorblax river", {"id": "7", "contents": '"Zorblax"\nZorblax is a river in Quux.', "year": 1901}),
            ("Mirrel mountain", {"id": "1", "contents": '"Mirrel"\nMirrel is a mountain.'}),
        ]:
            r = post(url, {"queries": [query], "topk": 1, "return_scores": True})
            assert r.status_code == 200, r.text
            doc = r.json()["result"][0][0]["document"]
            assert {k: doc[k] for k in want} == want


@pytest.fixture(scope="module")
def keyed_server(bm25_args, tmp_path_factory):
    """A real server process with a key, 1 s header and body timeouts and a small queue (for the hostile-client tests)."""
    from search_r1_plugin.sandbox.server_process import retrieval_server

    args = [
        *bm25_args,
        "--api-key",
        "s3cret",
        "--header-timeout-s",
        "1",
        "--body-timeout-s",
        "1",
        "--max-queued",
        "8",
        "--max-batch",
        "4",
    ]
    with retrieval_server(args, tmp_path_factory.mktemp("keyed") / "server.log") as url:
        yield url


KEY = {"Authorization": "Bearer s3cret"}


def raw_exchange(url: str, head: bytes, body_parts=(), wait_s: float = 5.0) -> tuple[int | None, float]:
    """Send ``head`` then ``body_parts`` on a raw socket; the status line that comes back and when."""
    import socket
    import time

    host, port = url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=wait_s) as sock:
        t0 = time.perf_counter()
        sock.sendall(head)
        for part in body_parts:
            try:
                sock.sendall(part)
            except OSError:  # the server answered and closed while we were still sending
                break
        try:
            line = sock.makefile("rb").readline()
        except (TimeoutError, socket.timeout, OSError):
            return None, time.perf_counter() - t0
        return (int(line.split()[1]) if line else None), time.perf_counter() - t0


def test_without_the_key_the_body_is_never_read(keyed_server):
    # an invalid body without a key: 401, not a 422 that describes the body
    r = post(keyed_server, {"queries": 5})
    assert r.status_code == 401 and "queries" not in r.text
    # 50 MiB announced, 1 MiB sent: the 401 comes from the headers alone, while the client is still sending
    head = b"POST /retrieve HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 52428800\r\n\r\n"
    status, seconds = raw_exchange(keyed_server, head, [b"[" + b"1," * 500_000])
    assert status == 401 and seconds < 3
    assert httpx.get(f"{keyed_server}/health").json() == {"status": "ready"}
    assert httpx.get(f"{keyed_server}/metrics").status_code == 401  # counters are details too
    assert httpx.get(f"{keyed_server}/metrics", headers=KEY).status_code == 200


def test_oversized_and_never_ending_bodies_get_an_answer(keyed_server):
    auth = b"Authorization: Bearer s3cret\r\n"
    # 10 GiB announced, a few bytes sent: 413 at once
    head = b"POST /retrieve HTTP/1.1\r\nHost: x\r\n" + auth + b"Content-Length: 10737418240\r\n\r\n"
    status, seconds = raw_exchange(keyed_server, head, [b'{"queries"'])
    assert status == 413 and seconds < 3
    # a chunked body that never ends: 408 after the 1 s body timeout, not a connection held for ever
    head = b"POST /retrieve HTTP/1.1\r\nHost: x\r\n" + auth + b"Transfer-Encoding: chunked\r\n\r\n"
    status, seconds = raw_exchange(keyed_server, head, [b'5\r\n{"que\r\n'], wait_s=10)
    assert status == 408 and 0.9 < seconds < 5
    # a chunked body over the size limit is cut off with 413 (limit 32 MiB by default; 40 MiB sent)
    chunk = b"x" * (1 << 20)
    status, _ = raw_exchange(keyed_server, head, [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * 40, wait_s=20)
    assert status == 413
    r = post(keyed_server, {"queries": ["river"], "topk": 1}, headers=KEY)
    assert r.status_code == 200 and len(r.json()["result"][0]) == 1


def test_silent_and_trickling_connections_are_closed_after_the_header_timeout(keyed_server):
    """A connection that sends its headers a byte at a time (slowloris) gets 408 once the 1 s header timeout
    passes, although bytes keep coming; one that sends nothing is closed without an answer; pipelined
    requests and a keep-alive client between requests are not cut."""
    import socket
    import time

    host, port = keyed_server.split("//")[1].split(":")

    def status_after(parts, pause_s):
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            t0 = time.perf_counter()
            for part in parts:
                try:
                    sock.sendall(part)
                except OSError:
                    break
                time.sleep(pause_s)
            line = sock.makefile("rb").readline()
            return (int(line.split()[1]) if line else None), time.perf_counter() - t0

    status, seconds = status_after([], 0)
    assert status is None and 0.9 < seconds < 5  # closed, nothing sent back
    trickle = [bytes([b]) for b in b"POST /retrieve HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n"]
    status, seconds = status_after(trickle, 0.1)  # 5 s of headers if it were let through
    assert status == 408 and 0.9 < seconds < 4

    request = b"GET /health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=10) as sock:  # two requests in one write
        sock.sendall(request * 2)
        received = b""
        while received.count(b"HTTP/1.1 ") < 2 and (chunk := sock.recv(65536)):
            received += chunk
        assert received.count(b"HTTP/1.1 200") == 2, received

    with httpx.Client(headers=KEY, timeout=10) as client:  # one connection, requests 0.5 s apart
        for i in range(3):
            assert client.post(f"{keyed_server}/retrieve", json={"queries": [f"river {i}"], "topk": 1}).status_code == 200
            time.sleep(0.5)
        assert client.get(f"{keyed_server}/health").status_code == 200


def test_overload_gets_429_with_retry_after_then_recovers(keyed_server):
    import asyncio

    async def flood():
        async with httpx.AsyncClient(timeout=60, headers=KEY) as client:
            requests = [{"queries": [f"who was born in city {i} {j}" for j in range(4)], "topk": 3} for i in range(64)]
            return await asyncio.gather(*[client.post(f"{keyed_server}/retrieve", json=body) for body in requests])

    answers = asyncio.run(flood())
    codes = [r.status_code for r in answers]
    assert set(codes) <= {200, 429} and codes.count(429) > 0 and codes.count(200) > 0, codes
    busy = next(r for r in answers if r.status_code == 429)
    assert int(busy.headers["Retry-After"]) >= 1 and "busy" in busy.json()["detail"]
    for i in range(5):  # the queue drained: everyone is served again
        assert post(keyed_server, {"queries": [f"river {i}"]}, headers=KEY).status_code == 200
    text = httpx.get(f"{keyed_server}/metrics", headers=KEY).text
    assert 'retrieval_rejected_total{reason="overloaded"}' in text


def test_loaded_faiss_indexes_search_small_batches_with_blas(dense_index, tmp_path):
    """faiss-cpu scans query by query below distance_compute_blas_threshold (128,000 in its wheels), ~7x
    slower than BLAS for the 8-100-query batches a micro-batching server runs (benchmarks/faiss_small_batch.py).
    Loading an index for serving sets the threshold to 1; results stay those of exact search."""
    import faiss

    from retrieval_server.search.index import load_faiss_index

    faiss.cvar.distance_compute_blas_threshold = 128_000
    index = load_faiss_index(dense_index.index_path)
    assert faiss.cvar.distance_compute_blas_threshold == 1
    xb = index.reconstruct_n(0, index.ntotal)
    queries = xb[:64] + 0.01 * np.random.default_rng(0).standard_normal(xb[:64].shape).astype(np.float32)
    _, ids = index.search(queries, 3)
    exact = np.argsort(-(queries @ xb.T), axis=1)[:, :3]
    assert (ids == exact).mean() > 0.99  # ties aside, the same neighbours as brute force


def test_merge_is_exact_and_ties_go_to_the_lower_id():
    from retrieval_server.search.shards import ShardedIndex, canonical_order, merge_topk, shard_ranges

    assert shard_ranges(10, 3) == [(0, 3), (3, 7), (7, 10)]
    # two shards with a tie at the cut: ids 1 (shard 0) and 5 (shard 1, local 0) both score 0.5
    parts = [(np.array([[0.9, 0.5]]), np.array([[0, 1]])), (np.array([[0.5, -1.0]]), np.array([[0, -1]]))]
    scores, ids = merge_topk(parts, [0, 5], 3)
    assert ids.tolist() == [[0, 1, 5]] and scores.tolist() == [[np.float32(0.9), 0.5, 0.5]]
    assert canonical_order(np.array([[0.1, 0.2]]), np.array([[-1, 7]]), 3)[1].tolist() == [[7, -1, -1]]

    import faiss

    rng = np.random.default_rng(0)
    xb = rng.standard_normal((1000, 16)).astype(np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)  # unit vectors: a vector's best match is itself
    xb[500] = xb[20]  # an exact duplicate across shards: a tie the merge must order by id
    full = faiss.IndexFlatIP(16)
    full.add(xb)
    shards = []
    for lo, hi in shard_ranges(1000, 3):
        shard = faiss.IndexFlatIP(16)
        shard.add(xb[lo:hi])
        shards.append(shard)
    queries = np.concatenate([xb[[20]], rng.standard_normal((99, 16)).astype(np.float32)])
    want = canonical_order(*full.search(queries, 10), 10)
    got = ShardedIndex(shards).search(queries, 10)
    assert np.array_equal(got[1], want[1]) and np.allclose(got[0], want[0], atol=1e-5)
    assert got[1][0][:2].tolist() == [20, 500]


def test_sharded_index_served_equals_the_unsharded_one(sample_world, minilm_path, tmp_path):
    """build-index --index-shards 3, served as --index a,b,c: every query's ids and scores equal the
    unsharded Flat index's, through real server processes."""
    from retrieval_server.build.builder import build_dense_index
    from search_r1_plugin.sandbox.server_process import retrieval_server

    whole = build_dense_index(sample_world["corpus"], minilm_path, tmp_path / "whole", index_type="Flat", dtype="fp32")
    sharded = build_dense_index(sample_world["corpus"], minilm_path, tmp_path / "sharded", index_type="Flat", index_shards=3, dtype="fp32")
    assert sharded.index_shards == 3 and str(sharded.index_path).count(",") == 2
    questions = [json.loads(line)["question"] for line in open(sample_world["sample_nq/test"])][:40]
    answers = []
    for index in (whole, sharded):
        args = ["--index", str(index.index_path), "--corpus", str(sample_world["corpus"]), "--encoder", minilm_path, "--dtype", "fp32"]
        with retrieval_server(args, tmp_path / "server.log") as url:
            answers.append(post(url, {"queries": questions, "topk": 5, "return_scores": True}).json()["result"])
    for a, b in zip(*answers):
        assert [d["document"]["id"] for d in a] == [d["document"]["id"] for d in b]
        assert np.allclose([d["score"] for d in a], [d["score"] for d in b], atol=1e-5)


def exact_top(queries: np.ndarray, vectors: np.ndarray, k: int):
    from retrieval_server.search.shards import canonical_order

    scores = queries @ vectors.T
    return canonical_order(scores, np.broadcast_to(np.arange(len(vectors)), scores.shape), k)


def shard_queries(sample_world, minilm_path, n=60):
    from retrieval_server.search.encoder import Encoder

    questions = [json.loads(line)["question"] for line in open(sample_world["sample_nq/test"])][:n]
    return Encoder(minilm_path, dtype="fp32").encode(questions, is_query=True, batch_size=64)


def recall(got_ids, want_ids) -> float:
    return float(np.mean([len(set(g) & set(w)) / len(w) for g, w in zip(got_ids, want_ids)]))


def ray_path_search(paths: str, queries, k, **kw):
    """What shard deployments compute: each shard in a ShardSearcher (the Serve deployment's class), merged."""
    from retrieval_server.ray_serve import ShardSearcher
    from retrieval_server.search.shards import merge_topk, shard_offsets

    files = paths.split(",")
    searchers = [
        ShardSearcher(p, i, len(files), kw.get("nprobe"), kw.get("ef_search"), False, kw.get("rerank_path"), kw.get("rerank_k", 100))
        for i, p in enumerate(files)
    ]
    offsets = shard_offsets([s.info()["ntotal"] for s in searchers])
    return merge_topk([s.search(queries, k) for s in searchers], offsets, k)


def test_hnsw_shards_merge_on_exact_scores(approximate_shards, sample_world, minilm_path):
    """HNSW shards (Flat storage) score their hits exactly, so the merge ranks true inner products: recall
    against brute force stays high, and the Serve shard path answers exactly like the in-process one."""
    from retrieval_server.search.index import load_faiss_index
    from retrieval_server.search.shards import canonical_order

    vectors = np.memmap(approximate_shards["vectors"], dtype=np.float32, mode="r").reshape(-1, 384)
    q = shard_queries(sample_world, minilm_path)
    _, want = exact_top(q, vectors, 5)
    scores, ids = canonical_order(*load_faiss_index(approximate_shards["HNSW32"], ef_search=64).search(q, 5), 5)
    assert recall(ids, want) >= 0.95
    assert np.allclose(scores, np.einsum("qd,qkd->qk", q, vectors[ids]), atol=1e-4)  # true scores of the hits
    assert np.array_equal(ray_path_search(approximate_shards["HNSW32"], q, 5, ef_search=64)[1], ids)


def test_ivfpq_shards_rerank_their_own_candidates(approximate_shards, sample_world, minilm_path):
    """IVF-PQ shards re-rank their candidates from their own slice of the vectors: with every list probed and
    every passage a candidate the result is brute force id for id; at realistic settings the scores are still
    exact and recall beats the PQ codes alone. A shard given vectors of another split is refused."""
    from retrieval_server.ray_serve import ShardSearcher
    from retrieval_server.search.index import load_faiss_index
    from retrieval_server.search.shards import canonical_order

    vectors = np.memmap(approximate_shards["vectors"], dtype=np.float32, mode="r").reshape(-1, 384)
    paths = approximate_shards["IVF4,PQ16x4"]
    q = shard_queries(sample_world, minilm_path)
    want_scores, want = exact_top(q, vectors, 5)

    exhaustive = load_faiss_index(paths, nprobe=4, rerank_embeddings=vectors, rerank_k=len(vectors))
    scores, ids = exhaustive.search(q, 5)
    assert np.array_equal(ids, want) and np.allclose(scores, want_scores, atol=1e-4)
    served = ray_path_search(paths, q, 5, nprobe=4, rerank_path=approximate_shards["vectors"], rerank_k=len(vectors))
    assert np.array_equal(served[1], want)

    scores, ids = load_faiss_index(paths, nprobe=3, rerank_embeddings=vectors, rerank_k=20).search(q, 5)
    assert np.allclose(scores, np.einsum("qd,qkd->qk", q, vectors[ids]), atol=1e-4)
    _, codes_only = canonical_order(*load_faiss_index(paths, nprobe=3).search(q, 5), 5)
    assert recall(ids, want) >= 0.9 and recall(ids, want) > recall(codes_only, want)
    assert np.array_equal(ray_path_search(paths, q, 5, nprobe=3, rerank_path=approximate_shards["vectors"], rerank_k=20)[1], ids)

    first = paths.split(",")[0]
    with pytest.raises(ValueError, match="not from the same build"):
        ShardSearcher(first, 0, 2, None, None, False, approximate_shards["vectors"], 30)
    with pytest.raises(ValueError, match="not the same corpus"):
        load_faiss_index(paths, rerank_embeddings=vectors[:-1])


def test_sharded_ivfpq_with_rerank_served_equals_flat(approximate_shards, dense_server, sample_world, minilm_path, tmp_path):
    """The server process with ``--index a,b,c --rerank-embeddings``: the same answers as the unsharded Flat
    server when every list is probed and every passage re-ranked."""
    from search_r1_plugin.sandbox.server_process import retrieval_server

    questions = [json.loads(line)["question"] for line in open(sample_world["sample_nq/test"])][:30]
    body = {"queries": questions, "topk": 5, "return_scores": True}
    want = post(dense_server, body).json()["result"]
    args = ["--index", approximate_shards["IVF4,PQ16x4"], "--corpus", str(sample_world["corpus"]), "--encoder", minilm_path]
    args += ["--dtype", "fp32", "--nprobe", "4", "--rerank-embeddings", approximate_shards["vectors"], "--rerank-k", "4000"]
    with retrieval_server(args, tmp_path / "server.log") as url:
        got = post(url, body).json()["result"]
    for a, b in zip(got, want):
        assert [d["document"]["id"] for d in a] == [d["document"]["id"] for d in b]
        assert np.allclose([d["score"] for d in a], [d["score"] for d in b], atol=1e-4)


def test_the_sandbox_builds_an_index_under_a_path_with_spaces(sample_world, minilm_path, tmp_path):
    """The README's main command builds its index through this; a checkout in "My Projects/…" must work."""
    from search_r1_plugin.sandbox.server_process import build_index

    out = tmp_path / "a folder with spaces" / "index"
    args = ["--corpus", str(sample_world["corpus"]), "--encoder", minilm_path, "--index-type", "Flat", "--out", str(out)]
    index = build_index(args, tmp_path / "build.log")
    assert index.is_file() and index.parent == out
