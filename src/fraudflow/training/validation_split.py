"""Calibration and the operating threshold, both chosen on validation data, never the test week.

The validation scores are cross-fitted over the training window: its days are cut into (up to)
three consecutive blocks, and each block is scored by the same family and parameters fit on the
other blocks, so every training transaction gets an out-of-sample score. Every label there is
known when the candidate trains (the training window ends a label delay before the test window),
and the test window is never read. A single held-out block (two days of a seven-day window) was
tried first: its F1 threshold swung enough between nearly identical runs to triple a model's
alert volume against its champion's; the whole window is as large as the test week was. On
those out-of-sample scores:

- a Platt calibration is fit (``fraudflow.models.calibration``), so ``fraud_probability`` is a
  probability and ranks exactly as the raw score does;
- the operating threshold is the best F1 of the calibrated validation scores.

A training window whose negatives were sampled (:mod:`fraudflow.training.sampling`) carries
``SAMPLE_WEIGHT``: the calibration, the threshold's F1 counts and the Brier/ECE use it, so the
probabilities and the alert volume are those of the real base rate, not the sample's.

Brier score and expected calibration error are reported before and after, on the
out-of-sample scores and (by the caller) on the test window, where the calibration was not fit.
When a block's other days hold no fraud (a very small world) there is nothing to fit: the model
stays uncalibrated and the threshold is 0.5, with the reason recorded.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

from fraudflow.features.compute import LABEL, MODEL_INPUTS
from fraudflow.models.calibration import Calibration, brier_score, expected_calibration_error, fit_platt
from fraudflow.training.sampling import SAMPLE_WEIGHT

DEFAULT_THRESHOLD = 0.5


class ValidationFit(BaseModel):
    calibration: Calibration | None
    threshold: float
    validation_days: list[int]  # TX_TIME_DAYS of the days scored out of sample
    validation_rows: int
    brier_raw: float | None = None
    brier_calibrated: float | None = None
    ece_raw: float | None = None
    ece_calibrated: float | None = None
    reason: str = ""


def best_threshold(y: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None) -> float:
    """The score threshold with the best F1 on ``(y, scores)``, each row counted ``weights``
    times (a sampled negative stands for ``1 / rate`` transactions)."""
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum((w * y)[order])
    precision = tp / np.cumsum(w[order]) if len(y) else tp
    recall = tp / max(1.0, float((w * y).sum()))
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0)
    return float(scores[order][int(np.argmax(f1))]) if len(y) else DEFAULT_THRESHOLD


def fit_on_validation(spec: Any, train: pd.DataFrame, params: dict[str, Any] | None, blocks: int = 3) -> ValidationFit:
    """Calibration and threshold for ``spec`` with ``params`` from the training window ``train``."""
    days = sorted(train["TX_TIME_DAYS"].unique())
    groups = [list(g) for g in np.array_split(np.array(days), min(blocks, len(days))) if len(g)]
    y = train[LABEL].to_numpy()
    w = train[SAMPLE_WEIGHT].to_numpy() if SAMPLE_WEIGHT in train else None
    common = {"validation_days": [int(d) for d in days], "validation_rows": len(train)}
    raw = np.full(len(train), np.nan)
    for group in groups:
        held = train["TX_TIME_DAYS"].isin(group).to_numpy()
        if len(np.unique(y[~held])) < 2:
            reason = "a block's other days hold no fraud: uncalibrated, threshold 0.5"
            return ValidationFit(calibration=None, threshold=DEFAULT_THRESHOLD, reason=reason, **common)
        model = spec.fit(train.loc[~held, MODEL_INPUTS], y[~held], params)
        raw[held] = spec.predict_proba(model, train.loc[held, MODEL_INPUTS])
    if y.sum() == 0 or len(groups) < 2:
        reason = "no fraud in the training window or a single day: uncalibrated, threshold 0.5"
        return ValidationFit(calibration=None, threshold=DEFAULT_THRESHOLD, reason=reason, **common)
    try:
        calibration = fit_platt(y, raw, w)
    except ValueError as exc:
        return ValidationFit(calibration=None, threshold=best_threshold(y, raw, w), reason=str(exc), **common)
    calibrated = calibration.apply(raw)
    return ValidationFit(
        calibration=calibration,
        threshold=best_threshold(y, calibrated, w),
        brier_raw=brier_score(y, raw, w),
        brier_calibrated=brier_score(y, calibrated, w),
        ece_raw=expected_calibration_error(y, raw, weights=w),
        ece_calibrated=expected_calibration_error(y, calibrated, weights=w),
        **common,
    )
