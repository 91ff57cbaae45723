"""What one scored request answers and logs: per-transaction routing and scores, the
responses (each judged at the threshold of the model that served it) and the prediction-log rows.

Kept apart from the routing so the row shape the rollout checks read is defined in one place.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd

from fraudflow.features.compute import MODEL_INPUTS
from fraudflow.serving.scoring import Scorer, ScoreResponse, Transaction


class Answer:
    """One request's routing and scores, per transaction; the scoring steps fill it in.

    NaN in ``champion_scores`` / ``challenger_scores`` means that model did not score the row.
    """

    __slots__ = (
        "to_challenger",
        "to_champion",
        "served_by",
        "scores",
        "champion_scores",
        "challenger_scores",
        "errors",
        "champion_ms",
        "challenger_ms",
    )

    def __init__(self, to_challenger: np.ndarray) -> None:
        n = len(to_challenger)
        self.to_challenger = to_challenger
        self.to_champion = ~to_challenger
        self.served_by = np.array(["champion"] * n, dtype=object)
        self.scores = np.empty(n)
        self.champion_scores = np.full(n, np.nan)
        self.challenger_scores = np.full(n, np.nan)
        self.errors: list[str | None] = [None] * n
        self.champion_ms = 0.0
        self.challenger_ms = 0.0


def responses(
    transactions: list[Transaction],
    answer: Answer,
    request_id: str,
    champion: Scorer,
    challenger: Scorer | None,
    versions: dict[str, str | None],
    degraded: np.ndarray,
    reasons: list[str | None],
) -> list[ScoreResponse]:
    """The answers, each judged against the threshold of the model that served it."""
    thresholds = {"champion": champion.threshold, "challenger": challenger.threshold if challenger else 0.5}
    scores, served_by = answer.scores, answer.served_by
    return [
        ScoreResponse.model_construct(
            transaction_id=t.transaction_id,
            fraud_probability=float(scores[i]),
            is_fraud=bool(scores[i] >= thresholds[served_by[i]]),
            model_name=champion.model_name,
            model_version=versions[served_by[i]],
            served_by=served_by[i],
            request_id=request_id,
            degraded=bool(degraded[i]),
            degraded_reason=reasons[i],
        )
        for i, t in enumerate(transactions)
    ]


def log_records(
    transactions: list[Transaction],
    features: pd.DataFrame,
    answer: Answer,
    responses: list[ScoreResponse],
    request_id: str,
    endpoint: str,
    versions: dict[str, str | None],
    latency_ms: float,
    degraded: np.ndarray,
    reasons: list[str | None],
) -> list[dict[str, Any]]:
    """One prediction-log row per transaction: the request, its model inputs, both models'
    scores (NaN -> None where a model did not score it) and the timings."""
    scores, served_by, errors, to_challenger = answer.scores, answer.served_by, answer.errors, answer.to_challenger
    champion_scores, challenger_scores = answer.champion_scores, answer.challenger_scores
    champion_ms, challenger_ms = answer.champion_ms, answer.challenger_ms
    return [
        {
            "request_id": request_id,
            "logged_at": dt.datetime.now(dt.UTC),
            "endpoint": endpoint,
            "transaction_id": str(t.transaction_id),
            "tx_datetime": t.tx_datetime,
            "customer_id": str(t.customer_id),
            "terminal_id": str(t.terminal_id),
            "tx_amount": t.tx_amount,
            "features": dict(zip(MODEL_INPUTS, row, strict=True)),
            "served_by": served_by[i],
            "model_version": versions[served_by[i]],
            "score": float(scores[i]),
            "is_fraud": responses[i].is_fraud,
            "champion_version": versions["champion"],
            "champion_score": None if np.isnan(champion_scores[i]) else float(champion_scores[i]),
            "challenger_version": versions["challenger"],
            "challenger_score": None if np.isnan(challenger_scores[i]) else float(challenger_scores[i]),
            "challenger_error": errors[i],
            "champion_latency_ms": champion_ms,
            "challenger_latency_ms": challenger_ms if to_challenger[i] else None,
            "latency_ms": latency_ms,
            "degraded": bool(degraded[i]),
            "degraded_reason": reasons[i],
        }
        for i, (t, row) in enumerate(zip(transactions, features.to_numpy().tolist(), strict=True))
    ]
