"""FAISS exhaustive search of small batches: faiss-cpu's per-query scan vs BLAS, side by side.

faiss-cpu 1.15 wheels scan query by query below ``distance_compute_blas_threshold`` (128,000 there);
the server sets it to 1 (``retrieval_server.search.index.use_blas_for_every_batch``). This measures both, and a
torch matmul + top-k, on the same Flat index for the batch sizes a micro-batching server sees.

    python benchmarks/faiss_small_batch.py                     # 200k × 384
    python benchmarks/faiss_small_batch.py --vectors 1000000
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def timed(fn, reps: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vectors", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--batches", default="1,8,64,512")
    args = p.parse_args()

    import faiss
    import torch

    rng = np.random.default_rng(0)
    xb = rng.standard_normal((args.vectors, args.dim), dtype=np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(args.dim)
    index.add(xb)
    emb = torch.from_numpy(xb)
    default = faiss.cvar.distance_compute_blas_threshold
    print(
        f"Flat IP {args.vectors:,} × {args.dim}, faiss {faiss.__version__} ({faiss.omp_get_max_threads()} threads), "
        f"default blas threshold {default:,}"
    )
    print("| queries | per-query scan ms | BLAS ms | torch matmul ms | scan / BLAS |")
    print("|---|---|---|---|---|")
    for nq in map(int, args.batches.split(",")):
        xq = rng.standard_normal((nq, args.dim), dtype=np.float32)
        reps = max(2, 128 // nq)
        faiss.cvar.distance_compute_blas_threshold = default
        scan = timed(lambda: index.search(xq, 3), reps)
        faiss.cvar.distance_compute_blas_threshold = 1
        blas = timed(lambda: index.search(xq, 3), reps)
        q = torch.from_numpy(xq)
        mm = timed(lambda: (q @ emb.T).topk(3, dim=1), reps)
        print(f"| {nq} | {1000 * scan:.1f} | {1000 * blas:.1f} | {1000 * mm:.1f} | {scan / blas:.2f}× |")


if __name__ == "__main__":
    main()
