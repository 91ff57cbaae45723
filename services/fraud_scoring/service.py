"""fraudflow's scoring service (BentoML 1.4): POST /score, POST /score_batch, GET /healthz.

The scoring itself is ``fraudflow.serving`` (scoring + routing; the same code runs in-process); this file only
wires it to HTTP, metrics and auth. See services/README.md for the API.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Annotated

import bentoml
import yaml
from pydantic import BaseModel, Field
from scoring_http import Guard, Metrics, quiet_validation_tracebacks

from fraudflow.serving.routing import RoutedScoring
from fraudflow.serving.scoring import DEFAULT_MODEL_URI, PACKED_PREFIX, ScoreResponse, Transaction
from fraudflow.settings import get_settings

MAX_BATCH = 1000


def packed_model_uri() -> str | None:
    """``bentoml:<model tag>`` when this code runs from a built Bento (its ``bento.yaml``, one
    folder up from ``src/``, names the packed model in the label ``model``), else None."""
    bento_yaml = Path(__file__).resolve().parent.parent / "bento.yaml"
    if not bento_yaml.is_file():
        return None
    labels = (yaml.safe_load(bento_yaml.read_text()) or {}).get("labels") or {}
    return f"{PACKED_PREFIX}{labels['model']}" if labels.get("model") else None


class BatchResponse(BaseModel):
    results: list[ScoreResponse]


@bentoml.service(
    name="fraud_scoring",
    workers=int(os.environ.get("FRAUDFLOW_SERVING_WORKERS", "1")),
    traffic={"timeout": 10},
    labels={"owner": "fraudflow", "project": "fraudflow"},
)
class FraudScoring:
    def __init__(self) -> None:
        # Served from a built Bento (`bentoml serve fraud_scoring:v<N>`): the model it packs,
        # nothing else. Served from this folder (fraudflow's live service): champion and, during
        # a rollout, challenger follow serving/deployment.json (fraudflow.serving.routing);
        # FRAUDFLOW_MODEL_URI only picks the model while no state exists yet.
        self.routing = RoutedScoring(
            get_settings(),
            default_model_uri=os.environ.get("FRAUDFLOW_MODEL_URI", DEFAULT_MODEL_URI),
            pinned_model_uri=packed_model_uri(),
        )
        self.features = self.routing.features
        self.metrics = Metrics()
        gc.collect()
        gc.freeze()  # start-up objects leave the GC's generations: shorter pauses under load

    @property
    def scorer(self):
        return self.routing.champion

    def __is_ready__(self) -> bool:
        return self.features.ready  # the model loaded in __init__, or the worker never started

    def health(self) -> dict:
        """``status`` is ``degraded`` (still answering, still 200) while answers fall back to
        default features or the deployment state could not be applied; the reasons say why."""
        available = self.features.probe()
        routing = self.routing.health()
        reasons = [] if available else [self.features.error or "feature store unavailable"]
        if routing["deployment_error"]:
            reasons.append(f"deployment error: {routing['deployment_error']}")
        return {
            "status": "degraded" if reasons else "ok",
            "degraded_reasons": reasons,
            **routing,
            "feature_store": "ok" if available else "unavailable",
        }

    @bentoml.on_shutdown
    def flush_prediction_log(self) -> None:
        """A clean stop loses no logged prediction (and finishes pending shadow scores)."""
        self.routing.close()

    def _score(self, transactions: list[Transaction], endpoint: str) -> list[ScoreResponse]:
        responses = self.routing.score(transactions, endpoint)
        for r in responses:
            self.metrics.requests.labels(endpoint, r.served_by).inc()
            self.metrics.score.labels(r.model_version).observe(r.fraud_probability)
            if r.degraded_reason:
                for part in r.degraded_reason.split("; "):
                    self.metrics.degraded.labels(part).inc()
        return responses

    @bentoml.api
    def score(self, transaction: Transaction, /) -> ScoreResponse:
        """Score one transaction with the served model."""
        return self._score([transaction], "/score")[0]

    @bentoml.api
    def score_batch(
        self, transactions: Annotated[list[Transaction], Field(min_length=1, max_length=MAX_BATCH)]
    ) -> BatchResponse:
        """Score up to 1000 transactions: one feature lookup and one model call."""
        return BatchResponse(results=self._score(transactions, "/score_batch"))


FraudScoring.add_asgi_middleware(Guard, service=bentoml.get_current_service, settings=get_settings)
quiet_validation_tracebacks()
