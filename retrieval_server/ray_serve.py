"""The retrieval server as a Ray Serve deployment: the same app on N replicas behind Serve's proxy.

Each replica runs exactly what ``search-r1-retriever serve`` runs (:func:`retrieval_server.app.create_app`:
``/retrieve``, ``/health``, ``/metrics``, micro-batching, limits, the request guard and its key), built
on the replica by a builder function, so the index loads where the replica lives. Serve spreads requests
over the replicas, replaces one that dies, and (with ``--max-replicas``) scales on ongoing requests.

Two ways in:

* ``search-r1-retriever serve --ray --replicas 2 --index … --corpus …`` (joins ``--ray-address``, e.g. the
  training job's cluster, or starts a local one);
* ``serve deploy retriever.yaml`` with ``import_path: retrieval_server.ray_serve:build_app`` and the same
  flags under ``args`` (``search-r1-retriever serve-config`` prints one).

Per-replica resources: ``--num-cpus`` / ``--num-gpus`` (fractions allowed, e.g. a spare slice of a training
GPU; Ray sets a replica's thread count from its CPUs). Memory: one copy of the index per replica (Flat:
vectors × dim × 4 B) — unless ``--shard-deployments``: then each shard file of ``--index a,b,c`` is its own
deployment (:class:`ShardSearcher`, ``--shard-replicas`` × ``--shard-cpus``), and the app's replicas hold only
the encoder and :class:`RemoteShards`, which sends a batch's query vectors to every shard at once and merges
their answers exactly (with ``--rerank-embeddings``, compressed shards re-rank their own candidates first).

A replica loads its index before its startup ends, so Serve sends it no traffic until it can answer: replicas
added by autoscaling or replacing a dead one never answer 503 ``loading``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Mapping

from retrieval_server.shards import merge_topk, shard_offsets

DEPLOYMENT = "search_r1_retriever"


def serve_argv(options: Mapping[str, Any]) -> list[str]:
    """``{"index": "e5_Flat.index", "no_batching": True}`` → ``["--index", "e5_Flat.index", "--no-batching"]``."""
    argv: list[str] = []
    for key, value in options.items():
        flag = "--" + str(key).replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value not in (None, False):
            argv += [flag, str(value)]
    return argv


# flags whose value is a local file or folder: made absolute, since replicas run in other directories
PATH_FLAGS = ("--index", "--corpus", "--encoder", "--rerank-embeddings", "--flashrag-config", "--api-key-file")


def absolute_paths(argv: list[str]) -> list[str]:
    """The serve flags with every existing local path made absolute (``--index a,b`` part by part)."""
    out = list(argv)
    for i, flag in enumerate(out[:-1]):
        if flag in PATH_FLAGS:
            parts = out[i + 1].split(",") if flag == "--index" else [out[i + 1]]
            out[i + 1] = ",".join(str(Path(p).resolve()) if Path(p).exists() else p for p in parts)
    return out


class ShardSearcher:
    """Shard ``i`` of ``shards`` in its own replica: ``search(query vectors, k)`` with local ids. With
    ``rerank_path`` (all N vectors) the shard re-scores its candidates from its own id range of them — the
    builder's split (:func:`~retrieval_server.shards.shard_ranges`) — so only that slice is read here."""

    def __init__(
        self, path: str, i: int, shards: int, nprobe: int | None, ef_search: int | None, gpu: bool, rerank_path: str | None, rerank_k: int
    ) -> None:
        import numpy as np

        from retrieval_server.index import RerankedIndex, read_faiss_index
        from retrieval_server.shards import shard_ranges

        self.index = read_faiss_index(path, gpu=gpu, nprobe=nprobe, ef_search=ef_search)
        if rerank_path:
            vectors = np.memmap(rerank_path, dtype=np.float32, mode="r").reshape(-1, self.index.d)
            lo, hi = shard_ranges(len(vectors), shards)[i]
            if hi - lo != self.index.ntotal:
                raise ValueError(
                    f"shard {i} of {shards} ({path}) has {self.index.ntotal} vectors, but ids {lo}-{hi} of "
                    f"{rerank_path} belong to it: shards and re-rank vectors are not from the same build"
                )
            self.index = RerankedIndex(self.index, vectors[lo:hi], rerank_k)

    def info(self) -> dict[str, int]:
        return {"ntotal": int(self.index.ntotal), "d": int(self.index.d)}

    def search(self, queries, k: int):
        return self.index.search(queries, k)


class RemoteShards:
    """The shard deployments as one index (``search``, ``ntotal``, ``d``): a batch of query vectors goes to
    every shard at once and the answers are merged exactly (:func:`retrieval_server.shards.merge_topk`).
    Called from the batcher's worker thread, so it may block on the handles' results."""

    def __init__(self, names: list[str], app_name: str) -> None:
        from ray import serve

        self.handles = [serve.get_deployment_handle(name, app_name=app_name) for name in names]
        infos = [h.info.remote().result() for h in self.handles]
        dims = {i["d"] for i in infos}
        if len(dims) != 1:
            raise ValueError(f"shards have different dimensions: {sorted(dims)}")
        self.d = dims.pop()
        sizes = [i["ntotal"] for i in infos]
        self.offsets = shard_offsets(sizes)
        self.ntotal = sum(sizes)

    def search(self, queries, k: int):
        responses = [h.search.remote(queries, k) for h in self.handles]  # fan out first, then wait
        return merge_topk([r.result() for r in responses], self.offsets, k)


def shard_names(args: argparse.Namespace) -> list[str]:
    return [f"{DEPLOYMENT}_shard{i}" for i in range(len(str(args.index).split(",")))] if args.shard_deployments else []


def _replica_app(argv: list[str]):
    """Runs on each replica: parse the serve flags there and build the ASGI app (the index loads in it)."""
    from retrieval_server.cli import build_serving_app, make_parser

    args = make_parser().parse_args(["serve", *argv])
    names = shard_names(args)
    if names:
        args.index_factory = lambda: RemoteShards(names, DEPLOYMENT)
    return build_serving_app(args, load_before_serving=True)  # Serve routes to a replica once its startup ends


def retriever_deployment(args: argparse.Namespace, argv: list[str]):
    """The Serve application: one deployment of the retriever app with the replica settings of ``args``.
    A key from the environment reaches the replicas through their runtime environment, not their flags."""
    from ray import serve

    from retrieval_server.cli import API_KEY_ENV

    actor_options: dict[str, Any] = {"num_cpus": args.num_cpus, "num_gpus": args.num_gpus}
    if os.environ.get(API_KEY_ENV):
        actor_options["runtime_env"] = {"env_vars": {API_KEY_ENV: os.environ[API_KEY_ENV]}}
    options: dict[str, Any] = {
        "name": DEPLOYMENT,
        "ray_actor_options": actor_options,
        "max_ongoing_requests": args.max_ongoing_requests,
        # one log line per request costs more than a search of a small index; the server has /metrics
        "logging_config": {"enable_access_log": False, "log_level": args.log_level.upper()},
    }
    if args.max_replicas and args.max_replicas > args.replicas:
        options["autoscaling_config"] = {
            "min_replicas": args.replicas,
            "max_replicas": args.max_replicas,
            "target_ongoing_requests": args.target_ongoing_requests,
            "upscale_delay_s": args.upscale_delay_s,
            "downscale_delay_s": args.downscale_delay_s,
        }
    else:
        options["num_replicas"] = args.replicas
    argv = absolute_paths(argv)
    ingress = serve.deployment(serve.ingress(lambda: _replica_app(argv))(), **options)
    shards = []
    if args.shard_deployments:
        paths = make_parser_index(argv)
        rerank_path = argv[argv.index("--rerank-embeddings") + 1] if "--rerank-embeddings" in argv else None  # absolute
        for i, (name, path) in enumerate(zip(shard_names(args), paths)):
            shard = serve.deployment(
                ShardSearcher,
                name=name,
                num_replicas=args.shard_replicas,
                ray_actor_options={"num_cpus": args.shard_cpus, "num_gpus": args.num_gpus if args.faiss_gpu else 0},
                logging_config={"enable_access_log": False, "log_level": args.log_level.upper()},
            )
            shards.append(shard.bind(path, i, len(paths), args.nprobe, args.ef_search, args.faiss_gpu, rerank_path, args.rerank_k))
    return ingress.bind(*shards)  # shards bound here belong to the application; replicas find them by name


def make_parser_index(argv: list[str]) -> list[str]:
    """The (absolute) shard paths of ``--index a,b,c`` in ``argv``."""
    return argv[argv.index("--index") + 1].split(",")


def build_app(config_args: dict[str, Any]):
    """Application builder for ``serve deploy`` / ``serve run retrieval_server.ray_serve:build_app``:
    ``args`` hold the ``serve`` flags (``index``, ``corpus``, ``encoder``, …) and the replica settings
    (``replicas``, ``num_cpus``, ``num_gpus``, ``max_replicas``, ``target_ongoing_requests``)."""
    from retrieval_server.cli import make_parser

    argv = serve_argv(config_args)
    return retriever_deployment(make_parser().parse_args(["serve", *argv]), argv)


def run(args: argparse.Namespace, argv: list[str]) -> None:
    """``search-r1-retriever serve --ray``: deploy on the cluster at ``--ray-address`` and stay in the
    foreground (Ctrl-C deletes the application)."""
    import ray
    from ray import serve

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop like Ctrl-C: the application is deleted
    ray.init(address=args.ray_address, ignore_reinit_error=True, include_dashboard=False)
    try:
        # a proxy on every node: each training node can talk to the one on its own host
        serve.start(proxy_location="EveryNode", http_options={"host": args.host, "port": args.port})
        serve.run(retriever_deployment(args, argv), name=DEPLOYMENT, route_prefix="/")
        print(f"{DEPLOYMENT}: {args.replicas} replica(s) serving on http://{args.host}:{args.port}/retrieve", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.delete(DEPLOYMENT)
        if args.ray_address is None:  # the local cluster this command started
            serve.shutdown()
            ray.shutdown()
