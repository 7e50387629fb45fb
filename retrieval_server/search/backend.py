"""What answers a search: the retriever a :class:`~retrieval_server.config.ServeConfig` names, with its corpus.

``build_backend`` is called where the index is to live — in the server process after its port opens, or
on each Ray Serve replica — and is the only place that turns settings into loaded objects. ``index``
replaces the FAISS file(s) of ``cfg.index`` with an index already at hand: the Ray shard deployments
(:class:`~retrieval_server.search.shards.ShardedIndex` of remote shards).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from retrieval_server.config import WEB_PROVIDERS, ServeConfig


@dataclass
class Backend:
    """``search(queries, k) -> (scores, hits)``, both ``len(queries) × k``, and ``document(hit) -> dict |
    None``. Hits are corpus row ids for our retrievers (-1: no hit) and the documents themselves for
    FlashRAG; ``None`` means "no hit here" and is left out of the response."""

    search: Optional[Callable]
    document: Callable[[Any], Optional[dict[str, Any]]]
    size: int
    description: str
    # queries searched one by one, concurrently, outside the micro-batcher (web search): ``await asearch(queries, k)``
    asearch: Optional[Callable] = None
    collector: Any = None  # extra Prometheus metrics for /metrics
    aclose: Optional[Callable] = None  # ``await aclose()`` when the server stops (open HTTP sessions)


def build_backend(cfg: ServeConfig, index: Any = None) -> Backend:
    backend = _first_stage(cfg, index)
    if cfg.rerank_model:
        from retrieval_server.search.reranker import CrossEncoderReranker

        reranker = CrossEncoderReranker(
            backend.search, backend.document, cfg.rerank_model, depth=cfg.rerank_depth, batch_size=cfg.rerank_batch_size, device=cfg.device
        )
        description = f"{backend.description}, re-ranked by {cfg.rerank_model} (depth {cfg.rerank_depth}) on {reranker.device}"
        backend = Backend(search=reranker.search, document=backend.document, size=backend.size, description=description)
    return backend


def _first_stage(cfg: ServeConfig, index: Any) -> Backend:
    if cfg.retriever in WEB_PROVIDERS:
        from retrieval_server.search.web_search import WebSearch, cache_path_default, read_api_key

        web = WebSearch(
            cfg.retriever,
            read_api_key(cfg.retriever, cfg.web_api_key_file),
            base_url=cfg.web_base_url,
            cache_path=cfg.web_cache or cache_path_default(cfg.retriever),
            rate_limit=cfg.web_rate_limit,
            concurrency=cfg.web_concurrency,
            retries=cfg.web_retries,
            timeout_s=cfg.web_timeout_s,
            cost_per_call=cfg.web_cost_per_call,
        )
        description = f"web search {cfg.retriever} ({web.base_url}), cache {web.cache_path}"
        return Backend(
            search=None, asearch=web.asearch, document=lambda doc: doc, size=0, description=description, collector=web, aclose=web.aclose
        )
    if cfg.retriever == "flashrag":
        from retrieval_server.search.flashrag_backend import FlashRAGRetriever

        retriever = FlashRAGRetriever.from_config(
            cfg.flashrag_config, index_path=cfg.index, corpus_path=cfg.corpus, retrieval_topk=cfg.topk
        )
        return Backend(
            search=retriever.search, document=lambda doc: doc, size=len(retriever), description=f"flashrag {cfg.flashrag_config}"
        )

    from retrieval_server.data.corpus import Corpus

    corpus = Corpus(cfg.corpus)
    if cfg.retriever == "bm25":
        from retrieval_server.search.index import BM25Retriever

        retriever = BM25Retriever(cfg.index)
        retriever.search(["warm up"], 1)  # numba/JIT warm-up so the first request is not slow
        description = f"bm25 {cfg.index}"
    else:
        retriever, description = _dense_retriever(cfg, index)
    if len(retriever) != len(corpus):
        raise ValueError(f"index has {len(retriever)} entries but corpus {cfg.corpus} has {len(corpus)} passages")
    return Backend(search=retriever.search, document=corpus.hit, size=len(corpus), description=description)


def _dense_retriever(cfg: ServeConfig, index: Any):
    import numpy as np

    from retrieval_server.data.index_meta import family_for_serving
    from retrieval_server.search.encoder import Encoder
    from retrieval_server.search.index import DenseRetriever, TorchExactIndex, load_faiss_index, vectors_on_disk

    encoder = Encoder(
        cfg.encoder,
        device=cfg.device,
        dtype=cfg.dtype,
        use_sentence_transformers=cfg.sentence_transformers,
        family=family_for_serving(cfg.index, cfg.encoder_family),
    )
    where = ", ".join(Path(p).name for p in cfg.index_paths)
    if index is not None:  # e.g. shards served (and re-ranked) elsewhere
        where = f"{len(cfg.index_paths)} shard deployments ({where})"
    elif cfg.retriever == "torch":
        emb = np.memmap(cfg.index, dtype=np.float32, mode="r").reshape(-1, encoder.dim)
        index = TorchExactIndex(np.asarray(emb), device=encoder.device)
    else:
        rerank = None
        if cfg.rerank_embeddings:
            rerank = vectors_on_disk(cfg.rerank_embeddings, encoder.dim)
        index = load_faiss_index(
            cfg.index, gpu=cfg.faiss_gpu, nprobe=cfg.nprobe, ef_search=cfg.ef_search, rerank_embeddings=rerank, rerank_k=cfg.rerank_k
        )
    description = f"{cfg.retriever} {where} + {cfg.encoder} ({encoder.family}) on {encoder.device}"
    return DenseRetriever(encoder, index), description
