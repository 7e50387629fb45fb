"""FastAPI app: ``POST /retrieve`` (Search-R1 wire format), ``GET /health``, ``GET /metrics``.

The pydantic models below are the contract. ``return_scores=true`` gives
``{"result": [[{"document": {"id", "contents"}, "score": s}, …] per query]}``;
``false`` gives the documents themselves (the original server crashed on it).
Heavy state (encoder, index, corpus) loads in a background thread after the
port opens: ``/health`` answers 503 ``loading`` until it is ready, then 200.

Before the app sees a request, :class:`~retrieval_server.guard.RequestGuard` checks the key (from the
headers alone), the body's size (413) and its pace (408). A full queue answers 429 with
``Retry-After`` (:class:`~retrieval_server.batcher.Overloaded`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Callable, Optional

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

try:  # orjson serialises the (large) result lists several times faster than the json module
    from fastapi.responses import ORJSONResponse as FastJSONResponse
except ImportError:  # pragma: no cover
    FastJSONResponse = JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from retrieval_server.batcher import MicroBatcher, Overloaded
from retrieval_server.guard import RequestGuard, bearer_token_ok
from retrieval_server.limits import Limits
from retrieval_server.metrics import CONTENT_TYPE, ServerMetrics

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
class Backend:
    """What the loader returns: ``search(queries, k) -> (scores, hits)``, both ``len(queries) × k``, and
    ``document(hit) -> dict | None``. Hits are corpus row ids for our retrievers (-1: no hit) and the
    documents themselves for FlashRAG; ``None`` means "no hit here" and is left out of the response."""

    search: Callable
    document: Callable[[Any], Optional[dict[str, Any]]]
    size: int
    description: str


def create_app(
    loader: Callable[[], Backend],
    *,
    limits: Limits | None = None,
    api_key: str | None = None,
    max_batch: int | None = None,
    max_wait_ms: float | None = None,
    batching: bool = True,
    load_before_serving: bool = False,
) -> Any:
    """The ASGI app (FastAPI behind the request guard).

    The index loads in the background after the port opens (``/health`` says ``loading``), unless
    ``load_before_serving``: then the app's startup waits for it and fails if it fails. A Ray Serve replica
    needs that, since Serve sends traffic to a replica as soon as its startup ends (a replica added by
    autoscaling or replacing a dead one would otherwise answer 503 while it loads)."""
    limits = limits or Limits()
    metrics = ServerMetrics()
    state: dict[str, Any] = {"status": "loading", "backend": None, "batcher": None, "error": None}

    async def load() -> None:
        try:
            backend = await asyncio.get_running_loop().run_in_executor(None, loader)
        except Exception as exc:  # report on /health rather than dying silently
            logger.exception("loading the retriever failed")
            state.update(status="failed", error=repr(exc))
            return
        batcher = MicroBatcher(
            backend.search,
            max_batch=limits.max_batch if max_batch is None else max_batch,
            max_wait_ms=limits.max_wait_ms if max_wait_ms is None else max_wait_ms,
            batching=batching,
            on_batch=metrics.observe_batch,
            max_queued=limits.max_queued,
            on_queue=metrics.queue_depth.set,
        )
        batcher.start()
        state.update(status="ready", backend=backend, batcher=batcher)
        logger.info("retriever ready: %s", backend.description)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        task = asyncio.get_running_loop().create_task(load())
        if load_before_serving:
            await task
            if state["status"] == "failed":
                raise RuntimeError(f"loading the retriever failed: {state['error']}")
        yield
        task.cancel()
        if state["batcher"] is not None:
            await state["batcher"].stop()

    # With a key, nothing but readiness is public: no API docs, no model/index details on /health.
    public_docs = {} if api_key is None else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(title="Search-R1 retrieval server", lifespan=lifespan, **public_docs)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        """422 naming the field; a NaN or infinite input value is echoed as text, since FastAPI's
        default handler fails to serialise it and answers 500."""
        metrics.reject("invalid")

        def finite(x: Any) -> Any:
            if isinstance(x, float) and (x != x or x in (float("inf"), float("-inf"))):
                return repr(x)
            if isinstance(x, dict):
                return {k: finite(v) for k, v in x.items()}
            if isinstance(x, (list, tuple)):
                return [finite(v) for v in x]
            return x

        return JSONResponse({"detail": finite(jsonable_encoder(exc.errors(), custom_encoder={float: finite}))}, status_code=422)

    def authorized(request: Request) -> bool:
        return bearer_token_ok({k.lower(): v for k, v in request.headers.items()}, api_key)

    def reject(field: str, message: str) -> HTTPException:
        metrics.reject("invalid")
        return HTTPException(status_code=422, detail=[{"loc": ["body", field], "msg": message}])

    @app.get("/health")
    async def health(request: Request) -> JSONResponse:
        backend = state["backend"]
        body = {"status": state["status"]}
        if not authorized(request):  # liveness/readiness only; details (paths, model, device) need the key
            return JSONResponse(body, status_code=200 if state["status"] == "ready" else 503)
        if backend is not None:
            body.update(documents=backend.size, retriever=backend.description)
        body["instance"] = f"{socket.gethostname()}:{os.getpid()}"  # which process (replica) answered
        if state["error"]:
            body["error"] = state["error"]
        return JSONResponse(body, status_code=200 if state["status"] == "ready" else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:  # behind the key when there is one (the guard)
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.post("/retrieve", response_model=None, responses={200: {"model": RetrieveResponse}})
    async def retrieve(req: RetrieveRequest) -> JSONResponse:
        if state["status"] != "ready":
            raise HTTPException(status_code=503, detail=f"retriever is {state['status']}")
        if not req.queries:  # a turn in which no trajectory searched: the original answers, so do we
            return FastJSONResponse({"result": []})
        if len(req.queries) > limits.max_queries:
            raise reject("queries", f"at most {limits.max_queries} queries per request, got {len(req.queries)}")
        queries = [q[: limits.max_query_chars] for q in req.queries]
        metrics.truncated_queries.inc(sum(len(q) > limits.max_query_chars for q in req.queries))
        k = limits.default_topk if req.topk is None or req.topk <= 0 else req.topk
        if k > limits.max_topk:
            raise reject("topk", f"must be at most {limits.max_topk}, got {k}")
        t0 = time.perf_counter()
        try:
            scores, ids = await state["batcher"].submit(queries, k)
        except Overloaded as exc:
            metrics.reject("overloaded")
            return JSONResponse({"detail": f"server busy: {exc}"}, status_code=429, headers={"Retry-After": f"{exc.retry_after_s:.0f}"})
        except Exception as exc:
            metrics.errors.inc()
            logger.exception("retrieval failed")
            raise HTTPException(status_code=500, detail=f"retrieval failed: {exc!r}")
        backend: Backend = state["backend"]
        result = []
        for row_scores, row_ids in zip(scores, ids):
            docs = []
            for s, hit in zip(row_scores.tolist(), row_ids.tolist()):
                doc = backend.document(hit)
                if doc is None:  # fewer hits than asked: never map -1 to a real passage
                    continue
                docs.append({"document": doc, "score": float(s)} if req.return_scores else doc)
            result.append(docs)
        metrics.observe_request(len(req.queries), time.perf_counter() - t0)
        return FastJSONResponse({"result": result})

    reasons = {401: "unauthorized", 413: "too_large", 408: "slow_body", 400: "invalid"}
    return RequestGuard(
        app,
        api_key=api_key,
        max_body_bytes=limits.max_body_bytes,
        body_timeout_s=limits.body_timeout_s,
        on_reject=lambda status: metrics.reject(reasons.get(status, str(status))),
    )
