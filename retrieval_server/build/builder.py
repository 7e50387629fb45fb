"""Index builder: corpus jsonl → ``{method}_{faiss_type}.index`` (or a BM25 folder).

Embeddings are computed in shards of ``shard_size`` passages, each written to
``<out>/shards_{method}/emb_<start>_<stop>.npy`` as soon as it is done, so an
interrupted build resumes where it stopped (finished shards are not recomputed).
The shards are copied one at a time into the original raw ``emb_{method}.memmap``
(float32, N × dim; kept with ``save_embedding``, e.g. for the server's
``--rerank-embeddings``) and added in chunks to a FAISS index built from a factory
string (``Flat``, ``HNSW64``, ``IVF4096,PQ96``…; IVF/PQ are trained on a sample
first). RAM holds one shard plus the index, never all embeddings. Output names
follow the original builder, so the server loads either.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from retrieval_server.config import BuildConfig
from retrieval_server.data.corpus import Corpus
from retrieval_server.search.encoder import Encoder, method_name

logger = logging.getLogger(__name__)


@dataclass
class BuildSummary:
    passages: int
    dim: int
    index_type: str
    index_path: Path
    bytes_on_disk: int
    seconds: float
    shards_reused: int
    index_shards: int  # index_path names them all, comma-separated, in id order

    def __str__(self) -> str:
        return (
            f"built {self.index_path} — {self.passages} passages, dim {self.dim}, {self.index_type}, "
            f"{self.bytes_on_disk / 2**20:.1f} MiB on disk, {self.seconds:.1f} s "
            f"({self.shards_reused} embedding shards reused)"
        )


def faiss_type_name(factory: str) -> str:
    return factory.replace(",", "_")


def encode_corpus(
    corpus: Corpus,
    encoder: Encoder,
    shard_dir: Path,
    out_path: Path,
    *,
    shard_size: int,
    batch_size: int,
    limit: int | None = None,
) -> tuple[np.ndarray, int]:
    """All passage embeddings as a float32 memmap at ``out_path`` (N × dim, the original raw format).

    Shards already on disk are reused; each shard is copied into the memmap and released, so the
    builder never holds more than one shard in RAM (wiki-18 is 64 GB of float32).
    Returns (read-only memmap, shards reused).
    """
    shard_dir.mkdir(parents=True, exist_ok=True)
    n = len(corpus) if limit is None else min(limit, len(corpus))
    out = np.memmap(out_path, dtype=np.float32, mode="w+", shape=(max(n, 1), encoder.dim))
    reused = 0
    with tqdm(total=n, desc="encoding passages", unit="psg") as bar:
        for start in range(0, n, shard_size):
            stop = min(start + shard_size, n)
            path = shard_dir / f"emb_{start:012d}_{stop:012d}.npy"
            if path.is_file():
                emb = np.load(path)
                reused += 1
            else:
                texts = list(corpus.iter_contents(start, stop))
                emb = encoder.encode(texts, is_query=False, batch_size=batch_size)
                tmp = path.with_suffix(".tmp.npy")
                np.save(tmp, emb)
                tmp.rename(path)  # atomic: a killed build never leaves a half shard
            out[start:stop] = emb
            bar.update(stop - start)
    out.flush()
    del out
    return np.memmap(out_path, dtype=np.float32, mode="r", shape=(n, encoder.dim)), reused


def build_faiss(embeddings: np.ndarray, factory: str, *, train_size: int = 200_000, seed: int = 0):
    """FAISS index from (possibly memory-mapped) embeddings, trained on a sample and filled in chunks."""
    import faiss

    index = faiss.index_factory(embeddings.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(len(embeddings), min(train_size, len(embeddings)), replace=False))
        logger.info("training %s on %d vectors", factory, len(rows))
        index.train(np.ascontiguousarray(embeddings[rows]))
    step = 100_000
    for lo in tqdm(range(0, len(embeddings), step), desc=f"adding to {factory}"):
        index.add(np.ascontiguousarray(embeddings[lo : lo + step]))
    return index


def build_dense_index(corpus_path: str | Path, encoder_name: str, out_dir: str | Path, **options) -> BuildSummary:
    """:func:`build_dense` from paths; ``options`` are the other fields of
    :class:`~retrieval_server.config.BuildConfig` (``index_type``, ``shard_size``, ``index_shards``, …)."""
    return build_dense(BuildConfig(corpus=str(corpus_path), encoder=str(encoder_name), out=str(out_dir), **options))


def build_dense(cfg: BuildConfig) -> BuildSummary:
    """Encode the corpus (resumably, in shards on disk) and write the FAISS index, or ``index_shards``
    indexes over consecutive id ranges (``retrieval_server.search.shards``) for an index too big for one host."""
    import faiss

    from retrieval_server.data.index_meta import write_meta
    from retrieval_server.search.shards import shard_path, shard_ranges

    t0 = time.perf_counter()
    out_dir = Path(cfg.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = Corpus(cfg.corpus)
    encoder = Encoder(
        cfg.encoder, device=cfg.device, dtype=cfg.dtype, use_sentence_transformers=cfg.sentence_transformers, family=cfg.encoder_family
    )
    batch_size = cfg.batch_size or (512 if encoder.device.startswith("cuda") else 64)
    method = method_name(cfg.encoder)
    emb_path = out_dir / f"emb_{method}.memmap"
    emb, reused = encode_corpus(
        corpus, encoder, out_dir / f"shards_{method}", emb_path, shard_size=cfg.shard_size, batch_size=batch_size, limit=cfg.limit
    )
    index_type, index_shards = cfg.index_type, cfg.index_shards
    path = out_dir / f"{method}_{faiss_type_name(index_type)}.index"
    n, dim = emb.shape
    if index_shards == 1:
        faiss.write_index(build_faiss(emb, index_type), str(path))
        write_meta(path, encoder)
        paths = [path]
    else:
        paths = []
        for i, (lo, hi) in enumerate(shard_ranges(n, index_shards)):
            paths.append(shard_path(path, i, index_shards))
            faiss.write_index(build_faiss(emb[lo:hi], index_type), str(paths[-1]))
            write_meta(paths[-1], encoder)
    del emb
    if cfg.save_embedding:
        write_meta(emb_path, encoder)
    else:
        emb_path.unlink()
    size = sum(p.stat().st_size for p in paths)
    return BuildSummary(n, dim, index_type, Path(",".join(map(str, paths))), size, time.perf_counter() - t0, reused, len(paths))


def build_bm25_index(corpus_path: str | Path, out_dir: str | Path) -> BuildSummary:
    """A ``bm25s`` index of the corpus in ``out_dir/bm25`` (tokenised as :class:`~retrieval_server.search.index.BM25Retriever`
    tokenises queries)."""
    import bm25s

    from retrieval_server.search.index import make_stemmer

    t0 = time.perf_counter()
    corpus = Corpus(corpus_path)
    texts = list(tqdm(corpus.iter_contents(), total=len(corpus), desc="reading corpus"))
    model = bm25s.BM25()
    model.index(bm25s.tokenize(texts, stopwords="en", stemmer=make_stemmer(), show_progress=True), show_progress=True)
    path = Path(out_dir) / "bm25"
    model.save(str(path))
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return BuildSummary(len(corpus), 0, "BM25", path, size, time.perf_counter() - t0, 0, 1)
