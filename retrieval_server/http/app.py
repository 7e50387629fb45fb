"""FastAPI app: ``POST /retrieve`` (Search-R1 wire format), ``GET /health``, ``GET /metrics``.

The pydantic models below are the contract. ``return_scores=true`` gives
``{"result": [[{"document": {"id", "contents"}, "score": s}, …] per query]}``;
``false`` gives the documents themselves (the original server crashed on it).
Heavy state (encoder, index, corpus) loads in a background thread after the
port opens: ``/health`` answers 503 ``loading`` until it is ready, then 200.

Before the app sees a request, :class:`~retrieval_server.http.guard.RequestGuard` checks the key (from the
headers alone), the body's size (413) and its pace (408). A full queue answers 429 with
``Retry-After`` (:class:`~retrieval_server.search.batcher.Overloaded`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

try:  # orjson serialises the (large) result lists several times faster than the json module
    from fastapi.responses import ORJSONResponse as FastJSONResponse
except ImportError:  # pragma: no cover
    FastJSONResponse = JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from retrieval_server.config import ServeConfig
from retrieval_server.errors import UpstreamError
from retrieval_server.http.guard import RequestGuard, bearer_token_ok
from retrieval_server.http.metrics import CONTENT_TYPE, ServerMetrics
from retrieval_server.limits import Limits
from retrieval_server.search.backend import Backend, build_backend
from retrieval_server.search.batcher import MicroBatcher, Overloaded

logger = logging.getLogger(__name__)


class RetrieveRequest(BaseModel):
    """What the original Search-R1 server accepts, read the way its pydantic model reads it: ``topk``
    as ``3``, ``3.0`` or ``"3"``; ``return_scores`` as ``true``, ``1`` or ``"true"``; ``topk`` null or
    ≤ 0 means the server default; an empty ``queries`` list gets an empty ``result``."""

    model_config = ConfigDict(extra="ignore")

    queries: list[StrictStr] = Field(..., description="queries, searched independently")
    topk: Optional[int] = Field(None, description="documents per query; server default when null or <= 0")
    return_scores: bool = Field(False, description="wrap each document as {document, score}")


class Document(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    contents: str


class ScoredDocument(BaseModel):
    document: Document
    score: float


class RetrieveResponse(BaseModel):
    result: list[list[ScoredDocument]] | list[list[Document]]


@dataclass
class ServerState:
    """Everything the routes share, on ``app.state.server``: the limits, the key, the metrics, and the
    retriever once it has loaded (``status``: loading → ready, or failed with ``error``)."""

    limits: Limits
    api_key: Optional[str]
    batching: bool
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    status: str = "loading"
    backend: Optional[Backend] = None
    batcher: Optional[MicroBatcher] = None
    error: Optional[str] = None

    async def load(self, loader: Callable[[], Backend]) -> None:
        try:
            backend = await asyncio.get_running_loop().run_in_executor(None, loader)
        except Exception as exc:  # report on /health rather than dying silently
            logger.exception("loading the retriever failed")
            self.status, self.error = "failed", repr(exc)
            return
        if backend.collector is not None:
            self.metrics.registry.register(backend.collector)
        if backend.asearch is not None:  # searched query by query, concurrently: nothing to batch
            self.backend, self.status = backend, "ready"
            logger.info("retriever ready: %s", backend.description)
            return
        self.batcher = MicroBatcher(
            backend.search,
            max_batch=self.limits.max_batch,
            max_wait_ms=self.limits.max_wait_ms,
            batching=self.batching,
            on_batch=self.metrics.observe_batch,
            max_queued=self.limits.max_queued,
            on_queue=self.metrics.queue_depth.set,
        )
        self.batcher.start()
        self.backend, self.status = backend, "ready"
        logger.info("retriever ready: %s", backend.description)

    def authorized(self, request: Request) -> bool:
        return bearer_token_ok({k.lower(): v for k, v in request.headers.items()}, self.api_key)

    def reject(self, field_name: str, message: str) -> HTTPException:
        self.metrics.reject("invalid")
        return HTTPException(status_code=422, detail=[{"loc": ["body", field_name], "msg": message}])


def _server(request: Request) -> ServerState:
    return request.app.state.server


router = APIRouter()


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    server = _server(request)
    body: dict[str, Any] = {"status": server.status}
    code = 200 if server.status == "ready" else 503
    if not server.authorized(request):  # liveness/readiness only; details (paths, model, device) need the key
        return JSONResponse(body, status_code=code)
    if server.backend is not None:
        body.update(documents=server.backend.size, retriever=server.backend.description)
    body["instance"] = f"{socket.gethostname()}:{os.getpid()}"  # which process (replica) answered
    if server.error:
        body["error"] = server.error
    return JSONResponse(body, status_code=code)


@router.get("/metrics")
async def prometheus(request: Request) -> Response:  # behind the key when there is one (the guard)
    return Response(_server(request).metrics.render(), media_type=CONTENT_TYPE)


@router.post("/retrieve", response_model=None, responses={200: {"model": RetrieveResponse}})
async def retrieve(req: RetrieveRequest, request: Request) -> JSONResponse:
    server = _server(request)
    limits, metrics = server.limits, server.metrics
    if server.status != "ready":
        raise HTTPException(status_code=503, detail=f"retriever is {server.status}")
    if not req.queries:  # a turn in which no trajectory searched: the original answers, so do we
        return FastJSONResponse({"result": []})
    if len(req.queries) > limits.max_queries:
        raise server.reject("queries", f"at most {limits.max_queries} queries per request, got {len(req.queries)}")
    queries = [q[: limits.max_query_chars] for q in req.queries]
    metrics.truncated_queries.inc(sum(len(q) > limits.max_query_chars for q in req.queries))
    k = limits.default_topk if req.topk is None or req.topk <= 0 else req.topk
    if k > limits.max_topk:
        raise server.reject("topk", f"must be at most {limits.max_topk}, got {k}")
    t0 = time.perf_counter()
    try:
        if server.backend.asearch is not None:
            scores, ids = await server.backend.asearch(queries, k)
        else:
            scores, ids = await server.batcher.submit(queries, k)
    except UpstreamError as exc:
        metrics.errors.inc()
        raise HTTPException(status_code=502, detail=str(exc))
    except Overloaded as exc:
        metrics.reject("overloaded")
        return JSONResponse({"detail": f"server busy: {exc}"}, status_code=429, headers={"Retry-After": f"{exc.retry_after_s:.0f}"})
    except Exception as exc:
        metrics.errors.inc()
        logger.exception("retrieval failed")
        raise HTTPException(status_code=500, detail=f"retrieval failed: {exc!r}")
    document = server.backend.document
    result = []
    for row_scores, row_ids in zip(scores, ids):
        docs = []
        for s, hit in zip(row_scores.tolist(), row_ids.tolist()):
            doc = document(hit)
            if doc is None:  # fewer hits than asked: never map -1 to a real passage
                continue
            docs.append({"document": doc, "score": float(s)} if req.return_scores else doc)
        result.append(docs)
    metrics.observe_request(len(req.queries), time.perf_counter() - t0)
    return FastJSONResponse({"result": result})


async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming the field; a NaN or infinite input value is echoed as text, since FastAPI's default
    handler fails to serialise it and answers 500."""
    _server(request).metrics.reject("invalid")

    def finite(x: Any) -> Any:
        if isinstance(x, float) and (x != x or x in (float("inf"), float("-inf"))):
            return repr(x)
        if isinstance(x, dict):
            return {k: finite(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [finite(v) for v in x]
        return x

    return JSONResponse({"detail": finite(jsonable_encoder(exc.errors(), custom_encoder={float: finite}))}, status_code=422)


_REJECT_REASONS = {401: "unauthorized", 413: "too_large", 408: "slow_body", 400: "invalid"}


def create_app(
    loader: Callable[[], Backend],
    *,
    limits: Limits | None = None,
    api_key: str | None = None,
    batching: bool = True,
    load_before_serving: bool = False,
) -> Any:
    """The ASGI app (FastAPI behind the request guard).

    The index loads in the background after the port opens (``/health`` says ``loading``), unless
    ``load_before_serving``: then the app's startup waits for it and fails if it fails. A Ray Serve replica
    needs that, since Serve sends traffic to a replica as soon as its startup ends (a replica added by
    autoscaling or replacing a dead one would otherwise answer 503 while it loads)."""
    server = ServerState(limits=limits or Limits(), api_key=api_key, batching=batching)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        task = asyncio.get_running_loop().create_task(server.load(loader))
        if load_before_serving:
            await task
            if server.status == "failed":
                raise RuntimeError(f"loading the retriever failed: {server.error}")
        yield
        task.cancel()
        if server.batcher is not None:
            await server.batcher.stop()
        if server.backend is not None and server.backend.aclose is not None:
            await server.backend.aclose()

    # With a key, nothing but readiness is public: no API docs, no model/index details on /health.
    public_docs = {} if api_key is None else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(title="Search-R1 retrieval server", lifespan=lifespan, **public_docs)
    app.state.server = server
    app.add_exception_handler(RequestValidationError, invalid_body)
    app.include_router(router)
    return RequestGuard(
        app,
        api_key=api_key,
        max_body_bytes=server.limits.max_body_bytes,
        body_timeout_s=server.limits.body_timeout_s,
        on_reject=lambda status: server.metrics.reject(_REJECT_REASONS.get(status, str(status))),
    )


def serving_app(cfg: ServeConfig, *, load_before_serving: bool = False, index_factory: Callable[[], Any] | None = None) -> Any:
    """The app for ``cfg``, its settings checked first (``serve`` runs it under uvicorn, each Ray Serve
    replica under Serve); the retriever is built by :func:`~retrieval_server.search.backend.build_backend` once
    the app runs. ``index_factory`` gives the index already at hand (the Ray shard deployments)."""
    cfg.check()
    return create_app(
        lambda: build_backend(cfg, index_factory() if index_factory else None),
        limits=cfg.limits,
        api_key=cfg.resolve_api_key(),
        batching=not cfg.no_batching,
        load_before_serving=load_before_serving,
    )
