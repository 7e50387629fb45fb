"""``search-r1-retriever`` (also ``python -m retrieval_server``): serve, build-index.

Drop-in for the original Search-R1 server with its own files:

    search-r1-retriever serve --index e5_Flat.index --corpus wiki-18.jsonl \\
        --encoder intfloat/e5-base-v2 --topk 3 --port 8000

    search-r1-retriever build-index --corpus wiki-18.jsonl --encoder intfloat/e5-base-v2 \\
        --index-type Flat --out indexes/

    search-r1-retriever serve --retriever flashrag --flashrag-config retriever.yaml   # a FlashRAG retriever

    search-r1-retriever download wiki-18 --index flat --out wiki18/   # the paper's corpus and E5 index
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from retrieval_server.config import BuildConfig, DownloadConfig, ServeConfig, add_flags, from_namespace


def serve(cfg: ServeConfig) -> None:
    if cfg.ray:
        from retrieval_server.ray_serve import run

        cfg.check()  # here, before any replica starts
        run(cfg)
        return
    import uvicorn

    from retrieval_server.http.app import serving_app
    from retrieval_server.http.protocol import protocol_with_header_timeout

    app = serving_app(cfg)
    http = protocol_with_header_timeout(cfg.header_timeout_s)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level, access_log=False, http=http)


def serve_config(cfg: ServeConfig) -> None:
    """Print a Serve config for ``serve deploy``: these serve settings (those not at their default)."""
    import yaml

    from retrieval_server.ray_serve import DEPLOYMENT

    args = {k: v for k, v in cfg.changed().items() if k not in ("host", "port")}
    config = {
        "proxy_location": "EveryNode",
        "http_options": {"host": cfg.host, "port": cfg.port},
        "applications": [{"name": DEPLOYMENT, "route_prefix": "/", "import_path": "retrieval_server.ray_serve:build_app", "args": args}],
    }
    print(yaml.safe_dump(config, sort_keys=False), end="")


def build_index(cfg: BuildConfig) -> None:
    from retrieval_server.build.builder import build_bm25_index, build_dense

    print(build_bm25_index(cfg.corpus, cfg.out) if cfg.index_type.upper() == "BM25" else build_dense(cfg))


def download(cfg: DownloadConfig) -> None:
    import shlex

    from retrieval_server.build.download import download as fetch_assets

    serve = fetch_assets(cfg.assets, cfg.index, Path(cfg.out), revision=cfg.revision, ivfpq_factory=cfg.ivfpq_factory)
    print(
        f"\ndone. Serve it with:\n  {shlex.join(serve)}\nthen check it with:\n  search-r1 doctor --retriever-url http://127.0.0.1:8000/retrieve"
    )


COMMANDS = {
    "serve": (ServeConfig, serve, "run the /retrieve server", {}),
    # the serve flags, for the replicas of a Serve application; it listens on every interface by default
    "serve-config": (ServeConfig, serve_config, "print a Ray Serve config (serve deploy) for these serve flags", {"host": "0.0.0.0"}),
    "build-index": (BuildConfig, build_index, "encode a corpus and write a FAISS (or BM25) index", {}),
    "download": (DownloadConfig, download, "fetch the paper's wiki-18 corpus and index (or build IVF-PQ / BM25 from them)", {}),
}


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="search-r1-retriever", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (model, func, help_text, defaults) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        add_flags(p, model, defaults)
        p.set_defaults(func=func, model=model)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = make_parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        args.func(from_namespace(args.model, args))
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
