"""``search-r1-retriever download wiki-18`` against a local fake of the hub (tests/fake_hub.py), with a tiny
corpus and a Flat index of the published shape (768-dim inner product, e5) split into two parts."""

import gzip
import hashlib
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from tests import fake_hub
from tests.local_app import served_in_thread


@pytest.fixture(scope="module")
def hub(sample_world, tmp_path_factory):
    """The fake hub serving wiki-18's files: the sample world's corpus gzipped, a 768-dim Flat index in two parts."""
    import faiss

    corpus = sample_world["corpus"].read_bytes()
    n = corpus.count(b"\n")
    vectors = np.random.default_rng(0).standard_normal((n, 768)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(768)
    index.add(vectors)
    path = tmp_path_factory.mktemp("published") / "e5_Flat.index"
    faiss.write_index(index, str(path))
    flat = path.read_bytes()
    half = len(flat) // 2
    fake_hub.files.update(
        {
            ("PeterJinGo/wiki-18-e5-index", "part_aa"): flat[:half],
            ("PeterJinGo/wiki-18-e5-index", "part_ab"): flat[half:],
            ("PeterJinGo/wiki-18-corpus", "wiki-18.jsonl.gz"): gzip.compress(corpus),
        }
    )
    with served_in_thread(fake_hub.app) as url:
        yield {"url": url, "flat": flat, "corpus": corpus, "vectors": vectors}


def command(hub, out, *extra):
    env = dict(os.environ, HF_ENDPOINT=hub["url"], HF_HUB_OFFLINE="0", HF_HUB_DISABLE_XET="1", HF_HOME=str(out.parent / "hf_home"))
    argv = [sys.executable, "-m", "retrieval_server", "download", "wiki-18", "--out", str(out), *extra]
    return argv, env


def run(hub, out, *extra):
    argv, env = command(hub, out, *extra)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def test_flat_is_the_published_index_and_corpus_with_the_serve_command(hub, tmp_path):
    fake_hub.requests.clear()
    out = tmp_path / "wiki18"
    stdout = run(hub, out)
    assert (out / "e5_Flat.index").read_bytes() == hub["flat"]
    assert (out / "wiki-18.jsonl").read_bytes() == hub["corpus"]
    assert not list(out.glob("part_*")) and not (out / "wiki-18.jsonl.gz").exists()  # parts and archive gone
    meta = json.loads((out / "e5_Flat.index.meta.json").read_text())
    assert meta["family"] == "e5" and meta["encoder"] == "intfloat/e5-base-v2" and meta["query_prefix"] == "query: "
    assert (
        f"search-r1-retriever serve --corpus {out / 'wiki-18.jsonl'} --encoder intfloat/e5-base-v2 --index {out / 'e5_Flat.index'}"
        in stdout
    )
    assert "needs about" in stdout and "GB free" in stdout
    # run again: nothing is fetched twice
    before = len([r for r in fake_hub.requests if r[0] == "GET"])
    run(hub, out)
    assert len([r for r in fake_hub.requests if r[0] == "GET"]) == before


def test_a_download_interrupted_half_way_resumes(hub, tmp_path):
    fake_hub.requests.clear()
    out = tmp_path / "wiki18"
    stall = len(fake_hub.files[("PeterJinGo/wiki-18-e5-index", "part_ab")]) // 2
    fake_hub.stall_after["part_ab"] = stall
    argv, env = command(hub, out)
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not any(r[:2] == ("GET", "part_ab") for r in fake_hub.requests) and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(2)  # the first half is written to the .incomplete file
    finally:
        proc.kill()
        proc.wait()
        fake_hub.stall_after.clear()
    assert not (out / "e5_Flat.index").exists()
    run(hub, out)
    assert (out / "e5_Flat.index").read_bytes() == hub["flat"]
    part_ab = [r for r in fake_hub.requests if r[:2] == ("GET", "part_ab")]
    assert part_ab[-1][2] is not None and int(part_ab[-1][2].split("=")[1].split("-")[0]) > 0  # resumed with a Range
    assert len([r for r in fake_hub.requests if r[:2] == ("GET", "part_aa")]) == 1  # the finished part was kept


def test_ivfpq_is_built_from_the_flat_vectors_and_re_ranks_exactly(hub, tmp_path):
    import faiss

    from retrieval_server.search.index import RerankedIndex, vectors_on_disk

    out = tmp_path / "wiki18"
    stdout = run(hub, out, "--index", "ivfpq", "--ivfpq-factory", "IVF4,PQ16x4")
    vectors = vectors_on_disk(out / "e5_Flat.index")
    assert np.array_equal(vectors, hub["vectors"])  # read through a memory map, never re-encoded
    ivf = faiss.read_index(str(out / "e5_IVF4_PQ16x4.index"))
    assert ivf.ntotal == len(vectors) and json.loads((out / "e5_IVF4_PQ16x4.index.meta.json").read_text())["family"] == "e5"
    assert f"--rerank-embeddings {out / 'e5_Flat.index'}" in stdout
    faiss.extract_index_ivf(ivf).nprobe = 4
    _, ids = RerankedIndex(ivf, vectors, rerank_k=len(vectors)).search(np.ascontiguousarray(hub["vectors"][:20]), 1)
    assert ids[:, 0].tolist() == list(range(20))  # every vector finds itself after the exact re-rank


def test_bm25_needs_only_the_corpus(hub, tmp_path):
    fake_hub.requests.clear()
    out = tmp_path / "wiki18"
    stdout = run(hub, out, "--index", "bm25")
    assert (out / "bm25").is_dir() and "--retriever bm25" in stdout
    assert not any(r[1].startswith("part_") for r in fake_hub.requests)


def test_not_enough_disk_is_refused_before_any_download(hub, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    import huggingface_hub.constants

    from retrieval_server.build import download

    fake_hub.requests.clear()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # the session's tests run offline
    monkeypatch.setattr(shutil, "disk_usage", lambda _: namedtuple("usage", "total used free")(10**6, 10**6, 1000))
    with pytest.raises(ValueError, match="not enough disk space .* GB needed, 0.0 GB free"):
        download.download(
            "wiki-18", "flat", tmp_path / "w", revision="main", ivfpq_factory="IVF4,PQ16x4", endpoint=hub["url"], log=lambda m: None
        )
    assert not any(r[0] == "GET" for r in fake_hub.requests)


def test_a_corrupted_file_is_refused_by_its_checksum(hub, tmp_path):
    fake_hub.requests.clear()
    key = ("PeterJinGo/wiki-18-corpus", "wiki-18.jsonl.gz")
    good = fake_hub.files[key]
    fake_hub.corrupt[key[1]] = True  # the bytes change after the hub computed their SHA-256
    try:
        argv, env = command(hub, tmp_path / "wiki18")
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
    finally:
        fake_hub.corrupt.clear()
    assert done.returncode == 2 and f"SHA-256 differs from the hub's ({hashlib.sha256(good).hexdigest()})" in done.stderr
    assert not (tmp_path / "wiki18" / "wiki-18.jsonl").exists()
