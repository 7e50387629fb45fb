"""The retrieval server as a Ray Serve deployment: the same app on N replicas behind Serve's proxy.

Each replica runs exactly what ``search-r1-retriever serve`` runs (:func:`retrieval_server.http.app.create_app`:
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
the encoder and a :class:`~retrieval_server.search.shards.ShardedIndex` of :class:`RemoteShard` handles, which sends a
batch's query vectors to every shard at once and merges their answers exactly (with ``--rerank-embeddings``,
compressed shards re-rank their own candidates first).

Replicas receive the :class:`~retrieval_server.config.ServeConfig` as data (its paths made absolute).

A replica loads its index before its startup ends, so Serve sends it no traffic until it can answer: replicas
added by autoscaling or replacing a dead one never answer 503 ``loading``.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

from retrieval_server.config import API_KEY_ENV, ServeConfig

DEPLOYMENT = "search_r1_retriever"


class ShardSearcher:
    """Shard ``i`` of ``shards`` in its own replica: ``search(query vectors, k)`` with local ids. With
    ``rerank_path`` (all N vectors) the shard re-scores its candidates from its own id range of them — the
    builder's split (:func:`~retrieval_server.search.shards.shard_ranges`) — so only that slice is read here."""

    def __init__(
        self, path: str, i: int, shards: int, nprobe: int | None, ef_search: int | None, gpu: bool, rerank_path: str | None, rerank_k: int
    ) -> None:

        from retrieval_server.search.index import RerankedIndex, read_faiss_index, vectors_on_disk
        from retrieval_server.search.shards import shard_ranges

        self.index = read_faiss_index(path, gpu=gpu, nprobe=nprobe, ef_search=ef_search)
        if rerank_path:
            vectors = vectors_on_disk(rerank_path, self.index.d)
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


class RemoteShard:
    """A shard deployment as one shard of a :class:`~retrieval_server.search.shards.ShardedIndex`: ``start_search``
    sends the query vectors and returns the pending answer, so the index asks every shard before it waits.
    Called from the batcher's worker thread, so it may block on the handle's result."""

    def __init__(self, name: str, app_name: str) -> None:
        from ray import serve

        self.handle = serve.get_deployment_handle(name, app_name=app_name)
        info = self.handle.info.remote().result()
        self.ntotal, self.d = info["ntotal"], info["d"]

    def start_search(self, queries, k: int):
        return self.handle.search.remote(queries, k)

    def search(self, queries, k: int):
        return self.start_search(queries, k).result()


def shard_names(cfg: ServeConfig) -> list[str]:
    return [f"{DEPLOYMENT}_shard{i}" for i in range(len(cfg.index_paths))] if cfg.shard_deployments else []


def _replica_app(settings: dict[str, Any]):
    """Runs on each replica: the ASGI app of these settings (the index loads in it)."""
    from retrieval_server.http.app import serving_app
    from retrieval_server.search.shards import ShardedIndex

    cfg = ServeConfig(**settings)
    names = shard_names(cfg)
    index_factory = (lambda: ShardedIndex([RemoteShard(name, DEPLOYMENT) for name in names])) if names else None
    return serving_app(cfg, load_before_serving=True, index_factory=index_factory)  # Serve routes to a replica once its startup ends


def retriever_deployment(cfg: ServeConfig):
    """The Serve application: one deployment of the retriever app with the replica settings of ``cfg``.
    A key from the environment reaches the replicas through their runtime environment, not their settings."""
    from ray import serve

    actor_options: dict[str, Any] = {"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus}
    if os.environ.get(API_KEY_ENV):
        actor_options["runtime_env"] = {"env_vars": {API_KEY_ENV: os.environ[API_KEY_ENV]}}
    logging_config = {"enable_access_log": False, "log_level": cfg.log_level.upper()}
    options: dict[str, Any] = {
        "name": DEPLOYMENT,
        "ray_actor_options": actor_options,
        "max_ongoing_requests": cfg.max_ongoing_requests,
        # one log line per request costs more than a search of a small index; the server has /metrics
        "logging_config": logging_config,
    }
    if cfg.max_replicas and cfg.max_replicas > cfg.replicas:
        options["autoscaling_config"] = {
            "min_replicas": cfg.replicas,
            "max_replicas": cfg.max_replicas,
            "target_ongoing_requests": cfg.target_ongoing_requests,
            "upscale_delay_s": cfg.upscale_delay_s,
            "downscale_delay_s": cfg.downscale_delay_s,
        }
    else:
        options["num_replicas"] = cfg.replicas
    cfg = cfg.with_absolute_paths()
    settings = cfg.model_dump()
    ingress = serve.deployment(serve.ingress(lambda: _replica_app(settings))(), **options)
    shards = []
    paths = cfg.index_paths
    for i, name in enumerate(shard_names(cfg)):
        shard = serve.deployment(
            ShardSearcher,
            name=name,
            num_replicas=cfg.shard_replicas,
            ray_actor_options={"num_cpus": cfg.shard_cpus, "num_gpus": cfg.num_gpus if cfg.faiss_gpu else 0},
            logging_config=logging_config,
        )
        shards.append(shard.bind(paths[i], i, len(paths), cfg.nprobe, cfg.ef_search, cfg.faiss_gpu, cfg.rerank_embeddings, cfg.rerank_k))
    return ingress.bind(*shards)  # shards bound here belong to the application; replicas find them by name


def build_app(config_args: dict[str, Any]):
    """Application builder for ``serve deploy`` / ``serve run retrieval_server.ray_serve:build_app``:
    ``args`` are :class:`~retrieval_server.config.ServeConfig`'s fields (``index``, ``corpus``, ``encoder``,
    …, and the replica settings ``replicas``, ``num_cpus``, ``num_gpus``, ``max_replicas``, …), checked as
    the flags are."""
    cfg = ServeConfig(**config_args)
    cfg.check()
    return retriever_deployment(cfg)


def run(cfg: ServeConfig) -> None:
    """``search-r1-retriever serve --ray``: deploy on the cluster at ``--ray-address`` and stay in the
    foreground (Ctrl-C deletes the application)."""
    import ray
    from ray import serve

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop like Ctrl-C: the application is deleted
    ray.init(address=cfg.ray_address, ignore_reinit_error=True, include_dashboard=False)
    try:
        # a proxy on every node: each training node can talk to the one on its own host
        serve.start(proxy_location="EveryNode", http_options={"host": cfg.host, "port": cfg.port})
        serve.run(retriever_deployment(cfg), name=DEPLOYMENT, route_prefix="/")
        print(f"{DEPLOYMENT}: {cfg.replicas} replica(s) serving on http://{cfg.host}:{cfg.port}/retrieve", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.delete(DEPLOYMENT)
        if cfg.ray_address is None:  # the local cluster this command started
            serve.shutdown()
            ray.shutdown()
