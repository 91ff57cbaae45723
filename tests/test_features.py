"""Features are correct in time (no leak), incremental, and identical offline and online."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from fraudflow.demo.simulate import SimulationConfig, simulate_transactions
from fraudflow.features import point_in_time as pit
from fraudflow.features import store as fs
from fraudflow.features.compute import (
    CUSTOMER_FEATURES,
    MODEL_INPUTS,
    TERMINAL_FEATURES,
    FeaturesNotBuilt,
    build_features,
    compute_features,
    feature_dir,
    request_time_features,
    stale_feature_days,
)
from fraudflow.layout import partition_dir
from fraudflow.schema import normalise_transactions
from tests.helpers import publish_history

T0 = pd.Timestamp("2018-04-02")


def _tx(rows):
    frame = pd.DataFrame(rows, columns=["TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT", "TX_FRAUD"])
    frame["TRANSACTION_ID"] = range(len(frame))
    frame["TX_TIME_SECONDS"] = ((frame["TX_DATETIME"] - pd.Timestamp("2018-04-01")).dt.total_seconds()).astype(int)
    frame["TX_TIME_DAYS"] = frame["TX_TIME_SECONDS"] // 86400
    frame["TX_FRAUD_SCENARIO"] = frame["TX_FRAUD"]
    return normalise_transactions(frame[list(dict.fromkeys(["TRANSACTION_ID", *frame.columns]))])


@pytest.fixture(scope="module")
def leaky_case():
    """A history built so that any leak changes a value: a big future amount right after a
    small one, and a terminal fraud whose label is inside the delay for one later tx."""
    return _tx(
        [
            (T0 + pd.Timedelta(hours=10), "c1", "t1", 10.0, 1),  # terminal t1's fraud at day 0
            (T0 + pd.Timedelta(hours=12), "c1", "t2", 1000.0, 0),  # after c1's first tx
            (T0 + pd.Timedelta(days=5, hours=9), "c2", "t1", 20.0, 0),  # t1 fraud label still inside delay
            (T0 + pd.Timedelta(days=7, hours=11), "c2", "t1", 30.0, 0),  # day-0 fraud now 7d1h old
            (T0 + pd.Timedelta(days=40, hours=11), "c2", "t1", 40.0, 0),  # out of every window
        ]
    )


def test_window_values_by_hand(leaky_case):
    feats = compute_features(leaky_case)
    cust = feats["customer"].set_index("TRANSACTION_ID")
    term = feats["terminal"].set_index("TRANSACTION_ID")
    # c1 at 10:00 sees only itself, never the 1000.0 at 12:00.
    assert cust.loc[0, "CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == 1
    assert cust.loc[0, "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW"] == 10.0
    assert cust.loc[1, "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW"] == 505.0  # current tx included
    # Day 5 at t1: the day-0 fraud is inside the 7-day label delay: invisible.
    assert term.loc[2, ["TERMINAL_ID_NB_TX_30DAY_WINDOW", "TERMINAL_ID_RISK_30DAY_WINDOW"]].tolist() == [0, 0.0]
    # Day 7 + 1h: the day-0 fraud (7 d 1 h earlier) is in (t - 8d, t - 7d]: counted, risk 1.
    assert term.loc[3, "TERMINAL_ID_NB_TX_1DAY_WINDOW"] == 1
    assert term.loc[3, "TERMINAL_ID_RISK_1DAY_WINDOW"] == 1.0
    # Day 40: the day-0 fraud is older than delay + 30 days; the genuine day-5/7 txs count.
    assert term.loc[4, ["TERMINAL_ID_NB_TX_30DAY_WINDOW", "TERMINAL_ID_RISK_30DAY_WINDOW"]].tolist() == [2, 0.0]


@pytest.fixture(scope="module")
def history():
    return normalise_transactions(
        simulate_transactions(SimulationConfig(days=50, customers=300, terminals=600, seed=5))
    )


def test_no_value_uses_the_future(history):
    """Truncating history after t changes no feature at or before t."""
    cut = pd.Timestamp("2018-05-01 12:00")
    full = compute_features(history)
    past = compute_features(history[history["TX_DATETIME"] <= cut])
    for table, cols in (("customer", CUSTOMER_FEATURES), ("terminal", TERMINAL_FEATURES)):
        a = full[table].set_index("TRANSACTION_ID").loc[past[table]["TRANSACTION_ID"], cols]
        pd.testing.assert_frame_equal(a.reset_index(drop=True), past[table][cols].reset_index(drop=True))


def test_terminal_risk_ignores_labels_inside_the_delay(history):
    """Flipping every label younger than 7 days at t_max changes no terminal feature of a
    transaction at or before t_max (each one's delay region covers those labels)."""
    t_max = pd.Timestamp("2018-05-10 12:00")
    flipped = history.copy()
    young = flipped["TX_DATETIME"] > t_max - pd.Timedelta(days=7)
    flipped.loc[young, "TX_FRAUD"] = 1 - flipped.loc[young, "TX_FRAUD"]
    ids = history.loc[history["TX_DATETIME"].between(t_max - pd.Timedelta(hours=12), t_max), "TRANSACTION_ID"]
    a = compute_features(history)["terminal"].set_index("TRANSACTION_ID").loc[ids, TERMINAL_FEATURES]
    b = compute_features(flipped)["terminal"].set_index("TRANSACTION_ID").loc[ids, TERMINAL_FEATURES]
    pd.testing.assert_frame_equal(a, b)
    assert len(ids) > 100 and a["TERMINAL_ID_RISK_30DAY_WINDOW"].gt(0).any()


def test_request_time_flags():
    when = pd.Series(pd.to_datetime(["2018-04-07 06:59", "2018-04-09 07:00", "2018-04-08 00:00"]))  # Sat, Mon, Sun
    out = request_time_features(pd.Series([1.0, 2.0, 3.0]), when)
    assert out["TX_DURING_WEEKEND"].tolist() == [1, 0, 1]
    assert out["TX_DURING_NIGHT"].tolist() == [1, 0, 1]


@pytest.fixture(scope="module")
def store_home(tmp_path_factory, history):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FRAUDFLOW_HOME", str(tmp_path_factory.mktemp("feast") / "home"))
        from fraudflow.settings import get_settings

        settings = get_settings()
        publish_history(settings, history)
        yield settings


def test_incremental_build_recomputes_only_what_changed(store_home, history):
    settings = store_home
    first = build_features(settings)
    assert len(first.days) == 50 and first.rows["customer"] == len(history)
    assert stale_feature_days(settings) == [] and build_features(settings).days == []
    # Re-publishing identical bytes changes nothing; a corrected day 10 invalidates day 10 and
    # the 37 days after it (its windows' reach), nothing before.
    day10 = dt.date(2018, 4, 11)
    publish_history(settings, history[history["TX_DATETIME"].dt.date == day10])
    assert stale_feature_days(settings) == []
    corrected = history[history["TX_DATETIME"].dt.date == day10].copy()
    corrected.loc[corrected.index[0], "TX_AMOUNT"] += 1.0
    publish_history(settings, corrected)
    stale = stale_feature_days(settings)
    assert stale == [day10 + dt.timedelta(days=i) for i in range(38)]


def test_a_build_in_blocks_of_days_writes_the_same_partitions(store_home):
    """build_features works in blocks of days (bounded memory), each reading its 37 lookback
    days: every partition is byte for byte what one pass over the whole history writes, and
    holds exactly the rows and values compute_features gives for the whole lake."""
    from fraudflow.features.compute import TABLES
    from fraudflow.lake import list_partitions, read_lake

    settings = store_home
    days = list_partitions(settings)
    one_pass = settings.model_copy(update={"feature_block_days": len(days) + 40})
    build_features(one_pass, days=days)
    files = sorted(p for t in TABLES for p in feature_dir(settings, t).rglob("*.parquet"))
    whole = {p: p.read_bytes() for p in files}
    blocks = build_features(settings.model_copy(update={"feature_block_days": 4}), days=days)
    assert blocks.days == days and len(files) == 2 * len(days)
    assert [p for p in files if p.read_bytes() != whole[p]] == []
    lake = compute_features(read_lake(settings))
    for table in TABLES:
        written = pd.concat(pd.read_parquet(p) for p in files if f"/{table}/" in str(p))
        expected = lake[table]
        key = ["TRANSACTION_ID"]
        pd.testing.assert_frame_equal(
            written.sort_values(key).reset_index(drop=True),
            expected.sort_values(key).reset_index(drop=True)[written.columns].astype({expected.columns[0]: object}),
            check_dtype=False,
        )


def test_historical_features_equal_direct_computation_and_online_matches_offline(store_home, history):
    settings = store_home
    build_features(settings)
    fs.apply_feature_repo(settings)
    sample = history[history["TX_DATETIME"].dt.date == dt.date(2018, 5, 15)].head(300)
    # A day the feature build has not reached (its partition gone): the join stops, naming it,
    # instead of reading no row for its transactions. The next build heals it.
    shutil.rmtree(partition_dir(feature_dir(settings, "customer"), dt.date(2018, 5, 15)))
    with pytest.raises(FeaturesNotBuilt, match=r"1 lake day\(s\) are missing or stale \(2018-05-15 \.\. 2018-05-15\)"):
        pit.historical_features(settings, sample)
    assert build_features(settings).days == [dt.date(2018, 5, 15)]
    joined = pit.historical_features(settings, sample).set_index("TRANSACTION_ID")
    direct = compute_features(history)
    for table, cols in (("customer", CUSTOMER_FEATURES), ("terminal", TERMINAL_FEATURES)):
        expected = direct[table].set_index("TRANSACTION_ID").loc[joined.index, cols]
        np.testing.assert_allclose(joined[cols].to_numpy(float), expected.to_numpy(float), rtol=0, atol=1e-12)

    # In chunks of whole days (bounded memory), the join is the same, row for row and value for value.
    days = history[
        (history["TX_DATETIME"].dt.date >= dt.date(2018, 5, 10))
        & (history["TX_DATETIME"].dt.date <= dt.date(2018, 5, 16))
    ]
    whole = pit.historical_features(settings, days, chunk_rows=len(days))
    per_day = pit.historical_features(settings, days, chunk_rows=1)  # a day larger than the budget is its own chunk
    assert len(pit._day_chunks(pit.entity_frame(days), 1)) == 7 and len(whole) == len(days)
    pd.testing.assert_frame_equal(per_day, whole)
    np.testing.assert_allclose(
        whole.set_index("TRANSACTION_ID").loc[joined.index, MODEL_INPUTS].to_numpy(float),
        joined[MODEL_INPUTS].to_numpy(float),
    )
    # The training service's views reach back one second (each transaction's own row); the
    # online views' 31/38-day TTLs give the same values through a much larger join.
    store = fs.open_store(settings)
    online_views = store.get_feature_service(fs.ONLINE_FEATURE_SERVICE)
    wide = store.get_historical_features(entity_df=pit.entity_frame(days), features=online_views).to_df()
    wide = wide.fillna({c: 0 for c in MODEL_INPUTS}).set_index("TRANSACTION_ID").loc[whole["TRANSACTION_ID"]]
    np.testing.assert_array_equal(wide[MODEL_INPUTS].to_numpy(float), whole[MODEL_INPUTS].to_numpy(float))

    # Parity: after materializing up to T, the online store answers what the offline store
    # answers as of T, for sampled customers and terminals.
    end = dt.datetime(2018, 5, 21, tzinfo=dt.UTC)
    fs.materialize_online(settings, end=end)
    rng = np.random.default_rng(0)
    pairs = history.iloc[rng.choice(len(history), 60, replace=False)][["CUSTOMER_ID", "TERMINAL_ID"]]
    pairs = pairs.drop_duplicates("CUSTOMER_ID").drop_duplicates("TERMINAL_ID").head(40)
    requests = [
        {"CUSTOMER_ID": c, "TERMINAL_ID": t, "tx_amount": 12.5, "tx_datetime": end}
        for c, t in pairs.itertuples(index=False)
    ]
    online = fs.online_features(fs.open_store(settings), requests)
    as_of = pd.DataFrame(
        {
            "TRANSACTION_ID": range(len(pairs)),
            "CUSTOMER_ID": pairs["CUSTOMER_ID"].to_numpy(),
            "TERMINAL_ID": pairs["TERMINAL_ID"].to_numpy(),
            "TX_DATETIME": pd.Timestamp(end.replace(tzinfo=None) - dt.timedelta(microseconds=1)),
            "TX_AMOUNT": 12.5,
            "TX_TIME_DAYS": 0,
            "TX_FRAUD": 0,
            "TX_FRAUD_SCENARIO": 0,
        }
    )
    offline = pit.historical_features(settings, as_of, service_name=fs.ONLINE_FEATURE_SERVICE)
    for col in CUSTOMER_FEATURES + TERMINAL_FEATURES:
        np.testing.assert_allclose(online[col].fillna(0).to_numpy(float), offline[col].to_numpy(float), err_msg=col)
    assert set(MODEL_INPUTS) <= set(online.columns)
    assert online["TX_AMOUNT"].eq(12.5).all()


def test_numpy_request_flags_match_pandas_calendar():
    """The epoch arithmetic agrees with pandas' own weekday/hour on random times."""
    from fraudflow.features.compute import request_time_arrays

    rng = np.random.default_rng(3)
    when = pd.to_datetime(rng.integers(946_684_800, 4_102_444_800, 20_000), unit="s")  # 2000..2100
    out = request_time_arrays(np.ones(len(when)), when.to_numpy())
    assert (out["TX_DURING_WEEKEND"] == (when.weekday >= 5)).all()
    assert (out["TX_DURING_NIGHT"] == (when.hour <= 6)).all()
    aware = pd.Series(when.tz_localize("UTC").tz_convert("Europe/Brussels"))
    flags = request_time_features(pd.Series(np.ones(len(when))), aware)
    assert (flags["TX_DURING_NIGHT"].to_numpy() == out["TX_DURING_NIGHT"]).all()  # judged in UTC


def test_a_process_that_used_feast_exits_without_nanobind_leak_noise(store_home):
    """Feast's DuckDB offline store (through ibis) leaves a process-wide DuckDB connection
    open; at exit nanobind then printed dozens of ``nanobind: leaked ...`` lines after every
    command. ``open_store`` closes it before interpreter teardown."""
    script = (
        "import datetime as dt\n"
        "from fraudflow.settings import get_settings\n"
        "from fraudflow.features import store\n"
        "store.materialize_online(get_settings(), end=dt.datetime(2018, 5, 22, tzinfo=dt.UTC))\n"
    )
    env = {**os.environ, "FRAUDFLOW_HOME": str(store_home.root)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "nanobind" not in done.stderr, done.stderr[-1500:]
