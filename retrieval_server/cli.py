"""``search-r1-retriever`` (also ``python -m retrieval_server``): serve, build-index.

Drop-in for the original Search-R1 server with its own files:

    search-r1-retriever serve --index e5_Flat.index --corpus wiki-18.jsonl \\
        --encoder intfloat/e5-base-v2 --topk 3 --port 8000

    search-r1-retriever build-index --corpus wiki-18.jsonl --encoder intfloat/e5-base-v2 \\
        --index-type Flat --out indexes/

    search-r1-retriever serve --retriever flashrag --flashrag-config retriever.yaml   # a FlashRAG retriever
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from retrieval_server.limits import Limits

API_KEY_ENV = "SEARCH_R1_RETRIEVER_API_KEY"


def _backend_loader(args: argparse.Namespace):
    def load():
        import numpy as np

        from retrieval_server.app import Backend
        from retrieval_server.corpus import Corpus
        from retrieval_server.index import BM25Retriever, DenseRetriever, TorchExactIndex, load_faiss_index

        if args.retriever == "flashrag":
            from retrieval_server.flashrag_backend import FlashRAGRetriever

            retriever = FlashRAGRetriever.from_config(
                args.flashrag_config, index_path=args.index, corpus_path=args.corpus, retrieval_topk=args.topk
            )
            return Backend(
                search=retriever.search, document=lambda doc: doc, size=len(retriever), description=f"flashrag {args.flashrag_config}"
            )
        corpus = Corpus(args.corpus)
        if args.retriever == "bm25":
            retriever = BM25Retriever(args.index)
            desc = f"bm25 {args.index}"
        else:
            from retrieval_server.encoder import Encoder
            from retrieval_server.index_meta import family_for_serving

            encoder = Encoder(
                args.encoder,
                device=args.device,
                dtype=args.dtype,
                use_sentence_transformers=args.sentence_transformers,
                family=family_for_serving(args.index, args.encoder_family),
            )
            if args.retriever == "torch":
                emb = np.memmap(args.index, dtype=np.float32, mode="r").reshape(-1, encoder.dim)
                index = TorchExactIndex(np.asarray(emb), device=encoder.device)
            elif getattr(args, "index_factory", None) is not None:  # e.g. shards served (and re-ranked) elsewhere
                index = args.index_factory()
            else:
                rerank = None
                if args.rerank_embeddings:
                    rerank = np.memmap(args.rerank_embeddings, dtype=np.float32, mode="r").reshape(-1, encoder.dim)
                index = load_faiss_index(
                    args.index,
                    gpu=args.faiss_gpu,
                    nprobe=args.nprobe,
                    ef_search=args.ef_search,
                    rerank_embeddings=rerank,
                    rerank_k=args.rerank_k,
                )
            retriever = DenseRetriever(encoder, index)
            where = ", ".join(Path(p).name for p in str(args.index).split(","))
            if getattr(args, "index_factory", None) is not None:
                where = f"{len(str(args.index).split(','))} shard deployments ({where})"
            desc = f"{args.retriever} {where} + {args.encoder} ({encoder.family}) on {encoder.device}"
        if len(retriever) != len(corpus):
            raise ValueError(f"index has {len(retriever)} entries but corpus {args.corpus} has {len(corpus)} passages")
        if args.retriever == "bm25":  # numba/JIT warm-up so the first request is not slow
            retriever.search(["warm up"], 1)
        return Backend(search=retriever.search, document=corpus.hit, size=len(corpus), description=desc)

    return load


def resolve_api_key(args: argparse.Namespace) -> str | None:
    """``--api-key``, else ``--api-key-file`` (keeps the key off the command line, visible in ps), else the env var."""
    if args.api_key_file:
        api_key = Path(args.api_key_file).read_text().strip() or None
        if api_key is None:
            raise ValueError(f"--api-key-file {args.api_key_file} is empty")
        return api_key
    return args.api_key or os.environ.get(API_KEY_ENV) or None


def build_serving_app(args: argparse.Namespace, load_before_serving: bool = False):
    """Check the serve flags and build the ASGI app (the index loads in the background once it runs, or
    before it serves with ``load_before_serving``); ``serve`` runs it under uvicorn, each Ray Serve replica
    under Serve."""
    from retrieval_server.app import create_app

    if args.retriever == "flashrag" and not args.flashrag_config:
        raise ValueError("--retriever flashrag needs --flashrag-config (a FlashRAG YAML)")
    if args.retriever != "flashrag" and not (args.index and args.corpus):
        raise ValueError(f"--retriever {args.retriever} needs --index and --corpus")
    if args.retriever in ("dense", "torch"):
        from retrieval_server.index_meta import family_for_serving

        family_for_serving(args.index, args.encoder_family)  # a family the index was not built with: exit 2 now
    api_key = resolve_api_key(args)
    if args.host not in ("127.0.0.1", "localhost", "::1") and api_key is None:
        logging.warning("serving on %s without --api-key: anyone who can reach this host can query it", args.host)
    return create_app(
        _backend_loader(args),
        limits=Limits(
            default_topk=args.topk,
            max_topk=args.max_topk,
            max_queries=args.max_queries,
            max_query_chars=args.max_query_chars,
            max_body_bytes=args.max_body_bytes,
            body_timeout_s=args.body_timeout_s,
            max_queued=args.max_queued,
        ),
        api_key=api_key,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        batching=not args.no_batching,
        load_before_serving=load_before_serving,
    )


def serve(args: argparse.Namespace) -> None:
    if args.ray:
        from retrieval_server.ray_serve import run

        build_serving_app(args)  # the same checks, here, before any replica starts
        run(args, args.argv)
        return
    import uvicorn

    from retrieval_server.http_protocol import protocol_with_header_timeout

    app = build_serving_app(args)
    http = protocol_with_header_timeout(args.header_timeout_s)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False, http=http)


def serve_config(args: argparse.Namespace) -> None:
    """Print a Serve config for ``serve deploy`` with these serve flags."""
    import yaml

    from retrieval_server.ray_serve import DEPLOYMENT

    options = {}
    for flag, value in zip(args.argv, args.argv[1:] + [None]):
        if flag.startswith("--"):
            options[flag[2:].replace("-", "_")] = True if value is None or value.startswith("--") else value
    config = {
        "proxy_location": "EveryNode",
        "http_options": {"host": args.host, "port": args.port},
        "applications": [{"name": DEPLOYMENT, "route_prefix": "/", "import_path": "retrieval_server.ray_serve:build_app", "args": options}],
    }
    print(yaml.safe_dump(config, sort_keys=False), end="")


def build_index(args: argparse.Namespace) -> None:
    from retrieval_server.builder import build_bm25_index, build_dense_index

    if args.index_type.upper() == "BM25":
        summary = build_bm25_index(args.corpus, args.out)
    else:
        summary = build_dense_index(
            args.corpus,
            args.encoder,
            args.out,
            index_type=args.index_type,
            shard_size=args.shard_size,
            index_shards=args.index_shards,
            batch_size=args.batch_size,
            save_embedding=args.save_embedding,
            device=args.device,
            dtype=args.dtype,
            limit=args.limit,
            use_sentence_transformers=args.sentence_transformers,
            family=args.encoder_family,
        )
    print(summary)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="search-r1-retriever", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the /retrieve server")
    s.add_argument(
        "--index",
        default=None,
        help="FAISS .index file (shards: a,b,c in id order), BM25 folder, or raw .memmap (--retriever torch); required but for flashrag",
    )
    s.add_argument("--corpus", default=None, help="jsonl corpus, one {id, contents} per line, row i = index id i")
    s.add_argument(
        "--retriever",
        choices=["dense", "bm25", "torch", "flashrag"],
        default="dense",
        help="flashrag: any FlashRAG retriever from --flashrag-config (optional FlashRAG install)",
    )
    s.add_argument("--flashrag-config", default=None, help="FlashRAG YAML (retrieval_method, index_path, ...)")
    s.add_argument("--encoder", default="intfloat/e5-base-v2")
    s.add_argument("--sentence-transformers", action="store_true", help="load --encoder with sentence-transformers")
    s.add_argument(
        "--encoder-family",
        "--retriever-name",
        choices=["e5", "bge", "plain"],
        default=None,
        help="query/passage prefixes and pooling (e5: 'query: '/'passage: ', mean; bge: instruction, cls; "
        "plain: none, mean); default: as recorded with the index, else guessed from --encoder",
    )
    s.add_argument("--device", default="auto")
    s.add_argument("--dtype", default="auto", help="encoder precision: auto (fp16 GPU, bf16 AMX CPU), fp32, fp16, bf16")
    s.add_argument("--faiss-gpu", action="store_true", help="shard the index over all GPUs in fp16 (faiss-gpu)")
    s.add_argument("--nprobe", type=int, default=None, help="IVF probes")
    s.add_argument("--ef-search", type=int, default=None, help="HNSW efSearch")
    s.add_argument(
        "--rerank-embeddings", default=None, help="emb_{method}.memmap: re-score the index's candidates exactly from these on-disk vectors"
    )
    s.add_argument("--rerank-k", type=int, default=100, help="candidates fetched from the index for re-ranking")
    s.add_argument("--topk", type=int, default=3, help="default top-k when a request sends null")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--api-key", default=None, help=f"require 'Authorization: Bearer <key>' (or env {API_KEY_ENV})")
    s.add_argument("--api-key-file", default=None, help="read the key from this file instead")
    s.add_argument(
        "--max-batch",
        type=int,
        default=Limits.max_batch,
        help="most queries per encoder/search batch; bigger requests are searched in chunks of this size",
    )
    s.add_argument("--max-wait-ms", type=float, default=Limits.max_wait_ms, help="how long a batch waits to fill")
    s.add_argument("--no-batching", action="store_true", help="original behaviour: each request on its own")
    s.add_argument(
        "--max-queries",
        type=int,
        default=Limits.max_queries,
        help="most queries in one request (the original trainer sends a whole turn at once)",
    )
    s.add_argument(
        "--max-query-chars",
        type=int,
        default=Limits.max_query_chars,
        help="longer queries are cut to this many characters (the encoder truncates anyway)",
    )
    s.add_argument("--max-topk", type=int, default=Limits.max_topk)
    s.add_argument("--max-body-bytes", type=int, default=Limits.max_body_bytes, help="larger request bodies are refused (413) unread")
    s.add_argument(
        "--header-timeout-s",
        type=float,
        default=Limits.header_timeout_s,
        help="a request line and headers not received in this time get 408 (plain server; Serve's proxy has its own)",
    )
    s.add_argument("--body-timeout-s", type=float, default=Limits.body_timeout_s, help="a body not received in this time gets 408")
    s.add_argument(
        "--max-queued",
        type=int,
        default=Limits.max_queued,
        help="queries that may wait for a batch; beyond it requests get 429 with Retry-After",
    )
    s.add_argument("--log-level", default="warning")
    ray = s.add_argument_group("Ray Serve (--ray): the same app on replicas of a Ray cluster")
    ray.add_argument("--ray", action="store_true", help="deploy on Ray Serve instead of one uvicorn process")
    ray.add_argument("--ray-address", default=None, help="cluster to join ('auto': this node's); default: start a local one")
    ray.add_argument("--replicas", type=int, default=1, help="replicas (the minimum with --max-replicas)")
    ray.add_argument("--max-replicas", type=int, default=None, help="autoscale up to this many on ongoing requests")
    ray.add_argument("--target-ongoing-requests", type=float, default=8, help="autoscaling target per replica")
    ray.add_argument("--upscale-delay-s", type=float, default=30, help="autoscaling: load above target this long adds replicas")
    ray.add_argument("--downscale-delay-s", type=float, default=600, help="autoscaling: load below target this long removes replicas")
    ray.add_argument("--max-ongoing-requests", type=int, default=256, help="Serve's per-replica admission limit")
    ray.add_argument("--num-cpus", type=float, default=1, help="CPUs reserved per replica")
    ray.add_argument("--num-gpus", type=float, default=0, help="GPUs per replica (fractions share a GPU)")
    ray.add_argument(
        "--shard-deployments",
        action="store_true",
        help="with --index a,b,c: one deployment per shard (no replica holds the whole index); "
        "the --replicas encode queries, fan each batch out to the shards and merge exactly",
    )
    ray.add_argument("--shard-replicas", type=int, default=1, help="replicas of each shard deployment")
    ray.add_argument("--shard-cpus", type=float, default=1, help="CPUs per shard replica")
    s.set_defaults(func=serve)
    c = sub.add_parser("serve-config", help="print a Ray Serve config (serve deploy) for these serve flags")
    c.add_argument("--host", default="0.0.0.0")
    c.add_argument("--port", type=int, default=8000)
    c.set_defaults(func=serve_config)

    b = sub.add_parser("build-index", help="encode a corpus and write a FAISS (or BM25) index")
    b.add_argument("--corpus", required=True)
    b.add_argument("--encoder", default="intfloat/e5-base-v2")
    b.add_argument("--sentence-transformers", action="store_true")
    b.add_argument(
        "--encoder-family",
        "--retriever-name",
        choices=["e5", "bge", "plain"],
        default=None,
        help="query/passage prefixes and pooling (e5: 'query: '/'passage: ', mean; bge: instruction, cls; "
        "plain: none, mean); default: guessed from --encoder (and recorded in <index>.meta.json)",
    )
    b.add_argument("--index-type", default="Flat", help="FAISS factory string (Flat, HNSW64, IVF4096,PQ96) or BM25")
    b.add_argument("--out", required=True, help="output folder")
    b.add_argument("--shard-size", type=int, default=10000, help="passages per resumable embedding shard")
    b.add_argument(
        "--index-shards",
        type=int,
        default=1,
        help="write S indexes over consecutive id ranges (serve them as --index a,b,c: exact merge)",
    )
    b.add_argument("--batch-size", type=int, default=None, help="encoder batch (default: 512 on GPU, 64 on CPU)")
    b.add_argument("--save-embedding", action="store_true", help="also write emb_{method}.memmap (float32 N×dim)")
    b.add_argument("--device", default="auto")
    b.add_argument("--dtype", default="auto", help="encoder precision: auto, fp32, fp16, bf16")
    b.add_argument("--limit", type=int, default=None, help="only the first N passages (smoke tests)")
    b.set_defaults(func=build_index)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve-config"]:  # every flag after it is a serve flag for the replicas
        known, rest = make_parser().parse_known_args(argv)
        known.argv = rest
        make_parser().parse_args(["serve", *rest])  # the serve flags must parse
        serve_config(known)
        return
    args = make_parser().parse_args(argv)
    args.argv = argv[1:]  # the serve flags as given, for Ray Serve replicas
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if getattr(args, "batch_size", 0) is None:
        from retrieval_server.encoder import pick_device

        args.batch_size = 512 if pick_device(args.device).startswith("cuda") else 64
    try:
        args.func(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
