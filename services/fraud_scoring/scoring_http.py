"""HTTP concerns of the scoring service that are not BentoML's: fraudflow's Prometheus
metrics and one pure-ASGI middleware (bearer token, JSON-only bodies, GET /healthz as JSON,
latency and error metrics). service.py adds it with ``Service.add_asgi_middleware``.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import anyio
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

    def __init__(self, app, *, service: Callable[[], Any], token: Callable[[], str | None]) -> None:
        # ``service`` returns the live service instance (it exists only after start-up); the
        # token is read when the worker builds its app, not when the service module is imported.
        self.app, self.service, self.token = app, service, (token() or "").encode() or None

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
            else:
                await self.app(scope, receive, watch)
        finally:
            if path in API_PATHS:
                service = self.service()
                service.metrics.latency.labels(path, service.scorer.version).observe(time.perf_counter() - started)
                if status >= 400:
                    service.metrics.errors.labels(path, str(status)).inc()


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


async def _json(send, status: int, body: dict) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def quiet_validation_tracebacks() -> None:
    logging.getLogger("bentoml._internal.server.http_app").addFilter(_NoValidationTracebacks())
