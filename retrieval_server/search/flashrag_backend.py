"""Serve any FlashRAG retriever (dense, BM25, SPLADE, multi-retriever fusion, with its rerankers)
behind this server's ``/retrieve`` contract, micro-batching, limits and health checks.

FlashRAG is optional and not a dependency: the CPU-capable build is the nightly
``flashrag-dev`` (0.3.0.dev*), installed with ``pip install --no-deps flashrag-dev``
plus ``requests langid`` (its full dependency list pulls GPU-only packages). The
retriever is configured the FlashRAG way, by its YAML file; ``--index``/``--corpus``
override ``index_path``/``corpus_path`` in it.

FlashRAG returns documents, not row ids, so ``search`` returns an object array of
document dicts (``None`` where a query got fewer hits) which the server passes
through. Known FlashRAG behaviour kept as is: its dense retriever maps a FAISS id of
-1 (fewer hits than asked, e.g. an IVF index with few probes) to the last passage;
use our ``dense`` retriever where that matters.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from retrieval_server.data.corpus import wire_document

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install --no-deps 'flashrag-dev>=0.3.0.dev0' && pip install requests langid"


def flashrag_config(config_path: str | Path, overrides: dict[str, Any]):
    """FlashRAG's own ``Config`` from its YAML plus ``overrides``; never writes an output folder."""
    try:
        from flashrag.config import Config
    except ImportError as exc:
        raise RuntimeError(f"--retriever flashrag needs FlashRAG: {INSTALL_HINT}") from exc
    if not Path(config_path).is_file():
        raise FileNotFoundError(f"FlashRAG config not found: {config_path}")
    values = {"disable_save": True, "silent_retrieval": True, "save_retrieval_cache": False, **overrides}
    return Config(str(config_path), config_dict=values)


class FlashRAGRetriever:
    """``search(queries, k) -> (scores, docs)`` over a retriever built by ``flashrag.utils.get_retriever``."""

    def __init__(self, retriever, size: int) -> None:
        self.retriever = retriever
        self.size = size

    @classmethod
    def from_config(cls, config_path: str | Path, **overrides: Any) -> "FlashRAGRetriever":
        from flashrag.utils import get_retriever

        from retrieval_server.search.index import use_blas_for_every_batch

        use_blas_for_every_batch()  # FlashRAG's dense retrievers search FAISS in small batches too
        config = flashrag_config(config_path, {k: v for k, v in overrides.items() if v is not None})
        retriever = get_retriever(config)
        corpus = getattr(retriever, "corpus", None)
        size = len(corpus) if corpus is not None else 0
        logger.info("FlashRAG %s retriever over %d passages", config["retrieval_method"], size)
        return cls(retriever, size)

    def __len__(self) -> int:
        return self.size

    def search(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        docs, scores = self.retriever.batch_search(list(queries), num=k, return_score=True)
        out_docs = np.full((len(queries), k), None, dtype=object)
        out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        for i, (row_docs, row_scores) in enumerate(zip(docs, scores)):
            for j, (doc, score) in enumerate(list(zip(row_docs, row_scores))[:k]):
                out_docs[i, j] = wire_document(doc)
                out_scores[i, j] = float(score)
        return out_scores, out_docs
