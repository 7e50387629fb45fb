"""A cross-encoder stage after any retriever: fetch ``depth`` candidates, return the best ``k`` by its score.

``search-r1-retriever serve … --rerank-model cross-encoder/ms-marco-MiniLM-L12-v2 --rerank-depth 20``: the
first stage (dense, BM25, torch, FlashRAG, shards) answers ``depth`` candidates per query; a
sentence-transformers ``CrossEncoder`` scores each (query, passage) pair; the response has the usual shape,
its ``score`` the cross-encoder's. The micro-batcher already hands this stage every query of a batch at
once, so the cross-encoder runs one batched pass per batch (fp16 on a GPU).

Where the original differs (``search_r1/search/retrieval_rerank_server.py``): its response puts the passage
*string* (``"Title"\\ntext``) where the original client reads ``document["contents"]``, and its reranker pairs
every query with every query's candidates; here each query is scored against its own candidates and the
documents keep the ``{"id", "contents"}`` shape every client reads (docs/retrieval.md).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np


class CrossEncoderReranker:
    """``search(queries, k)`` over a first-stage ``search``; ``document(hit)`` gives a hit's passage."""

    def __init__(
        self,
        search: Callable,
        document: Callable[[Any], Optional[dict]],
        model: str,
        *,
        depth: int,
        batch_size: int,
        device: str,
    ) -> None:
        import torch
        from sentence_transformers import CrossEncoder

        from retrieval_server.search.encoder import pick_device

        self.first_stage = search
        self.document = document
        self.depth = depth
        self.batch_size = batch_size
        self.device = pick_device(device)
        kwargs = {"torch_dtype": torch.float16} if self.device.startswith("cuda") else {}
        self.model = CrossEncoder(model, device=self.device, model_kwargs=kwargs)

    def scores(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        return np.asarray(self.model.predict(list(pairs), batch_size=self.batch_size, show_progress_bar=False), dtype=np.float32)

    def search(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Best ``k`` of each query's ``max(k, depth)`` candidates by the cross-encoder's score; ties keep
        the first stage's order; fewer candidates than ``k`` leave the row padded (no hit)."""
        _, hits = self.first_stage(queries, max(k, self.depth))
        pairs, owners = [], []
        for row, (query, row_hits) in enumerate(zip(queries, hits)):
            for rank, hit in enumerate(row_hits.tolist()):
                doc = self.document(hit)
                if doc is not None:
                    pairs.append((query, doc["contents"]))
                    owners.append((row, rank))
        scored = self.scores(pairs)
        per_query: list[list[tuple[float, int]]] = [[] for _ in queries]
        for (row, rank), score in zip(owners, scored.tolist()):
            per_query[row].append((score, rank))
        out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        out_hits = np.full((len(queries), k), -1, dtype=hits.dtype) if hits.dtype != object else np.full((len(queries), k), None)
        for row, candidates in enumerate(per_query):
            best = sorted(candidates, key=lambda c: (-c[0], c[1]))[:k]  # stable: equal scores keep the first stage's order
            for col, (score, rank) in enumerate(best):
                out_scores[row, col] = score
                out_hits[row, col] = hits[row, rank]
        return out_scores, out_hits
