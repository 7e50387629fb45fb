"""Shared by the retrieval benchmarks: a realistic-size index and a light HTTP load generator.

``padded_flat_index`` builds a Flat index of any size whose first rows are the sample world's passages
with their real embeddings (so answers are real) and the rest random unit vectors (so search costs what
a big index costs). ``load`` drives a server with keep-alive HTTP/1.1 clients on raw asyncio streams:
far less client CPU than aiohttp, which matters when client and server share two cores.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import numpy as np
import orjson


async def _client(host: str, port: int, requests, topk: int, latencies: list, counts: dict) -> None:
    """A keep-alive HTTP/1.1 client on raw asyncio streams: far less client CPU than aiohttp, which
    matters when client and server share two cores (both servers get the same client)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for qs in requests:
            body = orjson.dumps({"queries": qs, "topk": topk, "return_scores": True})
            t0 = time.perf_counter()
            writer.write(
                b"POST /retrieve HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            payload = orjson.loads(await reader.readexactly(length))
            if status != 200:
                counts["errors"] += 1
                continue
            result = payload["result"]
            if len(result) != len(qs) or any(len(x) != topk for x in result):
                counts["lost"] += 1
            latencies.append(time.perf_counter() - t0)
    except (OSError, asyncio.IncompleteReadError, ValueError):
        counts["errors"] += 1
    finally:
        writer.close()


async def load(url: str, queries: list[str], clients: int, per_request: int, topk: int = 3):
    """Send ``queries`` in requests of ``per_request`` from ``clients`` concurrent connections."""
    host, port = url.split("//")[1].split(":")
    requests = [queries[i : i + per_request] for i in range(0, len(queries), per_request)]
    shared = iter(requests)
    latencies: list[float] = []
    counts = {"errors": 0, "lost": 0}
    t0 = time.perf_counter()
    await asyncio.gather(*[_client(host, int(port), shared, topk, latencies, counts) for _ in range(clients)])
    wall = time.perf_counter() - t0
    lat = np.array(latencies) if latencies else np.zeros(1)
    return {
        "qps": len(queries) / wall,
        "p50_ms": 1000 * np.percentile(lat, 50),
        "p99_ms": 1000 * np.percentile(lat, 99),
        "wall_s": wall,
        **counts,
    }


def make_queries(n: int, seed: int) -> list[str]:
    from search_r1_plugin.sandbox.world import generate_world

    world = generate_world(num_people=400, seed=seed + 1)
    qs = [r["question"] for r in world.single_hop + world.multi_hop]
    rng = random.Random(seed)
    return [f"{rng.choice(qs)} {i}" for i in range(n)]  # distinct strings: no dedup advantage


def padded_flat_index(corpus: Path, encoder_path: str, vectors: int, out: Path, shards: int = 1) -> tuple[str, Path]:
    """A Flat inner-product index of ``vectors`` entries and its corpus: the real passages encoded by the
    real encoder, then filler passages with random unit vectors (seeded). With ``shards`` > 1 the same
    vectors are written as that many shard files over consecutive id ranges (``--index a,b,c``)."""
    import faiss

    from retrieval_server.data.index_meta import write_meta
    from retrieval_server.search.encoder import Encoder
    from retrieval_server.search.shards import shard_path, shard_ranges

    out.mkdir(parents=True, exist_ok=True)
    rows = [orjson.loads(line) for line in corpus.read_bytes().splitlines() if line.strip()]
    encoder = Encoder(encoder_path)
    real = encoder.encode([r["contents"] for r in rows], is_query=False, batch_size=64).astype(np.float32)
    rng = np.random.default_rng(0)
    emb = np.empty((max(vectors, len(rows)), real.shape[1]), dtype=np.float32)
    emb[: len(rows)] = real
    corpus_out = out / "corpus.jsonl"
    with open(corpus_out, "wb") as f:
        f.writelines(orjson.dumps(r) + b"\n" for r in rows)
        for lo in range(len(rows), vectors, 100_000):
            n = min(100_000, vectors - lo)
            filler = rng.standard_normal((n, real.shape[1]), dtype=np.float32)
            emb[lo : lo + n] = filler / np.linalg.norm(filler, axis=1, keepdims=True)
            f.writelines(orjson.dumps({"id": f"f{lo + i}", "contents": f'"Filler {lo + i}"\nfiller'}) + b"\n" for i in range(n))
    path = out / "e5_Flat.index"
    paths = [path] if shards == 1 else [shard_path(path, i, shards) for i in range(shards)]
    for p, (lo, hi) in zip(paths, shard_ranges(len(emb), shards)):
        index = faiss.IndexFlatIP(emb.shape[1])
        index.add(emb[lo:hi])
        faiss.write_index(index, str(p))
        write_meta(p, encoder)
    print(f"index: {len(emb):,} vectors × {emb.shape[1]} ({len(rows):,} real passages) in {len(paths)} file(s)")
    return ",".join(map(str, paths)), corpus_out
