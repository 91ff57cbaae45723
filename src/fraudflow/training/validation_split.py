"""Calibration and the operating threshold, both chosen on validation data, never the test week.

The validation data is the newest third of the training window (whole days, at least one),
scored by the same family and parameters fit on the days before it. Every label there is known
when the candidate trains (the training window ends a label delay before the test window), and
the test window is never read. On those out-of-sample scores:

- a Platt calibration is fit (``fraudflow.models.calibration``), so ``fraud_probability`` is a
  probability and ranks exactly as the raw score does;
- the operating threshold is the best F1 of the calibrated validation scores.

Brier score and expected calibration error are reported before and after, on the validation
days and (by the caller) on the test window, where the calibration was not fit. When the
validation days hold no fraud (a very small world) there is nothing to fit: the model stays
uncalibrated and the threshold is 0.5, with the reason recorded.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

from fraudflow.features.compute import LABEL, MODEL_INPUTS
from fraudflow.models.calibration import Calibration, brier_score, expected_calibration_error, fit_platt

DEFAULT_THRESHOLD = 0.5


class ValidationFit(BaseModel):
    calibration: Calibration | None
    threshold: float
    validation_days: list[int]  # TX_TIME_DAYS of the validation days
    validation_rows: int
    brier_raw: float | None = None
    brier_calibrated: float | None = None
    ece_raw: float | None = None
    ece_calibrated: float | None = None
    reason: str = ""


def best_threshold(y: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold with the best F1 on ``(y, scores)``."""
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(y[order])
    precision = tp / np.arange(1, len(y) + 1)
    recall = tp / max(1, y.sum())
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0)
    return float(scores[order][int(np.argmax(f1))]) if len(y) else DEFAULT_THRESHOLD


def fit_on_validation(spec: Any, train: pd.DataFrame, params: dict[str, Any] | None) -> ValidationFit:
    """Calibration and threshold for ``spec`` with ``params`` from the training window ``train``."""
    days = sorted(train["TX_TIME_DAYS"].unique())
    held = days[-max(1, len(days) // 3) :]
    is_held = train["TX_TIME_DAYS"].isin(held).to_numpy()
    fit_part, valid = train[~is_held], train[is_held]
    y_fit, y_valid = fit_part[LABEL].to_numpy(), valid[LABEL].to_numpy()
    common = {"validation_days": [int(d) for d in held], "validation_rows": len(valid)}
    if len(np.unique(y_fit)) < 2 or y_valid.sum() == 0:
        reason = "no fraud in the validation days or the days before them: uncalibrated, threshold 0.5"
        return ValidationFit(calibration=None, threshold=DEFAULT_THRESHOLD, reason=reason, **common)
    raw = spec.predict_proba(spec.fit(fit_part[MODEL_INPUTS], y_fit, params), valid[MODEL_INPUTS])
    try:
        calibration = fit_platt(y_valid, raw)
    except ValueError as exc:
        return ValidationFit(calibration=None, threshold=best_threshold(y_valid, raw), reason=str(exc), **common)
    calibrated = calibration.apply(raw)
    return ValidationFit(
        calibration=calibration,
        threshold=best_threshold(y_valid, calibrated),
        brier_raw=brier_score(y_valid, raw),
        brier_calibrated=brier_score(y_valid, calibrated),
        ece_raw=expected_calibration_error(y_valid, raw),
        ece_calibrated=expected_calibration_error(y_valid, calibrated),
        **common,
    )
