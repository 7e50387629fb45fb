"""The cross-encoder stage (``--rerank-model``): its order is the cross-encoder's, over every first stage.

The cross-encoder is built offline (MiniLM's weights with a fresh one-logit head, seeded): random scores
are enough for the plumbing, and exactness is checked against ``CrossEncoder.predict`` on the same pairs.
"""

import json
import urllib.request

import numpy as np
import pytest


@pytest.fixture(scope="module")
def cross_encoder(minilm_path, tmp_path_factory) -> str:
    from search_r1_plugin.sandbox.cross_encoder import build_cross_encoder

    return build_cross_encoder(tmp_path_factory.mktemp("cross_encoder"), minilm_path)


QUERIES = ["In which country was a poet born?", "founded in 1200", "chemist", "Lobelguia capital"]


def expected(cross_encoder, first_stage, document, queries, k, depth):
    """The answer computed directly: the first stage's depth candidates, sorted by CrossEncoder.predict."""
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(cross_encoder, device="cpu")
    _, hits = first_stage(queries, depth)
    out = []
    for query, row in zip(queries, hits):
        docs = [(h, document(h)) for h in row.tolist() if document(h) is not None]
        scores = model.predict([(query, d["contents"]) for _, d in docs], show_progress_bar=False)
        order = sorted(range(len(docs)), key=lambda i: (-scores[i], i))[:k]
        out.append([(docs[i][1]["id"], float(scores[i])) for i in order])
    return out


def test_the_served_order_is_the_cross_encoders(cross_encoder, dense_args, tmp_path):
    from retrieval_server.config import ServeConfig
    from retrieval_server.search.backend import build_backend
    from search_r1_plugin.sandbox.server_process import retrieval_server

    plain = build_backend(ServeConfig(index=dense_args[1], corpus=dense_args[3], encoder=dense_args[5], dtype=dense_args[7]))
    want = expected(cross_encoder, plain.search, plain.document, QUERIES, k=3, depth=10)
    with retrieval_server([*dense_args, "--rerank-model", cross_encoder, "--rerank-depth", "10"], tmp_path / "server.log") as url:
        body = json.dumps({"queries": QUERIES, "topk": 3, "return_scores": True}).encode()
        request = urllib.request.Request(f"{url}/retrieve", body, {"Content-Type": "application/json"})
        result = json.loads(urllib.request.urlopen(request, timeout=60).read())["result"]
        health = json.loads(urllib.request.urlopen(f"{url}/health", timeout=10).read())
    got = [[(d["document"]["id"], d["score"]) for d in row] for row in result]
    assert [[i for i, _ in row] for row in got] == [[i for i, _ in row] for row in want]
    assert np.allclose([s for row in got for _, s in row], [s for row in want for _, s in row], atol=1e-4)
    assert set(result[0][0]["document"]) >= {"id", "contents"}  # the shape every client reads
    assert "re-ranked by" in health["retriever"]
    # re-ranking changes the order somewhere (else this test could not tell)
    first = plain.search(QUERIES, 3)[1]
    assert any([i for i, _ in row] != [plain.document(h)["id"] for h in hits] for row, hits in zip(got, first))


@pytest.mark.parametrize("stage", ["bm25", "IVF-PQ shards"])
def test_every_first_stage_can_be_re_ranked(stage, cross_encoder, bm25_args, dense_args, approximate_shards):
    from retrieval_server.config import ServeConfig
    from retrieval_server.search.backend import build_backend

    if stage == "bm25":
        cfg = ServeConfig(retriever="bm25", index=bm25_args[3], corpus=bm25_args[5])
    else:
        encoder = {"corpus": dense_args[3], "encoder": dense_args[5], "dtype": dense_args[7]}
        cfg = ServeConfig(index=approximate_shards["IVF4,PQ16x4"], nprobe=4, **encoder)
    plain = build_backend(cfg)
    reranked = build_backend(cfg.model_copy(update={"rerank_model": cross_encoder, "rerank_depth": 8}))
    want = expected(cross_encoder, plain.search, plain.document, QUERIES, k=4, depth=8)
    scores, hits = reranked.search(QUERIES, 4)
    got = [
        [(reranked.document(h)["id"], s) for h, s in zip(row_h.tolist(), row_s.tolist()) if reranked.document(h)]
        for row_h, row_s in zip(hits, scores)
    ]
    assert [[i for i, _ in row] for row in got] == [[i for i, _ in row] for row in want]
    assert np.allclose([s for row in got for _, s in row], [s for row in want for _, s in row], atol=1e-4)
