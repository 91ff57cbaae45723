"""Stage checks: may a challenger move from shadow to canary, and from canary to production?

What a fraud team needs to know before a model answers customers is not whether two models'
score distributions look alike (families are calibrated differently; the traffic mix moves
any score histogram), but:

- **online behaves as offline**: the challenger's live scores against its own held-out test
  scores, the ones the gate certified (PSI);
- **the operation can absorb it**: the share of transactions each model flags at its own
  operating threshold; investigators have fixed capacity, so the challenger's alert volume
  must not be confidently outside a relative band of the champion's (the 90% interval of the
  ratio, since a few hundred requests flag only a handful);
- **it works**: errors (a challenger failure counts against the challenger even when the
  champion covered the answer) and p99 latency.

Decision agreement, top-k overlap and the champion-vs-challenger score PSI are reported
beside the verdict, not judged. Each check reads the prediction-log rows the router wrote
for its stage and returns a typed verdict with every threshold it used, so a decision can be
read without the code. Thresholds are settings (``FRAUDFLOW_ROLLOUT_*``).
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel

if TYPE_CHECKING:
    from fraudflow.settings import Settings


class Thresholds(BaseModel):
    max_error_rate: float = 0.01
    max_p99_latency_ms: float = 50.0
    max_offline_psi: float = 0.25  # challenger live scores vs its own held-out test scores
    alert_volume_band: float = 1.5  # challenger flagged share / champion's within [1/band, band]
    min_requests: int = 200  # requests the challenger scored (shadow)
    min_canary_requests: int = 100  # requests routed to the challenger (canary)

    @classmethod
    def from_settings(cls, settings: Settings) -> Thresholds:
        return cls(
            max_error_rate=settings.rollout_max_error_rate,
            max_p99_latency_ms=settings.rollout_max_p99_latency_ms,
            max_offline_psi=settings.rollout_max_offline_psi,
            alert_volume_band=settings.rollout_alert_volume_band,
            min_requests=settings.rollout_min_shadow_requests,
            min_canary_requests=settings.rollout_min_canary_requests,
        )


class StageCheck(BaseModel):
    stage: Literal["shadow", "canary"]
    passed: bool
    requests: int
    checks: dict[str, dict[str, Any]]
    reported: dict[str, float | None] = {}  # shown with the decision, not judged
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


class VolumeRatio(BaseModel):
    """Challenger's flagged share over the champion's, with its confidence interval."""

    ratio: float
    lower: float
    upper: float
    challenger_flags: int
    champion_flags: int


def alert_volume_ratio(challenger_flags: pd.Series, champion_flags: pd.Series, confidence: float = 0.90) -> VolumeRatio:
    """The ratio of flagged shares and its interval (log-ratio normal approximation, each count
    +0.5 so an empty side stays finite). A few hundred requests flag a handful of transactions:
    4 against 8 alerts is a ratio of 2 that means nothing, so the check judges the interval,
    not the point (see :func:`_volume_check`)."""
    a, n1 = challenger_flags.astype(bool).sum() + 0.5, len(challenger_flags) + 0.5
    b, n2 = champion_flags.astype(bool).sum() + 0.5, len(champion_flags) + 0.5
    ratio = (a / n1) / (b / n2)
    spread = NormalDist().inv_cdf(0.5 + confidence / 2) * math.sqrt(1 / a - 1 / n1 + 1 / b - 1 / n2)
    return VolumeRatio(
        ratio=float(ratio),
        lower=float(ratio * math.exp(-spread)),
        upper=float(ratio * math.exp(spread)),
        challenger_flags=int(a - 0.5),
        champion_flags=int(b - 0.5),
    )


def _volume_check(challenger_flags: pd.Series, champion_flags: pd.Series, band: float) -> dict[str, Any]:
    """Fails when the challenger's alert volume is confidently outside [1/band, band] of the
    champion's: the whole 90% interval of the ratio beyond the band."""
    volume = alert_volume_ratio(challenger_flags, champion_flags)
    outside = volume.lower > band or volume.upper < 1 / band
    check = _check("alert_volume_ratio", volume.ratio, [round(1 / band, 6), band], not outside)
    return check | {
        "interval": [round(volume.lower, 4), round(volume.upper, 4)],
        "flags": [volume.challenger_flags, volume.champion_flags],
    }


def top_k_overlap(champion: np.ndarray, challenger: np.ndarray, share: float = 0.01) -> float:
    """Share of the champion's top ``share`` of requests that are also in the challenger's."""
    k = max(1, int(round(len(champion) * share)))
    if len(champion) == 0:
        return float("nan")
    return len(set(np.argsort(-champion)[:k]) & set(np.argsort(-challenger)[:k])) / k


def _check(name: str, value: float, threshold: float | list[float], ok: bool) -> dict[str, Any]:
    return {
        "name": name,
        "value": None if np.isnan(value) else round(float(value), 6),
        "threshold": threshold,
        "passed": bool(ok),
    }


def _errors(frame: pd.DataFrame) -> pd.Series:
    return frame["challenger_error"].fillna("").astype(str).ne("")


def _p99(values: pd.Series) -> float:
    values = pd.to_numeric(values, errors="coerce").dropna()
    return float(np.percentile(values, 99)) if len(values) else float("nan")


def _judged(
    stage, frame: pd.DataFrame, needed: int, checks: list[dict[str, Any]], reported: dict[str, float]
) -> StageCheck:
    enough = _check("requests", len(frame), needed, len(frame) >= needed)
    checks = [enough, *checks]
    failed = [c for c in checks if not c["passed"]]
    reason = (
        "all checks passed"
        if not failed
        else "; ".join(f"{c['name']} {c['value']} vs {c['threshold']}" for c in failed)
    )
    return StageCheck(
        stage=stage,
        passed=not failed,
        requests=len(frame),
        checks={c["name"]: c for c in checks},
        reported={k: None if v is None or np.isnan(v) else round(float(v), 6) for k, v in reported.items()},
        reason=reason,
    )


def _behaviour_checks(
    live_scores: np.ndarray,
    offline_scores: np.ndarray | None,
    challenger_flags: pd.Series,
    champion_flags: pd.Series,
    t: Thresholds,
) -> list[dict[str, Any]]:
    """Online-as-offline PSI (when the version's test scores are known) and alert volume."""
    checks = []
    if offline_scores is not None and len(offline_scores):
        psi = population_stability_index(offline_scores, live_scores)
        checks.append(_check("offline_psi", psi, t.max_offline_psi, psi <= t.max_offline_psi))
    checks.append(_volume_check(challenger_flags, champion_flags, t.alert_volume_band))
    return checks


def shadow_check(
    predictions: pd.DataFrame, thresholds: Thresholds | None = None, *, offline_scores: np.ndarray | None = None
) -> StageCheck:
    """Judge the challenger from the requests it scored beside the champion.

    Args:
        predictions: Prediction-log rows of the shadow window (as the router writes them).
        thresholds: The rollout thresholds (default: the built-in defaults).
        offline_scores: The challenger's scores on its held-out test window, if known.
    """
    t = thresholds or Thresholds()
    frame = predictions[predictions["challenger_version"].notna()]
    errors = _errors(frame)
    scored = frame[~errors & frame["challenger_score"].notna()]
    error_rate = float(errors.mean()) if len(frame) else float("nan")
    p99 = _p99(scored["challenger_latency_ms"])
    champion, challenger = scored["champion_score"].to_numpy(float), scored["challenger_score"].to_numpy(float)
    checks = [
        _check("error_rate", error_rate, t.max_error_rate, error_rate <= t.max_error_rate),
        _check("p99_latency_ms", p99, t.max_p99_latency_ms, p99 <= t.max_p99_latency_ms),
        *_behaviour_checks(challenger, offline_scores, scored["challenger_is_fraud"], scored["is_fraud"], t),
    ]
    agreement = scored["challenger_is_fraud"].astype(bool).eq(scored["is_fraud"].astype(bool)).mean()
    reported = {
        "decision_agreement": float(agreement) if len(scored) else float("nan"),
        "top_1pct_overlap": top_k_overlap(champion, challenger),
        "champion_vs_challenger_psi": population_stability_index(champion, challenger),
    }
    return _judged("shadow", frame, t.min_requests, checks, reported)


def canary_check(
    predictions: pd.DataFrame, thresholds: Thresholds | None = None, *, offline_scores: np.ndarray | None = None
) -> StageCheck:
    """Judge the challenger on its own share of customers during the canary window.

    The challenger's share is every request routed to it: the ones it answered and the ones
    where it failed and the champion answered instead (logged ``served_by="champion"`` with a
    ``challenger_error``). Counting only the answered ones would hide every failure.
    """
    t = thresholds or Thresholds()
    errors = _errors(predictions)
    routed = predictions[(predictions["served_by"] == "challenger") | errors]
    answered = predictions[predictions["served_by"] == "challenger"]
    champion_side = predictions[(predictions["served_by"] == "champion") & ~errors]
    error_rate = float(_errors(routed).mean()) if len(routed) else float("nan")
    p99 = _p99(answered["latency_ms"])
    live = answered["score"].to_numpy(float)
    checks = [
        _check("error_rate", error_rate, t.max_error_rate, error_rate <= t.max_error_rate),
        _check("p99_latency_ms", p99, t.max_p99_latency_ms, p99 <= t.max_p99_latency_ms),
        *_behaviour_checks(live, offline_scores, answered["is_fraud"], champion_side["is_fraud"], t),
    ]
    reported = {
        "champion_vs_challenger_psi": population_stability_index(champion_side["score"].to_numpy(float), live),
        "champion_p99_latency_ms": _p99(champion_side["latency_ms"]),
    }
    return _judged("canary", routed, t.min_canary_requests, checks, reported)
