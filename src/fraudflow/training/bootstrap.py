"""Paired bootstrap of the difference in average precision between two models' scores.

It must be cheap enough to run inside a DAG task on every candidate (thousands of resamples of
~70,000 rows). Refitting sklearn's curve per resample means a sort each; instead each model's
scores are sorted once and cut into one bin per threshold that holds a positive, a resample is
one ``bincount`` of the drawn rows' bins, and AP is a cumulative sum over a few hundred bins.
Drawing a row n times is the same as giving it weight n, so this is the AP of the resampled
data, equal to sklearn's ``average_precision_score`` on it (tested).
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

from fraudflow.training.metrics import as_scores


class BootstrapResult(BaseModel):
    """Paired bootstrap of AP(challenger) - AP(champion).

    ``point_difference`` is the difference on the data as given; ``mean_difference`` and the
    percentile interval [``lower``, ``upper``] come from the resamples.
    """

    point_difference: float
    mean_difference: float
    lower: float
    upper: float
    n_boot: int
    confidence: float


def _ap_bins(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, int]:
    """Each row's bin code for the binned AP of :func:`_binned_ap`, and the number of bins.

    AP is a sum over distinct score thresholds, highest first, of (R_t - R_{t-1}) * P_t; only
    thresholds holding a positive have a recall step, and resampling never creates a new
    score. So the rows are cut, in score order, into one bin per positive-bearing threshold:
    bin j holds the rows after bin j-1's threshold down to and including threshold j (ties
    enter together), and rows below the last positive go to an unused bin. A row's code is
    ``2 * bin + label``, so one ``bincount`` gives each bin's weight and positive weight.
    """
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    group = np.zeros(len(ranked), dtype=np.int64)
    group[1:] = np.cumsum(ranked[1:] != ranked[:-1])  # distinct-score index in ranked order
    positive_groups = np.unique(group[labels[order] == 1])
    codes = np.empty(len(ranked), dtype=np.int64)
    codes[order] = 2 * np.searchsorted(positive_groups, group, side="left") + labels[order]
    return codes, len(positive_groups)


def _binned_ap(binned: np.ndarray, n_bins: int) -> np.ndarray:
    """AP for each row of ``binned`` (m x 2 * (n_bins + 1), a bincount of the row codes).

    NaN where a row holds no positive weight (recall undefined), as sklearn would warn.
    """
    weight = binned[:, 0 : 2 * n_bins : 2] + binned[:, 1 : 2 * n_bins : 2]
    tp = np.cumsum(binned[:, 1 : 2 * n_bins : 2], axis=1)
    seen = np.cumsum(weight, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(seen > 0, tp / seen, 0.0)
        recall = tp / tp[:, -1:]
    return np.sum(np.diff(recall, axis=1, prepend=0.0) * precision, axis=1)


def average_precision(y: np.ndarray, scores: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
    """Average precision as sklearn's ``average_precision_score`` computes it (ties grouped).

    The same code path as the bootstrap, exposed so tests can hold it to sklearn.

    Args:
        y: 0/1 labels.
        scores: scores aligned with ``y``.
        sample_weight: non-negative weights, e.g. bootstrap draw counts; ones when omitted.

    Returns:
        AP in [0, 1]; NaN when no positive has weight.
    """
    labels = np.asarray(y).astype(np.int64)
    codes, n_bins = _ap_bins(labels, as_scores(scores, len(labels)))
    weights = None if sample_weight is None else np.asarray(sample_weight, dtype=float)
    binned = np.bincount(codes, weights=weights, minlength=2 * (n_bins + 1))
    return float(_binned_ap(binned[None, :], n_bins)[0])


def bootstrap_ap_difference(
    y: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray,
    n_boot: int = 200,
    seed: int = 0,
    confidence: float = 0.90,
) -> BootstrapResult:
    """Paired bootstrap over rows of AP(challenger) - AP(champion) (see :func:`bootstrap_difference`,
    which the gate calls with whole cards resampled)."""
    return bootstrap_difference(
        y, challenger, champion, metric="average_precision", n_boot=n_boot, seed=seed, confidence=confidence
    )


def _auc_bins(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, int]:
    """Each row's bin code for :func:`_binned_auc`: one bin per distinct score, ascending, and
    ``2 * bin + label``, so one ``bincount`` gives each score's negative and positive weight."""
    distinct, inverse = np.unique(scores, return_inverse=True)
    return 2 * inverse.astype(np.int64) + labels, len(distinct)


def _binned_auc(binned: np.ndarray, n_bins: int) -> np.ndarray:
    """AUC ROC for each row of ``binned`` (m x 2 * n_bins): the weighted share of
    (positive, negative) pairs ranked correctly, ties counting one half (as sklearn)."""
    negatives, positives = binned[:, 0 : 2 * n_bins : 2], binned[:, 1 : 2 * n_bins : 2]
    below = np.cumsum(negatives, axis=1) - negatives
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sum(positives * (below + 0.5 * negatives), axis=1) / (positives.sum(1) * negatives.sum(1))


_METRICS = {"average_precision": (_ap_bins, _binned_ap), "auc_roc": (_auc_bins, _binned_auc)}


def resample_weights(rng: np.random.Generator, n_rows: int, clusters: np.ndarray | None) -> np.ndarray:
    """How often each row is drawn in one bootstrap resample.

    Without ``clusters`` rows are drawn independently. With them (e.g. each row's card), whole
    clusters are drawn with replacement and every row of a drawn cluster comes along: one
    card's transactions are not independent (a compromised card yields a burst of frauds), and
    drawing them one by one would make the interval too narrow.
    """
    if clusters is None:
        return np.bincount(rng.integers(0, n_rows, size=n_rows), minlength=n_rows)
    n_clusters = int(clusters.max()) + 1
    return np.bincount(rng.integers(0, n_clusters, size=n_clusters), minlength=n_clusters)[clusters]


def bootstrap_difference(
    y: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray,
    *,
    metric: str = "average_precision",
    clusters: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.90,
) -> BootstrapResult:
    """Paired (optionally cluster) bootstrap of metric(challenger) - metric(champion).

    Both models are scored on the same resample, so the interval reflects the difference, not
    two independent noises. The interval is the percentile interval at ``confidence``; with the
    default 1,000 resamples each 5% tail holds 50 draws. Resamples in which the metric is
    undefined (no positive, or for AUC no negative, drawn) are left out and not counted.

    Args:
        y: 0/1 labels, one per row.
        challenger: the candidate's scores.
        champion: the current model's scores on the same rows.
        metric: ``average_precision`` or ``auc_roc``.
        clusters: optional cluster index per row (0..k-1), e.g. the card; whole clusters are
            resampled (see :func:`resample_weights`).
        n_boot: number of resamples.
        seed: seed of the resampling generator (same seed, same interval).
        confidence: two-sided coverage of the interval, in (0, 1).

    Raises:
        ValueError: unknown metric, misaligned inputs, a class missing, n_boot < 1, or a
            confidence outside (0, 1).
    """
    labels = np.asarray(y).astype(np.int64)
    n = len(labels)
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {sorted(_METRICS)}, got {metric!r}")
    if n_boot < 1 or not 0.0 < confidence < 1.0:
        raise ValueError(f"need n_boot >= 1 and confidence in (0, 1), got {n_boot}, {confidence}")
    if labels.sum() == 0 or labels.sum() == n:
        raise ValueError("both classes are needed for a difference of ranking metrics")
    to_bins, binned_metric = _METRICS[metric]
    models = [to_bins(labels, as_scores(values, n)) for values in (challenger, champion)]
    ones = np.ones(n)
    point = [binned_metric(np.bincount(c, weights=ones, minlength=2 * (k + 1))[None, :], k)[0] for c, k in models]
    rng = np.random.default_rng(seed)
    binned = [np.empty((n_boot, 2 * (k + 1))) for _, k in models]
    for r in range(n_boot):
        weights = resample_weights(rng, n, clusters)
        for (codes, k), out in zip(models, binned, strict=True):
            out[r] = np.bincount(codes, weights=weights, minlength=2 * (k + 1))
    diffs = binned_metric(binned[0], models[0][1]) - binned_metric(binned[1], models[1][1])
    diffs = diffs[~np.isnan(diffs)]
    if len(diffs) == 0:
        raise ValueError("no resample held both classes")
    alpha = (1.0 - confidence) / 2.0
    return BootstrapResult(
        point_difference=float(point[0] - point[1]),
        mean_difference=float(diffs.mean()),
        lower=float(np.quantile(diffs, alpha)),
        upper=float(np.quantile(diffs, 1.0 - alpha)),
        n_boot=len(diffs),
        confidence=confidence,
    )
