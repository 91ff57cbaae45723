"""The simulator follows the handbook's published design and is deterministic by seed."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from fraudflow.demo.simulate import DriftSpec, SimulationConfig, simulate_transactions, write_landing_files
from fraudflow.schema import RAW_COLUMNS, normalise_transactions

SMALL = SimulationConfig(days=40, customers=400, terminals=800, seed=3)


@pytest.fixture(scope="module")
def history():
    return simulate_transactions(SMALL)


def test_deterministic_for_a_seed(history):
    pd.testing.assert_frame_equal(history, simulate_transactions(SMALL))
    assert not simulate_transactions(SMALL.model_copy(update={"seed": 4})).equals(history)


def test_schema_and_invariants(history):
    assert tuple(history.columns) == RAW_COLUMNS
    normalise_transactions(history)  # casts cleanly to the lake schema
    assert history["TRANSACTION_ID"].is_unique and history["TRANSACTION_ID"].is_monotonic_increasing
    assert history["TX_DATETIME"].is_monotonic_increasing
    assert (history["TX_AMOUNT"] >= 0).all()
    assert (history["TX_AMOUNT"].round(2) == history["TX_AMOUNT"]).all()
    start = pd.Timestamp(SMALL.start)
    assert ((history["TX_DATETIME"] - start).dt.total_seconds() == history["TX_TIME_SECONDS"]).all()
    assert (history["TX_TIME_SECONDS"] // 86_400 == history["TX_TIME_DAYS"]).all()
    assert set(history["TX_FRAUD_SCENARIO"].unique()) <= {0, 1, 2, 3}
    assert ((history["TX_FRAUD_SCENARIO"] > 0) == (history["TX_FRAUD"] == 1)).all()


def test_amount_over_220_is_fraud(history):
    big = history[history["TX_AMOUNT"] > 220]
    assert len(big) > 0
    assert (big["TX_FRAUD"] == 1).all()


def test_compromised_terminal_frauds_last_28_days(history):
    windows = history.attrs["compromised_terminals"]
    assert len(windows) == 2 * SMALL.days
    covered = np.zeros(len(history), dtype=bool)
    for terminal, first_day in windows:
        in_window = (
            (history["TERMINAL_ID"] == terminal)
            & (history["TX_TIME_DAYS"] >= first_day)
            & (history["TX_TIME_DAYS"] < first_day + 28)
        )
        assert (history.loc[in_window, "TX_FRAUD"] == 1).all()  # every tx of the 28 days
        covered |= in_window.to_numpy()
    # ... and no scenario-2 fraud outside a compromise window (day 28 after the start is clean).
    assert not ((history["TX_FRAUD_SCENARIO"] == 2).to_numpy() & ~covered).any()
    assert (history["TX_FRAUD_SCENARIO"] == 2).sum() > 0


def test_compromised_cards_have_a_third_of_14_days_multiplied(history):
    scen3 = history[history["TX_FRAUD_SCENARIO"] == 3]
    assert len(scen3) > 0
    cards = {c for c, _ in history.attrs["compromised_customers"]}
    assert set(scen3["CUSTOMER_ID"]) <= cards


def test_fraud_rate_near_published_on_medium_world():
    frame = simulate_transactions(SimulationConfig(days=60, customers=2000, terminals=4000, seed=0))
    rate = frame["TX_FRAUD"].mean()
    assert 0.004 < rate < 0.02  # published full-size: 0.837 %


def test_drift_changes_only_days_after_its_start():
    base = SimulationConfig(days=20, customers=300, terminals=600, seed=1)
    drift_start = base.start + dt.timedelta(days=10)
    drifted = simulate_transactions(
        base.model_copy(update={"drift": DriftSpec(start=drift_start, amount_scale=2.0, night_share=0.5)})
    )
    clean = simulate_transactions(base)
    before = lambda f: f[f["TX_DATETIME"] < pd.Timestamp(drift_start)]  # noqa: E731
    after = lambda f: f[f["TX_DATETIME"] >= pd.Timestamp(drift_start)]  # noqa: E731
    assert before(drifted)["TX_AMOUNT"].median() == pytest.approx(before(clean)["TX_AMOUNT"].median(), rel=0.1)
    assert after(drifted)["TX_AMOUNT"].median() > 1.6 * after(clean)["TX_AMOUNT"].median()
    night = lambda f: (f["TX_DATETIME"].dt.hour < 6).mean()  # noqa: E731
    assert night(after(drifted)) > 0.4 > night(after(clean))


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_landing_files_one_per_day(tmp_path, history, fmt):
    written = write_landing_files(history, tmp_path, fmt=fmt)
    assert len(written) == SMALL.days
    first = written[0]
    assert first.parent.name == f"date={SMALL.start.isoformat()}" and first.name == f"transactions.{fmt}"
    back = pd.read_parquet(first) if fmt == "parquet" else pd.read_csv(first)
    assert len(back) == (history["TX_TIME_DAYS"] == 0).sum()
