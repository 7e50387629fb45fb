"""An index split by id range into shards, searched shard by shard and merged exactly.

wiki-18's Flat index (21M × 768 × 4 B ≈ 64 GB) does not fit one machine's RAM; S shards of
contiguous id ranges do, one per process, host or Ray Serve replica. Each shard answers its own
top-k with local ids; :func:`merge_topk` shifts them by the shard's first id and keeps the best k
over all shards. For exact indexes (Flat) the merge is exact: the k best of the union are among the
union of each shard's k best. Order is score descending, ties by id ascending, -1 (no hit) last — a
canonical order, so sharded and unsharded results can be compared id for id.

Shard files are ``<index>.shard<i>-of-<S>`` (``search-r1-retriever build-index --index-shards S``);
the server takes them as ``--index a,b,c`` in id order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def shard_ranges(n: int, shards: int) -> list[tuple[int, int]]:
    """``shards`` contiguous ``[lo, hi)`` id ranges covering ``n`` ids, sizes differing by at most one."""
    if not 1 <= shards <= max(n, 1):
        raise ValueError(f"cannot split {n} vectors into {shards} shards")
    bounds = np.linspace(0, n, shards + 1).round().astype(int)
    return [(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]


def shard_path(index_path: str | Path, i: int, shards: int) -> Path:
    return Path(f"{index_path}.shard{i}-of-{shards}")


def shard_offsets(sizes: Sequence[int]) -> list[int]:
    """Each shard's first global id, from the shards' sizes in id order."""
    return [int(x) for x in np.cumsum([0, *sizes[:-1]])]


def canonical_order(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's best ``k``: score descending, ties by id ascending, missing hits (-1) last as -inf."""
    scores = np.where(ids < 0, -np.inf, scores.astype(np.float32, copy=False))
    tie_ids = np.where(ids < 0, np.iinfo(np.int64).max, ids)
    order = np.lexsort((tie_ids, -scores), axis=-1)[:, :k]
    out_scores = np.take_along_axis(scores, order, 1)
    out_ids = np.take_along_axis(ids, order, 1).astype(np.int64)
    out_ids[~np.isfinite(out_scores)] = -1
    if out_ids.shape[1] < k:  # fewer candidates than k: pad like FAISS
        pad = k - out_ids.shape[1]
        out_scores = np.pad(out_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        out_ids = np.pad(out_ids, ((0, 0), (0, pad)), constant_values=-1)
    return out_scores, out_ids


def merge_topk(parts: Sequence[tuple[np.ndarray, np.ndarray]], offsets: Sequence[int], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge each shard's ``(scores, local ids)`` into global top-``k`` (ids shifted by the shard's offset)."""
    scores = np.concatenate([s for s, _ in parts], axis=1)
    ids = np.concatenate([np.where(i < 0, -1, i + off) for (_, i), off in zip(parts, offsets)], axis=1)
    return canonical_order(scores, ids, k)


class ShardedIndex:
    """Several indexes over consecutive id ranges, searched as one (``search``, ``ntotal``, ``d``): FAISS
    files in this process, or shard deployments of Ray Serve (:class:`~retrieval_server.ray_serve.RemoteShard`)."""

    def __init__(self, shards: Sequence) -> None:
        if not shards:
            raise ValueError("no shards")
        dims = {int(s.d) for s in shards}
        if len(dims) != 1:
            raise ValueError(f"shards have different dimensions: {sorted(dims)}")
        self.shards = list(shards)
        self.d = dims.pop()
        self.offsets = shard_offsets([int(s.ntotal) for s in self.shards])
        self.ntotal = sum(int(s.ntotal) for s in self.shards)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        # a shard served elsewhere (a Ray deployment) answers later: ask every one of them before waiting
        pending = [s.start_search(queries, k) if hasattr(s, "start_search") else None for s in self.shards]
        parts = [p.result() if p is not None else s.search(queries, k) for s, p in zip(self.shards, pending)]
        return merge_topk(parts, self.offsets, k)
