"""Retrievers behind the server: dense (encoder + FAISS, or exact torch matmul) and BM25.

Every retriever answers ``search(queries, k) -> (scores, ids)`` with ``k``
columns; a FAISS id of -1 (fewer hits than asked, e.g. IVF with few probes)
stays -1 and the server drops it, instead of FlashRAG's silent mapping of -1
to the last passage.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from retrieval_server.search.shards import ShardedIndex, canonical_order, shard_offsets

logger = logging.getLogger(__name__)


def use_blas_for_every_batch() -> None:
    """Make FAISS's exhaustive searches use BLAS for any number of queries.

    faiss-cpu scans query by query (one SIMD pass over the whole index per query) when a batch has
    fewer than ``distance_compute_blas_threshold`` queries: 20 in FAISS's sources, 128,000 in the
    faiss-cpu 1.15 wheels. A micro-batching server sends batches of 1-100 queries, exactly that
    range: on 200k × 384 (Flat, 2 cores) 64 queries took 713 ms by the scan and 85 ms by BLAS, and
    BLAS is no slower for 1 query or 512 (28 vs 29 ms, 589 vs 590 ms). It affects Flat indexes and the
    coarse quantizer of IVF ones; HNSW and the IVF list scans do not use it.
    """
    import faiss

    faiss.cvar.distance_compute_blas_threshold = 1


def load_faiss_index(
    path: str | Path,
    *,
    gpu: bool = False,
    nprobe: int | None = None,
    ef_search: int | None = None,
    rerank_embeddings: np.ndarray | None = None,
    rerank_k: int | None = None,
):
    """Read a FAISS index (e.g. the original ``e5_Flat.index``), optionally sharded over all GPUs in fp16.

    Several paths, comma-separated in id order (the builder's ``--index-shards``), load as one
    :class:`~retrieval_server.search.shards.ShardedIndex` with an exact merge. With ``rerank_embeddings`` (all N
    vectors, e.g. the builder's ``emb_<method>.memmap``) every shard re-scores its own candidates from its
    slice of them (:class:`RerankedIndex`), so the merge compares exact scores; ``rerank_k`` candidates each
    (default: the server's ``--rerank-k``)."""
    if rerank_k is None:
        from retrieval_server.config import ServeConfig

        rerank_k = ServeConfig.model_fields["rerank_k"].default
    if "," in str(path):
        parts = [load_faiss_index(p, gpu=gpu, nprobe=nprobe, ef_search=ef_search) for p in str(path).split(",") if p]
        if rerank_embeddings is not None:
            sizes = [int(p.ntotal) for p in parts]
            if len(rerank_embeddings) != sum(sizes):  # each slice could still fit its shard
                raise ValueError(
                    f"--rerank-embeddings has {len(rerank_embeddings)} vectors but the shards have {sum(sizes)}: not the same corpus"
                )
            parts = [RerankedIndex(p, rerank_embeddings[lo : lo + n], rerank_k) for p, lo, n in zip(parts, shard_offsets(sizes), sizes)]
        return ShardedIndex(parts)
    index = read_faiss_index(path, gpu=gpu, nprobe=nprobe, ef_search=ef_search)
    return index if rerank_embeddings is None else RerankedIndex(index, rerank_embeddings, rerank_k)


def read_faiss_index(path: str | Path, *, gpu: bool = False, nprobe: int | None = None, ef_search: int | None = None):
    """One FAISS index file with its search-time settings, moved to the GPUs (fp16) with ``gpu``."""
    import faiss

    use_blas_for_every_batch()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FAISS index not found: {path}")
    index = faiss.read_index(str(path))
    if nprobe is not None:
        try:
            faiss.extract_index_ivf(index).nprobe = nprobe
        except RuntimeError:
            logger.warning("--nprobe ignored: %s is not an IVF index", path)
    if ef_search is not None and hasattr(index, "hnsw"):
        index.hnsw.efSearch = ef_search
    if gpu:
        if not hasattr(faiss, "index_cpu_to_all_gpus") or faiss.get_num_gpus() == 0:
            raise RuntimeError(
                "--faiss-gpu needs faiss-gpu and a visible GPU (faiss-gpu replaces faiss-cpu: "
                "pip uninstall faiss-cpu && pip install faiss-gpu); without it, serve exact search "
                "on the GPU with --retriever torch --index emb_<method>.memmap"
            )
        co = faiss.GpuMultipleClonerOptions()
        co.useFloat16 = True
        co.shard = True
        index = faiss.index_cpu_to_all_gpus(index, co=co)
    return index


def vectors_on_disk(path: str | Path, dim: int | None = None) -> np.ndarray:
    """Float32 vectors as a read-only memory map (nothing loaded): a raw ``emb_<method>.memmap`` (N × ``dim``) or
    the vectors inside a FAISS Flat index file — ``IxFI``/``IxF2``, ``d`` (int32), ``ntotal`` (int64), two
    unused int64, ``is_trained`` (uint8), ``metric`` (int32), the number of floats (int64), then the rows — so
    the published ``e5_Flat.index`` can re-rank a compressed index without a second copy of its vectors."""
    import struct

    with open(path, "rb") as f:
        head = f.read(45)
    if head[:4] in (b"IxFI", b"IxF2"):
        d, ntotal = struct.unpack_from("<iq", head, 4)
        (floats,) = struct.unpack_from("<q", head, 37)
        if floats != ntotal * d or (dim is not None and d != dim):
            raise ValueError(f"{path}: a Flat index of {ntotal} × {d} with {floats} floats of codes (expected dimension {dim})")
        return np.memmap(path, dtype=np.float32, mode="r", offset=45, shape=(ntotal, d))
    if dim is None:
        raise ValueError(f"{path} is not a FAISS Flat index; the dimension of its raw vectors is needed")
    return np.memmap(path, dtype=np.float32, mode="r").reshape(-1, dim)


def rerank_exact(queries: np.ndarray, ids: np.ndarray, embeddings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Re-score candidate ``ids`` with exact inner products against ``embeddings`` (e.g. the builder's
    on-disk ``emb_{method}.memmap``) and keep the best ``k``. Lets a compressed in-RAM index (IVF-PQ)
    reach Flat-like recall while the full-precision vectors stay on disk; -1 ids stay last."""
    n, cand = ids.shape
    scores = np.full((n, cand), -np.inf, dtype=np.float32)
    for i in range(n):
        valid = ids[i] >= 0
        if valid.any():
            rows = ids[i][valid]
            order = np.argsort(rows)  # sorted reads are kinder to a memory-mapped file
            vecs = np.empty((len(rows), embeddings.shape[1]), dtype=np.float32)
            vecs[order] = embeddings[rows[order]]
            scores[i, valid] = vecs @ queries[i]
    return canonical_order(scores, np.where(np.isfinite(scores), ids, -1), k)


class RerankedIndex:
    """A compressed index (IVF-PQ, …) whose best ``rerank_k`` candidates are re-scored exactly.

    ``search`` has the index's interface and local ids, so a shard of a sharded index can be one: each
    shard re-ranks its own candidates from its own slice of the vectors (reads spread over the shards'
    hosts), and the exact merge then compares exact scores."""

    def __init__(self, index, embeddings: np.ndarray, rerank_k: int) -> None:
        if embeddings.shape != (index.ntotal, index.d):
            raise ValueError(f"re-rank embeddings have shape {embeddings.shape}, index has {index.ntotal} × {index.d}")
        self.index = index
        self.embeddings = embeddings
        self.rerank_k = rerank_k
        self.d = int(index.d)
        self.ntotal = int(index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        _, candidates = self.index.search(queries, max(k, self.rerank_k))
        return rerank_exact(queries, candidates, self.embeddings, k)


class DenseRetriever:
    """Encode queries, then one index ``search`` for the whole batch."""

    def __init__(self, encoder, index) -> None:
        self.encoder = encoder
        self.index = index
        if index.d != encoder.dim:
            raise ValueError(f"index dimension {index.d} != encoder dimension {encoder.dim}: was the index built with another encoder?")

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Best ``k`` per query in the canonical order (score descending, ties by id), whatever the index."""
        emb = self.encoder.encode(list(queries), is_query=True, batch_size=256)  # short texts: big batches
        return canonical_order(*self.index.search(emb, k), k)


class TorchExactIndex:
    """Exact inner-product search as a (fp16 on GPU) matmul: the GPU backend without faiss-gpu."""

    def __init__(self, embeddings: np.ndarray, *, device: str, fp16: bool | None = None, block: int = 1 << 20):
        import torch

        self.torch = torch
        self.device = device
        dtype = torch.float16 if (fp16 if fp16 is not None else device.startswith("cuda")) else torch.float32
        self.emb = torch.from_numpy(np.ascontiguousarray(embeddings)).to(device=device, dtype=dtype)
        self.d = int(embeddings.shape[1])
        self.ntotal = int(embeddings.shape[0])
        self.block = block

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        torch = self.torch
        q = torch.from_numpy(np.ascontiguousarray(queries)).to(self.device, self.emb.dtype)
        best_s, best_i = None, None
        for lo in range(0, self.ntotal, self.block):
            s = q @ self.emb[lo : lo + self.block].T
            kk = min(k, s.shape[1])
            s, i = s.float().topk(kk, dim=1)
            i = i + lo
            if best_s is None:
                best_s, best_i = s, i
            else:
                cat_s, cat_i = torch.cat([best_s, s], 1), torch.cat([best_i, i], 1)
                best_s, idx = cat_s.topk(min(k, cat_s.shape[1]), dim=1)
                best_i = cat_i.gather(1, idx)
        scores, ids = best_s.cpu().numpy(), best_i.cpu().numpy().astype(np.int64)
        if ids.shape[1] < k:  # fewer passages than k: pad like FAISS
            pad = k - ids.shape[1]
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        return scores, ids


class BM25Retriever:
    """BM25 via ``bm25s`` (no Java). Queries use the same stemmer and stopwords as indexing."""

    def __init__(self, index_dir: str | Path) -> None:
        import bm25s

        self.bm25s = bm25s
        index_dir = Path(index_dir)
        if not index_dir.is_dir():
            raise FileNotFoundError(f"BM25 index folder not found: {index_dir}")
        self.model = bm25s.BM25.load(str(index_dir))
        self.stemmer = make_stemmer()
        self.n = int(self.model.scores["num_docs"])

    def __len__(self) -> int:
        return self.n

    def search(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        tokens = self.bm25s.tokenize(list(queries), stopwords="en", stemmer=self.stemmer, show_progress=False)
        kk = min(k, self.n)
        ids, scores = self.model.retrieve(tokens, k=kk, show_progress=False, n_threads=1)
        ids = ids.astype(np.int64)
        # bm25s returns arbitrary documents with score 0 when no term matches: drop those.
        ids[scores <= 0] = -1
        if kk < k:
            ids = np.pad(ids, ((0, 0), (0, k - kk)), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, k - kk)))
        return scores.astype(np.float32), ids


def make_stemmer():
    """The stemmer of BM25 queries and of the index's documents (the builder's): they must be the same."""
    import Stemmer

    return Stemmer.Stemmer("english")
