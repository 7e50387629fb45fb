"""Every setting of the retrieval server, in one place: a new flag is one field here.

:class:`ServeConfig` is what ``search-r1-retriever serve`` runs with. The command line is generated from
its fields (:func:`add_flags`), ``serve --ray`` hands it to the Ray Serve replicas as data, ``serve deploy``
builds it from a Serve config's ``args`` (validated like the flags), and ``serve-config`` prints it.
:class:`BuildConfig` does the same for ``build-index``; the encoder's settings are declared once
(:class:`EncoderOptions`) and shared by both. Request limits and batching default from
:class:`~retrieval_server.limits.Limits` (the one home of those numbers).

Light on purpose (pydantic only): the CLI reads it for ``--help`` before anything heavy is imported.
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from retrieval_server.limits import Limits

API_KEY_ENV = "SEARCH_R1_RETRIEVER_API_KEY"
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def _flag(help: str, *, group: str | None = None, aliases: tuple[str, ...] = (), **extra: Any) -> dict:
    """Field metadata read by :func:`add_flags`: the flag's help, its argparse group and extra spellings."""
    return {"help": help, "group": group, "aliases": aliases, **extra}


class EncoderOptions(BaseModel):
    """The query/passage encoder: shared by serving and index building."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    encoder: str = Field("intfloat/e5-base-v2", json_schema_extra=_flag("Hugging Face model name or local folder"))
    sentence_transformers: bool = Field(False, json_schema_extra=_flag("load --encoder with sentence-transformers"))
    encoder_family: Optional[Literal["e5", "bge", "plain"]] = Field(
        None,
        validation_alias=AliasChoices("encoder_family", "retriever_name"),
        json_schema_extra=_flag(
            "query/passage prefixes and pooling (e5: 'query: '/'passage: ', mean; bge: instruction, cls; plain: none, mean); "
            "default: as recorded with the index (serve), else guessed from --encoder",
            aliases=("--retriever-name",),
        ),
    )
    device: str = Field("auto", json_schema_extra=_flag("encoder device: auto, cpu, cuda, cuda:1"))
    dtype: str = Field("auto", json_schema_extra=_flag("encoder precision: auto (fp16 GPU, bf16 AMX CPU), fp32, fp16, bf16"))


_RAY = "Ray Serve (--ray): the same app on replicas of a Ray cluster"
_WEB = "web search (--retriever serper|serpapi|brave)"
WEB_PROVIDERS = ("serper", "serpapi", "brave")


class ServeConfig(EncoderOptions):
    """``search-r1-retriever serve``."""

    index: Optional[str] = Field(
        None,
        json_schema_extra=_flag(
            "FAISS .index file (shards: a,b,c in id order), BM25 folder, or raw .memmap (--retriever torch); required but for flashrag"
        ),
    )
    corpus: Optional[str] = Field(None, json_schema_extra=_flag("jsonl corpus, one {id, contents} per line, row i = index id i"))
    retriever: Literal["dense", "bm25", "torch", "flashrag", "serper", "serpapi", "brave"] = Field(
        "dense",
        json_schema_extra=_flag(
            "flashrag: any FlashRAG retriever from --flashrag-config (optional FlashRAG install); serper, serpapi, brave: "
            "web search (key in SERPER_API_KEY, SERPAPI_API_KEY, BRAVE_API_KEY or --web-api-key-file)"
        ),
    )
    flashrag_config: Optional[str] = Field(None, json_schema_extra=_flag("FlashRAG YAML (retrieval_method, index_path, ...)"))
    faiss_gpu: bool = Field(False, json_schema_extra=_flag("shard the index over all GPUs in fp16 (faiss-gpu)"))
    nprobe: Optional[int] = Field(None, json_schema_extra=_flag("IVF probes"))
    ef_search: Optional[int] = Field(None, json_schema_extra=_flag("HNSW efSearch"))
    rerank_embeddings: Optional[str] = Field(
        None, json_schema_extra=_flag("emb_{method}.memmap: re-score the index's candidates exactly from these on-disk vectors")
    )
    rerank_k: int = Field(100, json_schema_extra=_flag("candidates fetched from the index for re-ranking"))
    rerank_model: Optional[str] = Field(
        None,
        json_schema_extra=_flag(
            "cross-encoder (sentence-transformers CrossEncoder, e.g. cross-encoder/ms-marco-MiniLM-L12-v2): fetch --rerank-depth "
            "candidates, answer the top-k by its score"
        ),
    )
    rerank_depth: int = Field(20, json_schema_extra=_flag("candidates per query the cross-encoder scores (at least top-k)"))
    rerank_batch_size: int = Field(64, json_schema_extra=_flag("(query, passage) pairs per cross-encoder forward pass"))
    web_api_key_file: Optional[str] = Field(None, json_schema_extra=_flag("web search: read the provider's key from this file", group=_WEB))
    web_cache: Optional[str] = Field(
        None,
        json_schema_extra=_flag(
            "web search: sqlite cache of (query, k) -> results (default ~/.cache/search-r1/web/<provider>.sqlite)", group=_WEB
        ),
    )
    web_rate_limit: float = Field(5.0, json_schema_extra=_flag("web search: most provider calls a second (token bucket)", group=_WEB))
    web_concurrency: int = Field(16, json_schema_extra=_flag("web search: most provider calls at once", group=_WEB))
    web_retries: int = Field(
        4, json_schema_extra=_flag("web search: retries of a call on 429, 5xx, timeouts (backoff, Retry-After)", group=_WEB)
    )
    web_timeout_s: float = Field(20.0, json_schema_extra=_flag("web search: seconds one provider call may take", group=_WEB))
    web_cost_per_call: Optional[float] = Field(
        None, json_schema_extra=_flag("web search: USD per call for the cost counter (default: the provider's list price)", group=_WEB)
    )
    web_base_url: Optional[str] = Field(None, json_schema_extra=_flag("web search: the provider's API root (tests; a proxy)", group=_WEB))
    topk: int = Field(Limits.default_topk, json_schema_extra=_flag("default top-k when a request sends null"))
    host: str = Field("127.0.0.1", json_schema_extra=_flag("address to listen on"))
    port: int = Field(8000, json_schema_extra=_flag("port to listen on"))
    api_key: Optional[str] = Field(None, json_schema_extra=_flag(f"require 'Authorization: Bearer <key>' (or env {API_KEY_ENV})"))
    api_key_file: Optional[str] = Field(None, json_schema_extra=_flag("read the key from this file instead"))
    max_batch: int = Field(
        Limits.max_batch,
        json_schema_extra=_flag("most queries per encoder/search batch; bigger requests are searched in chunks of this size"),
    )
    max_wait_ms: float = Field(Limits.max_wait_ms, json_schema_extra=_flag("how long a batch waits to fill"))
    no_batching: bool = Field(False, json_schema_extra=_flag("original behaviour: each request on its own"))
    max_queries: int = Field(
        Limits.max_queries, json_schema_extra=_flag("most queries in one request (the original trainer sends a whole turn at once)")
    )
    max_query_chars: int = Field(
        Limits.max_query_chars, json_schema_extra=_flag("longer queries are cut to this many characters (the encoder truncates anyway)")
    )
    max_topk: int = Field(Limits.max_topk, json_schema_extra=_flag("largest top-k a request may ask for"))
    max_body_bytes: int = Field(Limits.max_body_bytes, json_schema_extra=_flag("larger request bodies are refused (413) unread"))
    header_timeout_s: float = Field(
        Limits.header_timeout_s,
        json_schema_extra=_flag("a request line and headers not received in this time get 408 (plain server; Serve's proxy has its own)"),
    )
    body_timeout_s: float = Field(Limits.body_timeout_s, json_schema_extra=_flag("a body not received in this time gets 408"))
    max_queued: int = Field(
        Limits.max_queued, json_schema_extra=_flag("queries that may wait for a batch; beyond it requests get 429 with Retry-After")
    )
    log_level: str = Field("warning", json_schema_extra=_flag("uvicorn's (and Serve replicas') log level"))

    ray: bool = Field(False, json_schema_extra=_flag("deploy on Ray Serve instead of one uvicorn process", group=_RAY))
    ray_address: Optional[str] = Field(
        None, json_schema_extra=_flag("cluster to join ('auto': this node's); default: start a local one", group=_RAY)
    )
    replicas: int = Field(1, json_schema_extra=_flag("replicas (the minimum with --max-replicas)", group=_RAY))
    max_replicas: Optional[int] = Field(None, json_schema_extra=_flag("autoscale up to this many on ongoing requests", group=_RAY))
    target_ongoing_requests: float = Field(8, json_schema_extra=_flag("autoscaling target per replica", group=_RAY))
    upscale_delay_s: float = Field(30, json_schema_extra=_flag("autoscaling: load above target this long adds replicas", group=_RAY))
    downscale_delay_s: float = Field(600, json_schema_extra=_flag("autoscaling: load below target this long removes replicas", group=_RAY))
    max_ongoing_requests: int = Field(256, json_schema_extra=_flag("Serve's per-replica admission limit", group=_RAY))
    num_cpus: float = Field(1, json_schema_extra=_flag("CPUs reserved per replica", group=_RAY))
    num_gpus: float = Field(0, json_schema_extra=_flag("GPUs per replica (fractions share a GPU)", group=_RAY))
    shard_deployments: bool = Field(
        False,
        json_schema_extra=_flag(
            "with --index a,b,c: one deployment per shard (no replica holds the whole index); "
            "the --replicas encode queries, fan each batch out to the shards and merge exactly",
            group=_RAY,
        ),
    )
    shard_replicas: int = Field(1, json_schema_extra=_flag("replicas of each shard deployment", group=_RAY))
    shard_cpus: float = Field(1, json_schema_extra=_flag("CPUs per shard replica", group=_RAY))

    @property
    def limits(self) -> Limits:
        """The request limits and batching of these settings (``--topk`` is ``Limits.default_topk``)."""
        return Limits(**{f.name: getattr(self, "topk" if f.name == "default_topk" else f.name) for f in fields(Limits)})

    @property
    def index_paths(self) -> list[str]:
        """``--index a,b,c`` part by part (shards in id order)."""
        return [p for p in str(self.index or "").split(",") if p]

    def check(self) -> None:
        """What must hold before anything loads (``ValueError`` naming the flag), and a warning for a server
        reachable from other hosts without a key."""
        if self.retriever == "flashrag" and not self.flashrag_config:
            raise ValueError("--retriever flashrag needs --flashrag-config (a FlashRAG YAML)")
        if self.retriever in WEB_PROVIDERS:
            from retrieval_server.search.web_search import read_api_key

            read_api_key(self.retriever, self.web_api_key_file)  # no key: refused now, naming where it is read from
            if self.rerank_model:
                raise ValueError("--rerank-model re-ranks an index's candidates; it does not apply to web search")
        elif self.retriever != "flashrag" and not (self.index and self.corpus):
            raise ValueError(f"--retriever {self.retriever} needs --index and --corpus")
        if self.rerank_model and self.rerank_depth < 1:
            raise ValueError(f"--rerank-depth must be at least 1, got {self.rerank_depth}")
        if self.retriever in ("dense", "torch"):
            from retrieval_server.data.index_meta import family_for_serving

            family_for_serving(self.index, self.encoder_family)  # a family the index was not built with: refused now
        if self.host not in _LOCAL_HOSTS and self.resolve_api_key() is None:
            logging.warning("serving on %s without --api-key: anyone who can reach this host can query it", self.host)

    def resolve_api_key(self) -> str | None:
        """``--api-key``, else ``--api-key-file`` (keeps the key off the command line, visible in ps), else the env var."""
        if self.api_key_file:
            api_key = Path(self.api_key_file).read_text().strip() or None
            if api_key is None:
                raise ValueError(f"--api-key-file {self.api_key_file} is empty")
            return api_key
        return self.api_key or os.environ.get(API_KEY_ENV) or None

    def with_absolute_paths(self) -> "ServeConfig":
        """The same settings with every existing local path absolute (replicas run in other directories)."""
        updates = {}
        for name in (
            "index",
            "corpus",
            "encoder",
            "rerank_embeddings",
            "rerank_model",
            "flashrag_config",
            "api_key_file",
            "web_api_key_file",
            "web_cache",
        ):
            value = getattr(self, name)
            if value:
                updates[name] = ",".join(str(Path(p).resolve()) if Path(p).exists() else p for p in str(value).split(","))
        return self.model_copy(update=updates)

    def changed(self) -> dict[str, Any]:
        """The settings that differ from the defaults (what ``serve-config`` writes)."""
        return self.model_dump(exclude_defaults=True)


class BuildConfig(EncoderOptions):
    """``search-r1-retriever build-index``."""

    corpus: str = Field(json_schema_extra=_flag("jsonl corpus, one {id, contents} per line"))
    out: str = Field(json_schema_extra=_flag("output folder"))
    index_type: str = Field("Flat", json_schema_extra=_flag("FAISS factory string (Flat, HNSW64, IVF4096,PQ96) or BM25"))
    shard_size: int = Field(10000, json_schema_extra=_flag("passages per resumable embedding shard"))
    index_shards: int = Field(
        1, json_schema_extra=_flag("write S indexes over consecutive id ranges (serve them as --index a,b,c: exact merge)")
    )
    batch_size: Optional[int] = Field(None, json_schema_extra=_flag("encoder batch (default: 512 on GPU, 64 on CPU)"))
    save_embedding: bool = Field(False, json_schema_extra=_flag("also write emb_{method}.memmap (float32 N×dim)"))
    limit: Optional[int] = Field(None, json_schema_extra=_flag("only the first N passages (smoke tests)"))


class DownloadConfig(BaseModel):
    """``search-r1-retriever download``."""

    model_config = ConfigDict(extra="forbid")

    assets: Literal["wiki-18"] = Field(json_schema_extra=_flag("what to fetch: wiki-18 (the paper's corpus and E5 index)", positional=True))
    index: Literal["flat", "ivfpq", "bm25"] = Field(
        "flat",
        json_schema_extra=_flag(
            "flat: the published E5 Flat index (≈65 GB on disk and in RAM); ivfpq: ours built from its vectors "
            "(a few GB of RAM, exact re-rank from the Flat file on disk); bm25: ours from the corpus, no vectors"
        ),
    )
    out: str = Field(json_schema_extra=_flag("folder for the files"))
    revision: str = Field("main", json_schema_extra=_flag("hub revision (branch, tag or commit) of the asset repositories"))
    ivfpq_factory: str = Field("IVF16384,PQ96", json_schema_extra=_flag("FAISS factory of --index ivfpq"))


def add_flags(parser: argparse.ArgumentParser, model: type[BaseModel], defaults: dict[str, Any] | None = None) -> None:
    """One ``--flag`` per field of ``model`` (booleans are switches; ``Literal`` fields get choices; a field
    without a default is required), grouped as the fields' metadata says."""
    groups: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        meta = dict(field.json_schema_extra or {})
        target = parser
        if meta.get("group"):
            target = groups.setdefault(meta["group"], parser.add_argument_group(meta["group"]))
        flags = ["--" + name.replace("_", "-"), *meta.get("aliases", ())]
        kwargs: dict[str, Any] = {"dest": name, "help": meta.get("help")}
        if meta.get("positional"):
            flags, kwargs = [name], {"help": meta.get("help")}
        default = (defaults or {}).get(name, field.default)
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        if annotation is bool:
            kwargs["action"] = "store_true"
        elif field.is_required():
            if not meta.get("positional"):
                kwargs["required"] = True
            choices = _literal_choices(annotation)
            if choices:
                kwargs["choices"] = choices
        else:
            kwargs["default"] = default
            choices = _literal_choices(annotation)
            if choices:
                kwargs["choices"] = choices
            else:
                inner = next((a for a in args if a is not type(None)), annotation)
                if inner in (int, float):
                    kwargs["type"] = inner
        target.add_argument(*flags, **kwargs)


def _literal_choices(annotation: Any) -> list[str] | None:
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if getattr(candidate, "__origin__", None) is Literal:
            return list(candidate.__args__)
    return None


def from_namespace(model: type[BaseModel], args: argparse.Namespace) -> Any:
    """The config of ``model`` from parsed flags (only its own fields)."""
    return model(**{name: getattr(args, name) for name in model.model_fields if hasattr(args, name)})
