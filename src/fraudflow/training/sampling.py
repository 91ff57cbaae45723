"""Negative sampling: a training window too large for one process keeps every fraud and a
hashed share of the other transactions, each standing for ``1 / rate`` of them.

Fraud is well under 1% of transactions, so the negatives are what make a training set large;
dropping most of them costs the model little (the handbook's chapter on imbalance) and bounds the
memory of the point-in-time join, the fit and the prequential folds. What changes is the base
rate the model sees, so every number that depends on it uses the weights: the Platt calibration,
the F1 threshold and the validation Brier/ECE (:mod:`fraudflow.training.validation_split`). The
fit itself sees the sample unweighted (undersampling is the point); the calibration undoes the
prior shift. The test window is never sampled, so the gate judges on the real week.

Which transactions are kept is a hash of ``TRANSACTION_ID``, not a random draw: the same window
samples the same rows on any engine, in any order, on any rerun, and a transaction kept at rate
``r`` is kept at every higher rate. The rate, counts and key go into the training set, the
parent MLflow run and the model card.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import BaseModel

from fraudflow.features.compute import LABEL

KEY = "TRANSACTION_ID"
SAMPLE_WEIGHT = "SAMPLE_WEIGHT"  # column of train.parquet: 1 for frauds, 1 / rate for sampled negatives
HASH_KEY = "fraudflow-negsmp"  # 16 bytes, pandas' siphash key: changing it changes which rows are kept


class TrainingSetTooLarge(ValueError):
    """The window's frauds alone exceed the row bound: sampling negatives cannot meet it."""


class NegativeSampling(BaseModel):
    """How a training window was sampled: kept every fraud and ``rate`` of the rest."""

    rate: float
    max_train_rows: int
    positives: int
    negatives: int  # in the window, before sampling
    negatives_kept: int
    hash_key: str = HASH_KEY

    @property
    def weight(self) -> float:
        return 1.0 / self.rate

    def describe(self) -> str:
        return (
            f"kept {self.negatives_kept:,} of {self.negatives:,} non-fraud transactions (rate {self.rate:.4f}, "
            f"hash of {KEY}), all {self.positives:,} frauds; each sampled one weighs {self.weight:.3f}"
        )


def hash_uniform(ids: pd.Series) -> np.ndarray:
    """A value in [0, 1) per transaction id, the same on every run and engine."""
    hashed = pd.util.hash_pandas_object(ids.astype("int64"), index=False, hash_key=HASH_KEY).to_numpy()
    return hashed / np.float64(2**64)


def sampling_rate(labels: pd.Series, max_train_rows: int | None) -> float:
    """The share of negatives to keep so that frauds plus kept negatives fit ``max_train_rows``
    (1.0 when the window already fits, or the bound is 0: never sample).

    Raises:
        TrainingSetTooLarge: the frauds alone reach the bound.
    """
    if not max_train_rows or len(labels) <= max_train_rows:
        return 1.0
    positives = int(labels.sum())
    if positives >= max_train_rows:
        raise TrainingSetTooLarge(
            f"the training window holds {positives:,} frauds, at least FRAUDFLOW_TRAINING_MAX_TRAIN_ROWS="
            f"{max_train_rows:,}: raise the bound or shorten FRAUDFLOW_TRAIN_DAYS"
        )
    return (max_train_rows - positives) / (len(labels) - positives)


def keep_mask(frame: pd.DataFrame, rate: float) -> np.ndarray:
    """Rows kept at ``rate``: every fraud, and the negatives whose hash falls under the rate."""
    if rate >= 1.0:
        return np.ones(len(frame), dtype=bool)
    return (frame[LABEL].to_numpy() == 1) | (hash_uniform(frame[KEY]) < rate)


def sample_negatives(
    frame: pd.DataFrame, rate: float, *, max_train_rows: int | None
) -> tuple[pd.DataFrame, NegativeSampling | None]:
    """``frame``'s kept rows, and the record of what was done (None when nothing was sampled)."""
    if rate >= 1.0:
        return frame, None
    keep = keep_mask(frame, rate)
    positive = frame[LABEL].to_numpy() == 1
    record = NegativeSampling(
        rate=rate,
        max_train_rows=int(max_train_rows or len(frame)),
        positives=int(positive.sum()),
        negatives=int((~positive).sum()),
        negatives_kept=int((keep & ~positive).sum()),
    )
    return frame[keep].reset_index(drop=True), record


def sample_weights(frame: pd.DataFrame, sampling: NegativeSampling | None) -> np.ndarray:
    """Each kept row's weight: 1 for a fraud, ``1 / rate`` for a sampled negative (all 1 when
    nothing was sampled)."""
    if sampling is None:
        return np.ones(len(frame))
    return np.where(frame[LABEL].to_numpy() == 1, 1.0, sampling.weight)


def unbiased_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Of a sampled frame (train or refit rows with ``SAMPLE_WEIGHT``), the rows whose hash falls
    under the rate, frauds included: a uniform sample of the window, which a drift reference
    needs (the kept rows over-represent frauds). An unsampled frame is returned whole."""
    if SAMPLE_WEIGHT not in frame or frame.empty or float(frame[SAMPLE_WEIGHT].max()) <= 1.0:
        return frame
    rate = 1.0 / float(frame[SAMPLE_WEIGHT].max())
    return frame[hash_uniform(frame[KEY]) < rate].reset_index(drop=True)
