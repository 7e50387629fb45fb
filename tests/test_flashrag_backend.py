"""``--retriever flashrag``: a FlashRAG dense retriever served through our server, end to end.

FlashRAG is an optional backend for users, but the tests need it (installed by ``.ci/run`` and the
README's test instructions with ``pip install --no-deps flashrag-dev``): without it this module fails
to import instead of skipping.
"""

import json

import flashrag  # noqa: F401  (the backend under test; a missing install must fail, not skip)
import httpx
import numpy as np
import yaml


def test_flashrag_dense_retriever_matches_brute_force(sample_world, dense_index, minilm_path, tmp_path):
    from retrieval_server.search.encoder import Encoder
    from search_r1_plugin.sandbox.server_process import retrieval_server

    config = tmp_path / "flashrag.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "retrieval_method": "minilm",
                "retrieval_model_path": minilm_path,
                "retrieval_pooling_method": "mean",
                "retrieval_use_fp16": False,
                "retrieval_query_max_length": 256,
                "retrieval_batch_size": 64,
                "instruction": "",
                "save_dir": str(tmp_path / "flashrag_out"),
            }
        )
    )
    args = [
        "--retriever",
        "flashrag",
        "--flashrag-config",
        str(config),
        "--index",
        str(dense_index.index_path),
        "--corpus",
        str(sample_world["corpus"]),
    ]
    queries = ["In which country was a poet born?", "a chemist born in 1800", "capital city"]
    with retrieval_server(args, tmp_path / "flashrag.log") as url:
        health = httpx.get(f"{url}/health", timeout=10).json()
        scored = httpx.post(f"{url}/retrieve", json={"queries": queries, "topk": 3, "return_scores": True}, timeout=60).json()["result"]
        plain = httpx.post(f"{url}/retrieve", json={"queries": queries[:1], "topk": 2}, timeout=60).json()["result"]
        bad = httpx.post(f"{url}/retrieve", json={"queries": ["a"], "topk": "many"}, timeout=10)

    corpus = [json.loads(line)["id"] for line in open(sample_world["corpus"])]
    assert health["status"] == "ready" and health["documents"] == len(corpus)
    emb = np.memmap(dense_index.index_path.parent / "emb_minilm.memmap", dtype=np.float32, mode="r").reshape(-1, 384)
    q = Encoder(minilm_path, dtype="fp32").encode(queries, is_query=True, batch_size=64)
    expected = np.argsort(-(q @ emb.T), axis=1)[:, :3]
    for qi, docs in enumerate(scored):
        assert [d["document"]["id"] for d in docs] == [corpus[i] for i in expected[qi]]
        assert np.allclose([d["score"] for d in docs], q[qi] @ emb[expected[qi]].T, atol=1e-3)
        assert docs[0]["document"]["contents"].startswith('"')  # the original client's access path
    assert [d["id"] for d in plain[0]] == [corpus[i] for i in expected[0, :2]]  # return_scores false: documents
    assert bad.status_code == 422  # our validation in front of FlashRAG
