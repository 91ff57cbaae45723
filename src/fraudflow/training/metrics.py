"""Offline model-quality metrics: the handbook's protocol, and what the evaluation gate needs.

AUC ROC and average precision rank transactions, but investigators work on cards: each day
they can check about k cards, and a card already found compromised is blocked and not checked
again. Card Precision@k (the handbook's ``card_precision_top_k``) measures exactly that, so it
is the number fraudflow reports next to the pooled AUC ROC and AP.

Everything here is pure numpy/pandas/sklearn, with no MLflow or Airflow, so training, the gate,
tests and notebooks compute the same numbers from the same code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from fraudflow.features.compute import LABEL

if TYPE_CHECKING:
    from matplotlib.figure import Figure


CARD = "CUSTOMER_ID"


DAY = "TX_TIME_DAYS"


SCENARIO = "TX_FRAUD_SCENARIO"


AMOUNT = "TX_AMOUNT"


DEFAULT_TOP_K = 100


AMOUNT_EDGES = (0.0, 20.0, 50.0, 100.0, 220.0, np.inf)


class Metrics(BaseModel):
    auc_roc: float
    average_precision: float
    card_precision_at_100: float
    n_transactions: int
    n_frauds: int


def as_scores(scores: np.ndarray, n_rows: int) -> np.ndarray:
    values = np.asarray(scores, dtype=float)
    if values.ndim != 1:
        raise ValueError(f"scores must be one-dimensional (one score per row), got shape {values.shape}")
    if len(values) != n_rows:
        raise ValueError(f"{len(values)} scores for {n_rows} rows")
    if np.isnan(values).any():
        raise ValueError(f"{int(np.isnan(values).sum())} scores are NaN")
    return values


def _require(frame: pd.DataFrame, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks column(s) {missing}")


def card_precision_at_k_per_day(frame: pd.DataFrame, scores: np.ndarray, k: int = DEFAULT_TOP_K) -> list[float]:
    """Card Precision@k of each test day, days in increasing ``TX_TIME_DAYS`` order.

    Per day: drop the transactions of cards detected on earlier days; per card take the max
    score and the max label; rank cards by max score, highest first; the day's value is the
    number of compromised cards (max label 1) in the top k divided by k (always k, even when
    the day has fewer cards); the compromised cards in that top k join the detected set.
    A day whose cards were all detected before still counts, with value 0 (as in the handbook).

    Ties in a card's max score are broken by ``CUSTOMER_ID`` ascending (a stable sort after the
    per-card groupby); the handbook's reference uses an unstable sort, so on exact ties it may
    pick different cards.

    Args:
        frame: one row per transaction with ``CUSTOMER_ID``, ``TX_TIME_DAYS`` and ``TX_FRAUD``.
        scores: fraud scores aligned with the rows of ``frame``.
        k: cards investigated per day.

    Returns:
        One value in [0, 1] per distinct day.

    Raises:
        ValueError: missing columns, misaligned or NaN scores, an empty frame or k < 1.
    """
    _require(frame, (CARD, DAY, LABEL))
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if frame.empty:
        raise ValueError("no transactions to evaluate")
    data = pd.DataFrame(
        {
            "card": frame[CARD].to_numpy(),
            "day": frame[DAY].to_numpy(),
            "label": frame[LABEL].to_numpy(),
            "score": as_scores(scores, len(frame)),
        }
    )
    detected = np.array([], dtype=data["card"].dtype)
    per_day: list[float] = []
    for _, rows in data.groupby("day", sort=True):
        rows = rows[~rows["card"].isin(detected)]
        cards = rows.groupby("card", sort=True).agg(score=("score", "max"), label=("label", "max"))
        top = cards.sort_values("score", ascending=False, kind="stable").head(k)
        hits = top.index[top["label"].to_numpy() == 1].to_numpy()
        per_day.append(len(hits) / k)
        detected = np.concatenate([detected, hits])
    return per_day


def card_precision_at_k(frame: pd.DataFrame, scores: np.ndarray, k: int = DEFAULT_TOP_K) -> float:
    """Card Precision@k: the mean over test days of :func:`card_precision_at_k_per_day`."""
    return float(np.mean(card_precision_at_k_per_day(frame, scores, k)))


def evaluate_scores(frame: pd.DataFrame, scores: np.ndarray, k: int = DEFAULT_TOP_K) -> Metrics:
    """The handbook's three numbers: AUC ROC and AP pooled over all rows, and CP@k.

    ``card_precision_at_100`` holds CP@k for the ``k`` given (100 unless told otherwise).

    Raises:
        ValueError: the rows do not hold both classes (AUC and AP are undefined), or as
            :func:`card_precision_at_k_per_day`.
    """
    _require(frame, (LABEL,))
    values = as_scores(scores, len(frame))
    y = frame[LABEL].to_numpy().astype(int)
    n_frauds = int(y.sum())
    if n_frauds == 0 or n_frauds == len(y):
        raise ValueError(f"need both classes to evaluate, got {n_frauds} frauds in {len(y)} rows")
    return Metrics(
        auc_roc=float(roc_auc_score(y, values)),
        average_precision=float(average_precision_score(y, values)),
        card_precision_at_100=card_precision_at_k(frame, values, k),
        n_transactions=len(y),
        n_frauds=n_frauds,
    )


def _amount_bucket_names() -> list[str]:
    def edge(value: float) -> str:
        return "inf" if np.isinf(value) else f"{value:g}"

    return [f"amount_{edge(lo)}_{edge(hi)}" for lo, hi in zip(AMOUNT_EDGES[:-1], AMOUNT_EDGES[1:], strict=True)]


class Slice(BaseModel):
    """Which rows one slice covers and what counts as a positive there."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    metric: str  # "auc_roc" | "average_precision"
    rows: np.ndarray  # boolean mask over the frame
    positives: np.ndarray  # 0/1 labels of the selected rows


def slices(frame: pd.DataFrame) -> dict[str, Slice]:
    """The slices where a model can be fine on average and bad where it matters.

    - ``scenario_<s>`` for each fraud scenario s in 1, 2, 3 present in ``TX_FRAUD_SCENARIO``:
      AUC ROC of scenario-s frauds against all genuine transactions (scenario 0). AUC, not AP,
      because the rows are a different subset per scenario and AP would move with the
      scenario's share of frauds.
    - ``amount_<lo>_<hi>`` for the ``TX_AMOUNT`` buckets [0, 20), [20, 50), [50, 100),
      [100, 220), [220, inf): AP within the bucket.

    A slice without both classes (no genuine rows, no scenario-s frauds, a bucket with only
    one class) has no defined metric and is left out, so callers compare the keys present.
    A frame without ``TX_FRAUD_SCENARIO`` or ``TX_AMOUNT`` yields no slices of that kind.
    """
    _require(frame, (LABEL,))
    y = frame[LABEL].to_numpy().astype(int)
    out: dict[str, Slice] = {}
    if SCENARIO in frame.columns:
        scenario = frame[SCENARIO].to_numpy()
        genuine = scenario == 0
        for s in (1, 2, 3):
            fraud = scenario == s
            if fraud.any() and genuine.any():
                rows = fraud | genuine
                out[f"scenario_{s}"] = Slice(metric="auc_roc", rows=rows, positives=fraud[rows].astype(int))
    if AMOUNT in frame.columns:
        bucket = np.digitize(frame[AMOUNT].to_numpy(dtype=float), AMOUNT_EDGES[1:-1])  # 0..4, right edge open
        for index, name in enumerate(_amount_bucket_names()):
            rows = bucket == index
            n_frauds = int(y[rows].sum())
            if 0 < n_frauds < rows.sum():
                out[name] = Slice(metric="average_precision", rows=rows, positives=y[rows])
    return out


def slice_metrics(frame: pd.DataFrame, scores: np.ndarray) -> dict[str, dict[str, float]]:
    """Each slice's metric for ``scores`` (see :func:`slices`).

    Returns:
        ``{slice: {"metric": "auc_roc" | "average_precision", "value": ..., "n": rows,
        "n_frauds": frauds}}``.
    """
    values = as_scores(scores, len(frame))
    metric = {"auc_roc": roc_auc_score, "average_precision": average_precision_score}
    return {
        name: {
            "metric": s.metric,
            "value": float(metric[s.metric](s.positives, values[s.rows])),
            "n": int(s.rows.sum()),
            "n_frauds": int(s.positives.sum()),
        }
        for name, s in slices(frame).items()
    }


def plot_curves(y: np.ndarray, scores: np.ndarray, title: str) -> tuple[Figure, Figure]:
    """ROC and precision-recall curves as two matplotlib figures (Agg canvas, no pyplot).

    The figures are not registered with pyplot, so nothing global is left open in a
    long-lived worker; save them with ``fig.savefig`` or ``mlflow.log_figure``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = np.asarray(y).astype(int)
    values = as_scores(scores, len(labels))

    roc = Figure(figsize=(5, 5))
    FigureCanvasAgg(roc)
    ax = roc.add_subplot()
    fpr, tpr, _ = roc_curve(labels, values)
    ax.plot(fpr, tpr, label=f"AUC ROC = {roc_auc_score(labels, values):.3f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="random")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"{title}: ROC", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="lower right")

    pr = Figure(figsize=(5, 5))
    FigureCanvasAgg(pr)
    ax = pr.add_subplot()
    precision, recall, _ = precision_recall_curve(labels, values)
    ax.step(recall, precision, where="post", label=f"AP = {average_precision_score(labels, values):.3f}")
    ax.axhline(labels.mean(), linestyle="--", color="grey", label=f"prevalence = {labels.mean():.4f}")
    ax.set(xlabel="recall", ylabel="precision", title=f"{title}: precision-recall", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="upper right")
    return roc, pr
