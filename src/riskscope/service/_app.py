"""The HTTP API (FastAPI): ``POST /v1/score``, ``GET /healthz``, ``/readyz``, ``/metrics``, ``/openapi.json``.

Every answer that is not a 200 is a JSON ``{"error": {"code", "message", "field"?}}`` with a 4xx or
5xx status; a 500 would be a bug. The request body is read and checked by hand (size, time,
JSON, types, limits) before anything touches the model.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from typing import Literal, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from .._version import __version__
from ._batching import MicroBatcher, QueueFull
from ._config import ServeConfig
from ._engine import Engine
from ._limits import ApiError, ApiKeys, RateLimiter, read_body, request_key
from ._metrics import Metrics

log = logging.getLogger("riskscope.service")
PATHS = ("/v1/score", "/healthz", "/readyz", "/metrics", "/openapi.json")


# --- the schema ---------------------------------------------------------------------------------


class ScoreRequest(BaseModel):
    """Texts to score, 1 to the server's ``max_texts``."""

    model_config = ConfigDict(extra="forbid")
    texts: list[StrictStr] = Field(..., min_length=1, description="texts to score (non-empty strings)")


class Window(BaseModel):
    start: int = Field(description="first token index (into the text's token ids)")
    end: int = Field(description="token index after the last")
    text: str
    log_ppl: Optional[float] = Field(description="mean token negative log-likelihood of the span (nats)")


class PerplexityVerdict(BaseModel):
    flagged: bool = Field(description="the worst window is at or over the length bin's threshold")
    score: Optional[float] = Field(description="mean NLL of the worst window (nats)")
    threshold: Optional[float]
    log_ppl: Optional[float] = Field(description="mean NLL of the whole text")
    tokens: int
    worst_window: Optional[Window]
    anomalous_spans: list[Window] = Field(description="merged windows at or over the threshold")


class TextResult(BaseModel):
    index: int
    risk_score: float = Field(description="the probe's probability that the text is risky")
    risky: bool = Field(description="risk_score >= threshold")
    threshold: float
    tokens: int = Field(description="tokens of the text as sent")
    tokens_scored: int
    truncated: bool = Field(description="the text was cut to the server's token limit")
    perplexity: Optional[PerplexityVerdict] = Field(None, description="present when the filter is on")


class ModelInfo(BaseModel):
    id: Optional[str]
    weights_hash: Optional[str]


class ProbeInfo(BaseModel):
    version: str = Field(description="sha256 over the probe bundle's files")
    hook: str
    layer: int
    positions: str | list[int]
    threshold: float


class ScoreResponse(BaseModel):
    model: ModelInfo
    probe: ProbeInfo
    perplexity: Optional[dict] = None
    results: list[TextResult]
    truncated: int = Field(description="how many texts were cut to the token limit")


class ErrorBody(BaseModel):
    code: str
    message: str
    field: Optional[str] = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class Health(BaseModel):
    status: Literal["ok", "loading", "ready", "failed"]
    error: Optional[str] = None


_ERRORS = {s: {"model": ErrorResponse} for s in (400, 401, 408, 413, 422, 429, 503, 504)}


# --- the app ------------------------------------------------------------------------------------


def create_app(config: ServeConfig, engine: Engine | None = None) -> FastAPI:
    """The ASGI app. ``engine`` defaults to ``Engine(config)`` (its files are checked now, the model loads
    in the worker thread once the server starts)."""
    engine = engine or Engine(config)
    keys = ApiKeys.load(config.api_key_file) if config.api_key_file else None
    limiter = RateLimiter(config.rate_limit, config.rate_burst)
    metrics = Metrics()

    def threads() -> None:
        if config.threads:
            import torch

            torch.set_num_threads(config.threads)

    def on_batch(n_texts: int, n_requests: int, seconds: float) -> None:
        metrics.batch_texts.observe(n_texts)
        metrics.batch_requests.observe(n_requests)
        metrics.batch_seconds.observe(seconds)
        metrics.texts.inc(n_texts)

    batcher = MicroBatcher(engine.score, max_texts=config.max_batch, max_wait_s=config.max_wait_ms / 1000,
                           enabled=config.batching, max_queue=config.max_queue, on_batch=on_batch,
                           initializer=threads)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        if config.threads:
            await batcher.call(threads)

        async def load() -> None:
            t0 = time.perf_counter()
            try:
                await batcher.call(engine.load)
            except Exception:
                log.error("riskscope serve: the model failed to load: %s", engine.error)
                return
            metrics.ready.set(1)
            log.info("riskscope serve: ready (%s, %.1f s)", engine.describe()["model"]["id"], time.perf_counter() - t0)

        loader = asyncio.get_running_loop().create_task(load())
        try:
            yield
        finally:
            loader.cancel()
            await batcher.stop()

    app = FastAPI(title="riskscope", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Risk scores of texts from a linear probe inside an open-weight model, with an optional "
                              "windowed-perplexity filter for adversarial (gibberish) suffixes.")
    app.state.engine, app.state.batcher, app.state.metrics = engine, batcher, metrics

    # --- errors: always a JSON body, never a bare 500 ---

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        metrics.rejections.labels(reason=e.code).inc()
        if e.code == "slow_client":
            metrics.slow_clients.inc()
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
        return JSONResponse({"error": {"code": code, "message": str(e.detail)}}, status_code=e.status_code,
                            headers=getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError):
        return JSONResponse({"error": {"code": "invalid", "message": str(e.errors()[:1])}}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, e: Exception):
        log.exception("riskscope serve: internal error")
        return JSONResponse({"error": {"code": "internal", "message": f"{type(e).__name__}: {e}"}}, status_code=500)

    app.add_middleware(_Count, metrics=metrics)

    # --- endpoints ---

    @app.get("/healthz", response_model=Health, response_model_exclude_none=True, summary="The process is up")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", response_model=Health, response_model_exclude_none=True, responses={503: {"model": Health}},
             summary="The model is loaded (503 until then)")
    async def readyz():
        if engine.ready:
            return {"status": "ready"}
        return JSONResponse({"status": engine.state, "error": engine.error}, status_code=503)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prom():
        metrics.queue.set(batcher.queued_texts)
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.post("/v1/score", summary="Risk score of each text", responses={200: {"model": ScoreResponse}, **_ERRORS},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": ScoreRequest.model_json_schema()}}}})
    async def score(request: Request):
        t0 = time.monotonic()
        key = _authorise(request, keys)
        client = key.name if key else (request.client.host if request.client else "unknown")
        wait = limiter.allow(client, key.rate if key else None, key.burst if key else None)
        if wait > 0:
            raise ApiError(429, "rate_limited", f"over the rate limit; retry in {wait:.2f} s",
                           headers={"Retry-After": str(max(1, int(wait + 0.999)))})
        if not engine.ready:
            raise ApiError(503, "not_ready", f"the model is {engine.state}" + (f": {engine.error}" if engine.error
                                                                              else "; retry when /readyz says ready"),
                           headers={"Retry-After": "1"})
        try:
            body = await read_body(request, config.max_body_bytes, config.body_timeout_s)
        except ClientDisconnect:
            metrics.dropped.inc()
            return Response(status_code=499)
        texts = _parse(body, config.max_texts)
        jobs = engine.prepare(texts)
        results = await _await_results(request, batcher, jobs, t0 + config.request_timeout_s, metrics)
        if results is None:
            return Response(status_code=499)  # the client is gone; nobody reads this
        rows = []
        for job, r in zip(jobs, results):
            rows.append({"index": job.index, **r, "tokens": job.tokens, "tokens_scored": len(job.ids),
                         "truncated": job.truncated})
            if r["risky"]:
                metrics.flagged.labels(scorer="probe").inc()
            if r.get("perplexity", {}).get("flagged"):
                metrics.flagged.labels(scorer="perplexity").inc()
        n_cut = sum(j.truncated for j in jobs)
        if n_cut:
            metrics.truncated.inc(n_cut)
        return JSONResponse({**engine.describe(), "results": rows, "truncated": n_cut})

    return app


def _authorise(request: Request, keys: ApiKeys | None):
    if keys is None:
        return None
    key = keys.match(request_key(request.headers))
    if key is None:
        raise ApiError(401, "unauthorized", "a valid API key is needed: send 'Authorization: Bearer KEY'",
                       headers={"WWW-Authenticate": "Bearer"})
    return key


def _parse(body: bytes, max_texts: int) -> list[str]:
    """The texts of a request body, or a 400 (not JSON) / 413 (too many texts) / 422 (wrong shape)."""
    try:
        req = ScoreRequest.model_validate_json(body)
    except ValidationError as e:
        err = e.errors()[0]
        if err["type"] in ("json_invalid", "json_type"):
            raise ApiError(400, "bad_json", f"the body is not valid JSON: {err['msg']}") from None
        where = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p))
                        for i, p in enumerate(err["loc"])) or "body"
        raise ApiError(422, "invalid", f"{where}: {err['msg']}; send {{\"texts\": [\"...\", ...]}}", where) from None
    if len(req.texts) > max_texts:
        raise ApiError(413, "too_many_texts", f"{len(req.texts)} texts in one request; the limit is {max_texts}",
                       "texts")
    for i, t in enumerate(req.texts):
        if not t.strip():
            raise ApiError(422, "empty_text", f"texts[{i}] is empty", f"texts[{i}]")
    return req.texts


async def _disconnected(request: Request) -> None:
    """Return once the client has gone (its body has been read, so the next message is a disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _await_results(request: Request, batcher: MicroBatcher, jobs, deadline: float, metrics: Metrics):
    """The batch results of ``jobs``; None when the client disconnected first; a 504 past ``deadline``."""
    work = asyncio.ensure_future(batcher.submit(jobs))
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({work, gone}, timeout=max(deadline - time.monotonic(), 0.0),
                                     return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (work, gone):
            if not t.done():
                t.cancel()
    if work in done:
        try:
            return work.result()
        except QueueFull as e:
            raise ApiError(503, "overloaded", str(e), headers={"Retry-After": "1"}) from None
    if gone in done:
        metrics.dropped.inc()
        return None
    raise ApiError(504, "timeout", "no answer within the request timeout")


class _Count:
    """ASGI middleware: count and time every HTTP request by path and status (also 500s and 499s)."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            path = scope.get("path", "")
            path = path if path in PATHS else "other"
            self.metrics.requests.labels(path=path, status=str(status[0])).inc()
            self.metrics.latency.labels(path=path).observe(time.perf_counter() - t0)


__all__ = ["ErrorResponse", "ScoreRequest", "ScoreResponse", "TextResult", "create_app"]
