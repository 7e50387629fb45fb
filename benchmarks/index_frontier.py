"""Memory / recall frontier of FAISS index types on ≥ 1M vectors, extrapolated to wiki-18 (21M × 768).

Vectors are synthetic but embedding-like: unit-norm points on a clustered 64-dimensional manifold
projected into 768 dimensions (uniform random vectors have no neighbour structure and make every ANN
index look bad). Queries are fresh points from the same distribution. Recall@3 is measured against
the exact Flat inner-product result on the same data, in the same run. IVF variants share one
spherical k-means (1024 lists, trained once); build times of IVF rows after the first exclude it.

    python benchmarks/index_frontier.py --n 1000000 --queries 1000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import faiss
import numpy as np

from retrieval_server.search.index import rerank_exact

WIKI18 = 21_015_324
BUDGET_BYTES = 8 * 2**30


def embeddings(n: int, d: int, centres: int, seed: int, intrinsic: int = 64) -> np.ndarray:
    """Unit vectors on a low-dimensional clustered manifold: a Gaussian mixture in ``intrinsic``
    dimensions, randomly projected to ``d`` plus a little isotropic noise (real text embeddings have
    an intrinsic dimension far below 768, which is what makes ANN search work on them)."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, intrinsic), dtype=np.float32)
    proj = rng.standard_normal((intrinsic, d), dtype=np.float32) / np.sqrt(intrinsic)
    out = np.empty((n, d), dtype=np.float32)
    step = 100_000
    for lo in range(0, n, step):
        hi = min(lo + step, n)
        z = c[rng.integers(0, centres, hi - lo)] + 0.5 * rng.standard_normal((hi - lo, intrinsic), dtype=np.float32)
        x = z @ proj + 0.05 * rng.standard_normal((hi - lo, d), dtype=np.float32)
        out[lo:hi] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=768)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--train", type=int, default=100_000)
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--rerank-k", type=int, default=100, help="also report IVF rows re-ranked exactly from disk; 0 = off")
    p.add_argument("--nprobe", type=int, default=0, help="override nprobe of every IVF row")
    p.add_argument("--configs", default="", help="';'-separated subset of index factories (Flat always runs)")
    args = p.parse_args()
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads; {args.n} × {args.d} vectors")
    t0 = time.perf_counter()
    both = embeddings(args.n + args.queries, args.d, 20_000, 0)
    xb, xq = both[: args.n], both[args.n :]
    rng = np.random.default_rng(1)
    print(f"data generated in {time.perf_counter() - t0:.0f} s")

    configs = [
        ("Flat", {}),
        ("HNSW32", {"efSearch": 128}),
        ("IVF1024,SQ8", {"nprobe": 16}),
        ("IVF1024,SQ4", {"nprobe": 16}),
        ("IVF1024,PQ192", {"nprobe": 16}),
        ("IVF1024,PQ96", {"nprobe": 16}),
        ("OPQ96,IVF1024,PQ96", {"nprobe": 16}),
    ]
    if args.nprobe:
        configs = [(f, {**prm, "nprobe": args.nprobe} if "nprobe" in prm else prm) for f, prm in configs]
    if args.configs:
        keep = set(args.configs.split(";")) | {"Flat"}  # Flat is the ground truth
        configs = [c for c in configs if c[0] in keep]
    disk = None
    if args.rerank_k:
        path = os.path.join(tempfile.mkdtemp(prefix="frontier_"), "emb.memmap")
        mm = np.memmap(path, dtype=np.float32, mode="w+", shape=xb.shape)
        mm[:] = xb
        mm.flush()
        del mm
        disk = np.memmap(path, dtype=np.float32, mode="r", shape=xb.shape)
    truth = None
    rows = []
    train = xb[rng.choice(args.n, min(args.train, args.n), replace=False)]
    coarse = None  # one k-means for every IVF variant (training it dominates build time on 2 cores)
    for factory, params in configs:
        index = faiss.index_factory(args.d, factory, faiss.METRIC_INNER_PRODUCT)
        t0 = time.perf_counter()
        if not index.is_trained:
            ivf = faiss.extract_index_ivf(index) if "IVF" in factory else None
            if ivf is not None and not factory.startswith("OPQ"):
                if coarse is None:
                    km = faiss.Kmeans(args.d, ivf.nlist, niter=10, spherical=True, seed=0)
                    km.train(train)
                    coarse = km.centroids
                ivf.quantizer.add(coarse)
                ivf.quantizer.is_trained = True
            index.train(train)
        index.add(xb)
        build = time.perf_counter() - t0
        if "nprobe" in params:
            faiss.extract_index_ivf(index).nprobe = params["nprobe"]
        if "efSearch" in params:
            index.hnsw.efSearch = params["efSearch"]
        t0 = time.perf_counter()
        _, ids = index.search(xq, args.k)
        qps = args.queries / (time.perf_counter() - t0)
        if truth is None:
            truth = ids
        size = faiss.serialize_index(index).nbytes
        wiki = size / args.n * WIKI18
        rows.append((factory, params, size, build, qps, recall(ids, truth), wiki))
        print(
            f"{factory:22s} {str(params):18s} {size / 2**20:9.0f} MiB  build {build:6.0f} s  "
            f"{qps:8.0f} q/s  recall@{args.k} {rows[-1][5]:.3f}  → wiki-18 {wiki / 2**30:6.1f} GiB",
            flush=True,
        )
        if args.rerank_k and factory != "Flat" and "HNSW" not in factory:
            # The server's --rerank-embeddings path: candidates from the compressed index, exact
            # scores from the float32 vectors in an on-disk memmap (RAM holds only the index).
            t0 = time.perf_counter()
            _, cand = index.search(xq, args.rerank_k)
            _, ids = rerank_exact(xq, cand, disk, args.k)
            qps = args.queries / (time.perf_counter() - t0)
            name = f"{factory} + rerank {args.rerank_k}"
            rows.append((name, params, size, build, qps, recall(ids, truth), wiki))
            print(
                f"{name:22s} {str(params):18s} {size / 2**20:9.0f} MiB  build {build:6.0f} s  "
                f"{qps:8.0f} q/s  recall@{args.k} {rows[-1][5]:.3f}  → wiki-18 {wiki / 2**30:6.1f} GiB "
                "(+ vectors on disk)",
                flush=True,
            )
        del index

    print(f"\n| index | search params | memory ({args.n / 1e6:.0f}M) | build s | q/s | recall@{args.k} vs Flat | extrapolated to 21M |")
    print("|---|---|---|---|---|---|---|")
    for f, prm, size, build, qps, rec, wiki in rows:
        print(f"| {f} | {prm} | {size / 2**20:.0f} MiB | {build:.0f} | {qps:.0f} | {rec:.3f} | {wiki / 2**30:.1f} GiB |")
    fits = [r for r in rows if r[6] <= BUDGET_BYTES and r[5] >= 0.95]  # RAM only; re-rank vectors stay on disk
    if fits:
        best = max(fits, key=lambda r: r[5])
        print(f"\nfits 8 GiB at 21M with recall@{args.k} >= 0.95: {best[0]} {best[1]} ({best[6] / 2**30:.1f} GiB, recall {best[5]:.3f})")
    else:
        print(f"\nno configuration here fits 8 GiB at 21M with recall@{args.k} >= 0.95")


if __name__ == "__main__":
    main()
