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
GPU). Memory: one copy of the index per replica (Flat: vectors × dim × 4 B).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Mapping

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


def _replica_app(argv: list[str]):
    """Runs on each replica: parse the serve flags there and build the ASGI app (the index loads in it)."""
    from retrieval_server.cli import build_serving_app, make_parser

    return build_serving_app(make_parser().parse_args(["serve", *argv]))


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
        }
    else:
        options["num_replicas"] = args.replicas
    argv = absolute_paths(argv)
    ingress = serve.ingress(lambda: _replica_app(argv))
    return serve.deployment(ingress(), **options).bind()


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
