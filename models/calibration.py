"""Calibrated fraud probabilities: Platt scaling of a candidate's raw scores, fit on validation
data (never the test window), carried with the logged model.

Why Platt (a logistic fit on the score's logit) rather than isotonic regression: it is strictly
increasing, so every ranking metric the gate judges (AUC ROC, AP, card precision@100) is exactly
the raw model's, while the probabilities of both families become comparable and a threshold
means the same thing across versions. Isotonic steps would tie transactions the model ranks
apart. Two numbers, stored as MLmodel metadata (``fraudflow_calibration``): nothing to unpickle.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

METADATA_KEY = "fraudflow_calibration"
_EPS = 1e-6


def _logit(scores: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(scores, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


class Calibration(BaseModel):
    """``p = sigmoid(slope * logit(score) + intercept)``, with where it was fit and how well."""

    method: str = "platt"
    slope: float
    intercept: float
    fitted_rows: int
    fitted_frauds: int

    def apply(self, scores: np.ndarray) -> np.ndarray:
        z = self.slope * _logit(scores) + self.intercept
        return 1.0 / (1.0 + np.exp(-z))


def fit_platt(y: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None) -> Calibration:
    """Fit on validation labels ``y`` and the raw scores of a model that did not train on them.
    ``weights`` (a sampled training window's ``SAMPLE_WEIGHT``) restore the real base rate.

    Raises:
        ValueError: ``y`` lacks one of the classes (nothing to fit).
    """
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(y).astype(int)
    if y.min() == y.max():
        raise ValueError("calibration needs both classes in its validation data")
    fit = LogisticRegression(C=1e6, max_iter=1000).fit(_logit(scores).reshape(-1, 1), y, sample_weight=weights)
    slope, intercept = float(fit.coef_[0, 0]), float(fit.intercept_[0])
    if slope <= 0:  # a model that ranks backwards on validation: refuse to invert it silently
        raise ValueError(f"calibration slope {slope:.3f} <= 0: the scores do not rank validation frauds higher")
    return Calibration(slope=slope, intercept=intercept, fitted_rows=len(y), fitted_frauds=int(y.sum()))


def brier_score(y: np.ndarray, p: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Mean squared error of the probabilities (lower is better), weighted if rows were sampled."""
    return float(np.average((np.asarray(p, dtype=np.float64) - np.asarray(y, dtype=np.float64)) ** 2, weights=weights))


def expected_calibration_error(
    y: np.ndarray, p: np.ndarray, bins: int = 10, weights: np.ndarray | None = None
) -> float:
    """Mean |observed fraud rate - mean probability| over equal-width probability bins,
    weighted by the bin's share of rows (of the rows' ``weights``, if rows were sampled)."""
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    w = np.ones_like(p) if weights is None else np.asarray(weights, dtype=np.float64)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            share = w[mask].sum() / w.sum()
            error += share * abs(np.average(y[mask], weights=w[mask]) - np.average(p[mask], weights=w[mask]))
    return float(error)
