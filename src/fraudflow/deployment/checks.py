"""Stage checks: may a challenger move from shadow to canary, and from canary to production?

Each check reads the prediction log rows of its stage and returns a typed verdict with every
threshold it used, so a decision can be read without the code.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel


class Thresholds(BaseModel):
    max_error_rate: float = 0.01
    max_p99_latency_ms: float = 50.0
    max_score_psi: float = 0.25
    min_decision_agreement: float = 0.95
    min_requests: int = 200  # requests the challenger scored (shadow) or answered (canary)
    min_canary_requests: int = 100


class StageCheck(BaseModel):
    stage: Literal["shadow", "canary"]
    passed: bool
    requests: int
    checks: dict[str, dict[str, Any]]
    reason: str


def population_stability_index(expected: np.ndarray, actual: np.ndarray, bins: int = 10) -> float:
    """PSI of ``actual`` against ``expected`` on expected's quantile bins (0 = identical)."""
    expected, actual = np.asarray(expected, float), np.asarray(actual, float)
    if len(expected) == 0 or len(actual) == 0:
        return float("nan")
    edges = np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1)))
    edges[0], edges[-1] = -np.inf, np.inf
    e = np.histogram(expected, edges)[0] / len(expected)
    a = np.histogram(actual, edges)[0] / len(actual)
    e, a = np.clip(e, 1e-4, None), np.clip(a, 1e-4, None)
    return float(np.sum((a - e) * np.log(a / e)))


def _check(name: str, value: float, threshold: float, ok: bool) -> dict[str, Any]:
    return {
        "name": name,
        "value": None if np.isnan(value) else round(float(value), 6),
        "threshold": threshold,
        "passed": bool(ok),
    }


def _verdict(stage, frame: pd.DataFrame, checks: list[dict[str, Any]], t: Thresholds) -> StageCheck:
    needed = t.min_requests if stage == "shadow" else t.min_canary_requests
    enough = _check("requests", len(frame), needed, len(frame) >= needed)
    checks = [enough, *checks]
    failed = [c for c in checks if not c["passed"]]
    reason = (
        "all checks passed"
        if not failed
        else "; ".join(f"{c['name']} {c['value']} vs {c['threshold']}" for c in failed)
    )
    return StageCheck(
        stage=stage, passed=not failed, requests=len(frame), checks={c["name"]: c for c in checks}, reason=reason
    )


def shadow_check(predictions: pd.DataFrame, thresholds: Thresholds | None = None) -> StageCheck:
    """Judge the challenger from shadow-scored requests: errors, latency, score drift, agreement."""
    t = thresholds or Thresholds()
    frame = predictions[predictions["challenger_version"].notna()]
    errors = frame["challenger_error"].fillna("").astype(str).ne("")
    scored = frame[~errors]
    p99 = float(np.percentile(scored["challenger_latency_ms"], 99)) if len(scored) else float("nan")
    psi = population_stability_index(scored["champion_score"], scored["challenger_score"])
    # Each model decides with its own threshold (logged as challenger_is_fraud by the service).
    decided = scored["challenger_is_fraud"] if "challenger_is_fraud" in scored else scored["challenger_score"] >= 0.5
    agree = float(decided.astype(bool).eq(scored["is_fraud"].astype(bool)).mean()) if len(scored) else 0.0
    error_rate = float(errors.mean()) if len(frame) else float("nan")
    return _verdict(
        "shadow",
        frame,
        [
            _check("error_rate", error_rate, t.max_error_rate, error_rate <= t.max_error_rate),
            _check("p99_latency_ms", p99, t.max_p99_latency_ms, p99 <= t.max_p99_latency_ms),
            _check("score_psi", psi, t.max_score_psi, psi <= t.max_score_psi),
            _check("decision_agreement", agree, t.min_decision_agreement, agree >= t.min_decision_agreement),
        ],
        t,
    )


def canary_check(predictions: pd.DataFrame, thresholds: Thresholds | None = None) -> StageCheck:
    """Judge the challenger from the requests it answered during the canary window."""
    t = thresholds or Thresholds()
    mine = predictions[predictions["served_by"] == "challenger"]
    theirs = predictions[predictions["served_by"] == "champion"]
    errors = mine["challenger_error"].fillna("").astype(str).ne("")
    error_rate = float(errors.mean()) if len(mine) else float("nan")
    p99 = float(np.percentile(mine["latency_ms"], 99)) if len(mine) else float("nan")
    psi = population_stability_index(theirs["score"], mine["score"])
    return _verdict(
        "canary",
        mine,
        [
            _check("error_rate", error_rate, t.max_error_rate, error_rate <= t.max_error_rate),
            _check("p99_latency_ms", p99, t.max_p99_latency_ms, p99 <= t.max_p99_latency_ms),
            _check("score_psi", psi, t.max_score_psi, psi <= t.max_score_psi),
        ],
        t,
    )
