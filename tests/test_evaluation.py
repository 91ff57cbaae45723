"""Evaluation metrics on hand-computed cases and seeded synthetic data (real computations)."""

from __future__ import annotations

import io
import time

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from fraudflow.training.bootstrap import BootstrapResult, average_precision, bootstrap_ap_difference
from fraudflow.training.metrics import (
    Metrics,
    card_precision_at_k,
    card_precision_at_k_per_day,
    evaluate_scores,
    plot_curves,
    slice_metrics,
)


def synthetic_frame(
    n: int = 20_000,
    fraud_rate: float = 0.01,
    scenario_shares: tuple[float, float, float] = (0.2, 0.5, 0.3),
    seed: int = 0,
) -> pd.DataFrame:
    """Transactions shaped like the simulator's: 7 days, 2,000 cards, ~1% fraud in 3 scenarios.

    Scenario 1 frauds are the amounts above 220 (genuine amounts stay below), scenario 3
    frauds have their amount multiplied by 5, as in the handbook's simulator.
    """
    rng = np.random.default_rng(seed)
    fraud = rng.random(n) < fraud_rate
    scenario = np.where(fraud, rng.choice([1, 2, 3], size=n, p=list(scenario_shares)), 0)
    amount = np.minimum(np.round(rng.gamma(2.0, 25.0, size=n), 2), 219.99)
    amount = np.where(scenario == 1, np.round(rng.uniform(220.01, 500.0, size=n), 2), amount)
    amount = np.where(scenario == 3, np.round(amount * 5, 2), amount)
    return pd.DataFrame(
        {
            "CUSTOMER_ID": rng.integers(0, 2_000, n),
            "TX_TIME_DAYS": rng.integers(0, 7, n),
            "TX_AMOUNT": amount,
            "TX_FRAUD": fraud.astype(int),
            "TX_FRAUD_SCENARIO": scenario,
        }
    )


def noisy_scores(y: np.ndarray, sd: float, seed: int) -> np.ndarray:
    """A model of known quality: the label plus Gaussian noise (smaller sd, better model)."""
    return y + np.random.default_rng(seed).normal(0.0, sd, len(y))


def tx_frame(rows: list[tuple[object, int, float, int]]) -> tuple[pd.DataFrame, np.ndarray]:
    """(card, day, score, fraud) tuples -> (frame, scores), rows shuffled so order can't matter."""
    order = np.random.default_rng(7).permutation(len(rows))
    picked = [rows[i] for i in order]
    frame = pd.DataFrame(
        {
            "CUSTOMER_ID": [r[0] for r in picked],
            "TX_TIME_DAYS": [r[1] for r in picked],
            "TX_FRAUD": [r[3] for r in picked],
        }
    )
    return frame, np.array([r[2] for r in picked])


# ---------------------------------------------------------------- Card Precision@k


def test_card_precision_at_100_hand_computed():
    # (card, day, score, fraud)
    frame, scores = tx_frame(
        [
            # day 10: 5 cards (< 100, so all are in the top 100).
            #   c1 max score .90, max label 1 -> compromised
            #   c2 .10, 1 -> compromised (low score, still in the top 100)
            #   c3 .80, 0 -> genuine
            #   c4 .60 (max of .30/.60), 1 -> compromised
            #   c5 .05, 0 -> genuine
            #   => 3/100 = 0.03; detected = {c1, c2, c4}
            ("c1", 10, 0.90, 1),
            ("c1", 10, 0.20, 0),
            ("c2", 10, 0.10, 1),
            ("c3", 10, 0.80, 0),
            ("c4", 10, 0.30, 1),
            ("c4", 10, 0.60, 1),
            ("c5", 10, 0.05, 0),
            # day 11: c1 is excluded (detected on day 10) despite its fraud at .95;
            #   c3 was genuine (not detected) on day 10, so it stays: max .70, label 1 -> compromised
            #   c5 .40, 0; c6 .50, 1 -> compromised
            #   => 2/100 = 0.02; detected += {c3, c6}
            ("c1", 11, 0.95, 1),
            ("c3", 11, 0.70, 1),
            ("c3", 11, 0.10, 0),
            ("c5", 11, 0.40, 0),
            ("c6", 11, 0.50, 1),
            # day 12: c4 and c2 excluded; c5 .30, 1 -> compromised; c7 .20, 0
            #   => 1/100 = 0.01; detected += {c5}
            ("c4", 12, 0.99, 1),
            ("c2", 12, 0.15, 1),
            ("c5", 12, 0.30, 1),
            ("c7", 12, 0.20, 0),
            # day 13: only c1, excluded -> no card left, the day still counts: 0/100 = 0
            ("c1", 13, 0.90, 1),
        ]
    )
    # CP@100 = mean(0.03, 0.02, 0.01, 0.00) = 0.015
    assert card_precision_at_k_per_day(frame, scores, k=100) == [3 / 100, 2 / 100, 1 / 100, 0 / 100]
    assert card_precision_at_k(frame, scores, k=100) == pytest.approx(0.015, abs=1e-15)
    assert card_precision_at_k(frame, scores) == card_precision_at_k(frame, scores, k=100)  # k defaults to 100


def test_card_precision_at_2_only_the_top_k_counts_and_only_detected_cards_are_excluded():
    frame, scores = tx_frame(
        [
            # day 0: ranking a .9 (genuine), b .8 (fraud), c .7 (fraud)
            #   top 2 = {a, b} -> 1/2; c is compromised but 3rd: not counted, not detected
            ("a", 0, 0.9, 0),
            ("b", 0, 0.8, 1),
            ("c", 0, 0.7, 1),
            # day 1: b excluded; c .9 (fraud), e .85 (fraud), d .1 -> top 2 = {c, e} -> 2/2
            ("b", 1, 0.95, 1),
            ("c", 1, 0.9, 1),
            ("e", 1, 0.85, 1),
            ("d", 1, 0.1, 0),
            # day 2: c, e excluded; g .3, h .2 (genuine), i .1 (fraud, 3rd) -> top 2 = {g, h} -> 0/2
            ("c", 2, 0.99, 1),
            ("e", 2, 0.98, 1),
            ("g", 2, 0.3, 0),
            ("h", 2, 0.2, 0),
            ("i", 2, 0.1, 1),
        ]
    )
    assert card_precision_at_k_per_day(frame, scores, k=2) == [0.5, 1.0, 0.0]
    assert card_precision_at_k(frame, scores, k=2) == pytest.approx(0.5, abs=1e-15)


def test_card_precision_aggregates_per_card_max_score_and_max_label():
    # card 1: a genuine tx scored .9 and a fraud scored .1 -> card score .9, card label 1.
    # card 2: one genuine tx scored .5. Per card, card 1 ranks first and is compromised: CP@1 = 1.
    # (Ranking transactions instead would put the fraud last and give 0.)
    frame, scores = tx_frame([(1, 0, 0.9, 0), (1, 0, 0.1, 1), (2, 0, 0.5, 0)])
    assert card_precision_at_k(frame, scores, k=1) == 1.0


def test_card_precision_ties_break_by_customer_id():
    frame, scores = tx_frame([(2, 0, 0.5, 0), (1, 0, 0.5, 1)])
    assert card_precision_at_k(frame, scores, k=1) == 1.0  # card 1 wins the tie
    frame, scores = tx_frame([(2, 0, 0.5, 1), (1, 0, 0.5, 0)])
    assert card_precision_at_k(frame, scores, k=1) == 0.0


def _handbook_card_precision_top_k(frame: pd.DataFrame, scores: np.ndarray, top_k: int) -> float:
    """The handbook's reference ``card_precision_top_k``, transcribed (a loop, as published)."""
    predictions = frame.assign(predictions=scores)
    detected: list = []
    values = []
    for day in sorted(predictions["TX_TIME_DAYS"].unique()):
        df_day = predictions[predictions["TX_TIME_DAYS"] == day][["predictions", "CUSTOMER_ID", "TX_FRAUD"]]
        df_day = df_day[~df_day.CUSTOMER_ID.isin(detected)]
        df_day = df_day.groupby("CUSTOMER_ID").max().sort_values(by="predictions", ascending=False).reset_index()
        top = df_day.head(top_k)
        found = list(top[top.TX_FRAUD == 1].CUSTOMER_ID)
        values.append(len(found) / top_k)
        detected.extend(found)
    return float(np.mean(values))


@pytest.mark.parametrize("k", [5, 100])
def test_card_precision_matches_handbook_reference_on_synthetic_data(k):
    frame = synthetic_frame(n=5_000, fraud_rate=0.05, seed=3)
    scores = noisy_scores(frame["TX_FRAUD"].to_numpy(), 0.8, seed=4)  # continuous: no ties
    assert card_precision_at_k(frame, scores, k=k) == pytest.approx(_handbook_card_precision_top_k(frame, scores, k))


def test_card_precision_rejects_bad_input():
    frame, scores = tx_frame([(1, 0, 0.9, 1)])
    with pytest.raises(ValueError, match="scores for"):
        card_precision_at_k(frame, scores[:0])
    with pytest.raises(ValueError, match="NaN"):
        card_precision_at_k(frame, np.array([np.nan]))
    with pytest.raises(ValueError, match="k must be"):
        card_precision_at_k(frame, scores, k=0)
    with pytest.raises(ValueError, match="lacks column"):
        card_precision_at_k(frame.drop(columns="TX_TIME_DAYS"), scores)


# ---------------------------------------------------------------- pooled metrics


def test_evaluate_scores_pools_auc_and_ap_and_reports_cp():
    frame = synthetic_frame(seed=1)
    y = frame["TX_FRAUD"].to_numpy()
    scores = noisy_scores(y, 0.3, seed=2)
    metrics = evaluate_scores(frame, scores)
    assert isinstance(metrics, Metrics)
    assert metrics.auc_roc == pytest.approx(roc_auc_score(y, scores))
    assert metrics.average_precision == pytest.approx(average_precision_score(y, scores))
    assert metrics.card_precision_at_100 == pytest.approx(card_precision_at_k(frame, scores, 100))
    assert (metrics.n_transactions, metrics.n_frauds) == (len(y), int(y.sum()))
    with pytest.raises(ValueError, match="both classes"):
        evaluate_scores(frame.assign(TX_FRAUD=0), scores)


@pytest.mark.parametrize("seed", range(5))
def test_average_precision_equals_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = 2_000
    y = (rng.random(n) < 0.1).astype(int)
    scores = np.round(rng.random(n) + 0.3 * y, 1)  # ~14 distinct values: many ties, some mixed-label
    assert average_precision(y, scores) == pytest.approx(average_precision_score(y, scores), rel=1e-12)
    # one bootstrap resample as counts == sklearn on the resampled rows
    draw = rng.integers(0, n, n)
    counts = np.bincount(draw, minlength=n)
    assert average_precision(y, scores, sample_weight=counts) == pytest.approx(
        average_precision_score(y[draw], scores[draw]), rel=1e-12
    )
    # all scores tied: AP is the prevalence
    assert average_precision(y, np.zeros(n)) == pytest.approx(average_precision_score(y, np.zeros(n)), rel=1e-12)


# ---------------------------------------------------------------- bootstrap


def test_bootstrap_identical_models_difference_is_exactly_zero():
    frame = synthetic_frame(seed=5)
    y = frame["TX_FRAUD"].to_numpy()
    scores = noisy_scores(y, 0.4, seed=6)
    result = bootstrap_ap_difference(y, scores, scores.copy(), n_boot=100)
    assert isinstance(result, BootstrapResult)
    assert (result.point_difference, result.mean_difference, result.lower, result.upper) == (0.0, 0.0, 0.0, 0.0)
    assert (result.n_boot, result.confidence) == (100, 0.90)


def test_bootstrap_clearly_better_model_has_interval_above_zero_and_is_reproducible():
    frame = synthetic_frame(seed=5)
    y = frame["TX_FRAUD"].to_numpy()
    better, worse = noisy_scores(y, 0.2, seed=6), noisy_scores(y, 0.4, seed=7)
    result = bootstrap_ap_difference(y, better, worse, n_boot=200, seed=3)
    assert 0.0 < result.lower <= result.mean_difference <= result.upper
    assert result.point_difference == pytest.approx(
        average_precision_score(y, better) - average_precision_score(y, worse), abs=1e-12
    )
    assert bootstrap_ap_difference(y, better, worse, n_boot=200, seed=3) == result
    flipped = bootstrap_ap_difference(y, worse, better, n_boot=200, seed=3)
    assert flipped.upper == pytest.approx(-result.lower)


def test_bootstrap_is_fast_on_70k_rows():
    rng = np.random.default_rng(0)
    y = (rng.random(70_000) < 0.01).astype(int)
    started = time.perf_counter()
    bootstrap_ap_difference(y, noisy_scores(y, 0.5, 1), noisy_scores(y, 0.6, 2), n_boot=200)
    assert time.perf_counter() - started < 2.0


# ---------------------------------------------------------------- slices and plots


def test_slice_metrics_keys_values_and_skipped_single_class_slices():
    frame = synthetic_frame(seed=8)
    y = frame["TX_FRAUD"].to_numpy()
    slices = slice_metrics(frame, noisy_scores(y, 0.4, seed=9))
    # amount_220_inf holds only frauds (scenario 1 and x5 scenario 3 amounts): no AP, left out
    assert list(slices) == [
        "scenario_1",
        "scenario_2",
        "scenario_3",
        "amount_0_20",
        "amount_20_50",
        "amount_50_100",
        "amount_100_220",
    ]
    for name, value in slices.items():
        assert 0.0 <= value["value"] <= 1.0
        assert value["metric"] == ("auc_roc" if name.startswith("scenario") else "average_precision")
        assert 0 < value["n_frauds"] < value["n"]
    genuine = int((frame["TX_FRAUD_SCENARIO"] == 0).sum())
    assert slices["scenario_2"]["n"] == genuine + slices["scenario_2"]["n_frauds"]

    # a genuine 250.00 makes the top bucket two-class; a lower-edge 20.00 falls in [20, 50)
    extra = pd.DataFrame(
        {"CUSTOMER_ID": [1, 2], "TX_TIME_DAYS": [0, 0], "TX_AMOUNT": [250.0, 20.0], "TX_FRAUD": [0, 0]}
    ).assign(TX_FRAUD_SCENARIO=0)
    both = pd.concat([frame, extra], ignore_index=True)
    scores = noisy_scores(both["TX_FRAUD"].to_numpy(), 0.4, seed=9)
    slices = slice_metrics(both, scores)
    assert "amount_220_inf" in slices
    assert slices["amount_20_50"]["n"] == int(((both["TX_AMOUNT"] >= 20) & (both["TX_AMOUNT"] < 50)).sum())

    # no scenario column (real data has no ground truth): amount slices only
    assert all(k.startswith("amount_") for k in slice_metrics(frame.drop(columns="TX_FRAUD_SCENARIO"), y * 1.0))


def test_plot_curves_returns_two_renderable_figures():
    from matplotlib.figure import Figure

    frame = synthetic_frame(n=2_000, fraud_rate=0.05, seed=10)
    y = frame["TX_FRAUD"].to_numpy()
    roc, pr = plot_curves(y, noisy_scores(y, 0.5, seed=11), "candidate")
    assert isinstance(roc, Figure) and isinstance(pr, Figure)
    assert roc.axes[0].get_title() == "candidate: ROC"
    assert pr.axes[0].get_xlabel() == "recall"
    for fig in (roc, pr):
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        assert buffer.getvalue()[:4] == b"\x89PNG"
