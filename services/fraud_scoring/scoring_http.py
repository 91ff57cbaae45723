"""HTTP concerns of the scoring service that are not BentoML's: fraudflow's Prometheus
metrics and one pure-ASGI middleware (bearer token, JSON-only bodies, a body size limit, a
bound on requests in flight, GET /healthz as JSON, latency and error metrics). service.py adds
it with ``Service.add_asgi_middleware``.

Why the limits live here: BentoML reads a whole body before validating it (a 200 MB POST is
buffered per worker), and its own ``traffic.max_concurrency`` answers 429 without
``Retry-After``; overload here is the service's state, not the client's fault, so 503 with
``Retry-After`` tells a load balancer or client to come back.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import anyio
from api_docs import document_errors
from pydantic import ValidationError

API_PATHS = ("/score", "/score_batch")
OPEN_PATHS = ("/livez", "/readyz", "/healthz", "/metrics")  # never behind the bearer token


class Metrics:
    """fraudflow's own Prometheus metrics; BentoML's /metrics exports them with its own (the
    worker sets PROMETHEUS_MULTIPROC_DIR before this module is imported)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        self.latency = Histogram(
            "fraudflow_request_duration_seconds", "Scoring request latency", ["endpoint", "model_version"]
        )
        buckets = [i / 20 for i in range(1, 21)]
        self.score = Histogram(
            "fraudflow_fraud_score", "Fraud probabilities served", ["model_version"], buckets=buckets
        )
        self.degraded = Counter("fraudflow_degraded_total", "Transactions scored with default features", ["reason"])
        self.errors = Counter("fraudflow_errors_total", "Scoring requests answered 4xx/5xx", ["endpoint", "status"])
        self.requests = Counter("fraudflow_requests_total", "Scoring requests answered", ["endpoint", "served_by"])


class Guard:
    """ASGI middleware: bearer token, GET /healthz as JSON, latency and error metrics."""

    def __init__(
        self,
        app,
        *,
        service: Callable[[], Any],
        settings: Callable[[], Any],
    ) -> None:
        # ``service`` returns the live service instance (it exists only after start-up); the
        # settings are read when the worker builds its app, not when the module is imported.
        config = settings()
        self.app, self.service, self.token = app, service, (config.api_token or "").encode() or None
        self.max_body, self.max_in_flight = config.serving_max_body_bytes, config.serving_max_in_flight
        self.amount_ceiling = config.amount_ceiling
        self.in_flight = 0  # this worker's API requests being answered (one event loop: no lock)
        self.docs: dict | None = None

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path == "/healthz" and scope["method"] == "GET":
            return await _json(send, 200, await anyio.to_thread.run_sync(self.service().health))
        if scope["type"] != "http" or path in OPEN_PATHS:
            return await self.app(scope, receive, send)
        status, started = 500, time.perf_counter()

        async def watch(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            headers = dict(scope["headers"])
            if self.token and not _bearer_ok(headers.get(b"authorization", b""), self.token):
                await _json(watch, 401, {"error": "missing or invalid bearer token"})
            elif path in API_PATHS and not _json_body(headers.get(b"content-type", b"application/json")):
                await _json(watch, 415, {"error": "content-type must be application/json", "field": "content-type"})
            elif path in API_PATHS and _declared_length(headers) > self.max_body:
                await _json(watch, 413, self._too_large())
            elif path in API_PATHS and self.in_flight >= self.max_in_flight:
                limit = self.max_in_flight
                busy = {"error": f"more than {limit} requests in flight; retry", "limit": limit}
                await _json(watch, 503, busy, retry_after=1)
            elif path in API_PATHS:
                self.in_flight += 1
                try:
                    await self._limited(scope, receive, watch)
                finally:
                    self.in_flight -= 1
            elif path == "/docs.json" and scope["method"] == "GET":
                await self._docs(scope, receive, watch)
            else:
                await self.app(scope, receive, watch)
        finally:
            if path in API_PATHS:
                service = self.service()
                service.metrics.latency.labels(path, service.scorer.version).observe(time.perf_counter() - started)
                if status >= 400:
                    service.metrics.errors.labels(path, str(status)).inc()

    async def _docs(self, scope, receive, send) -> None:
        """BentoML's OpenAPI document with the error answers documented (api_docs), built once."""
        if self.docs is None:
            parts: list[bytes] = []
            head: dict = {}

            async def keep(message) -> None:
                if message["type"] == "http.response.start":
                    head.update(message)
                else:
                    parts.append(message.get("body", b""))

            await self.app(scope, receive, keep)
            if head.get("status") != 200:
                return await _json(send, head.get("status", 500), {"error": b"".join(parts).decode(errors="replace")})
            self.docs = document_errors(json.loads(b"".join(parts)), API_PATHS, amount_ceiling=self.amount_ceiling)
        await _json(send, 200, self.docs)

    def _too_large(self) -> dict:
        return {"error": f"request body larger than {self.max_body} bytes", "field": "body", "limit": self.max_body}

    async def _limited(self, scope, receive, send) -> None:
        """Run the app, but stop reading a body (chunked, or longer than declared) at the limit:
        the app sees a disconnect and the client gets 413, whatever the app would have said."""
        received, too_large, answered = 0, False, False

        async def limited_receive():
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    too_large = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message) -> None:
            nonlocal answered
            if too_large:
                if not answered:
                    answered = True
                    await _json(send, 413, self._too_large())
                return
            answered = answered or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not too_large:
                raise
        if too_large and not answered:
            await _json(send, 413, self._too_large())


def _declared_length(headers: dict) -> int:
    value = headers.get(b"content-length", b"0")
    return int(value) if value.isdigit() else 0


def _bearer_ok(header: bytes, token: bytes) -> bool:
    scheme, _, value = header.partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(value.strip(), token)


def _json_body(content_type: bytes) -> bool:
    # BentoML would parse other types with other serdes (multipart: a 500 on a bad boundary).
    media = content_type.split(b";")[0].strip().lower()
    return media == b"application/json" or media.endswith(b"+json")


class _NoValidationTracebacks(logging.Filter):
    """BentoML logs every 400 (pydantic ValidationError) as an ERROR with a traceback that
    echoes the request's values; the access log line and fraudflow_errors_total suffice."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ValidationError))


async def _json(send, status: int, body: dict, *, retry_after: int | None = None) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def quiet_validation_tracebacks() -> None:
    logging.getLogger("bentoml._internal.server.http_app").addFilter(_NoValidationTracebacks())
