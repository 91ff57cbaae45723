"""Real-time window features: what the service feeds the model equals the offline point-in-time
features of the same transaction (``fraudflow.features.history``).

In-process tests use a small home of their own (40 simulated days, the first 38 published and
pushed by the batch path) and score the last two days live in time order with the service's
``FeatureLookup``; the HTTP tests start a real ``bentoml serve`` on the session's serving home
and read what the service fed the model from its prediction log.
"""

from __future__ import annotations

import datetime as dt

import httpx
import numpy as np
import pandas as pd
import pytest

from fraudflow.features.compute import CUSTOMER_FEATURES, TERMINAL_FEATURES, compute_features
from fraudflow.serving.scoring import Transaction

ENTITY_FEATURES = CUSTOMER_FEATURES + TERMINAL_FEATURES
DAYS, PUBLISHED = 40, 38


def _offline(frame: pd.DataFrame) -> pd.DataFrame:
    """The offline definition: every transaction's 12 window features, by transaction id."""
    tables = compute_features(frame)
    return (
        tables["customer"]
        .set_index("TRANSACTION_ID")[CUSTOMER_FEATURES]
        .join(tables["terminal"].set_index("TRANSACTION_ID")[TERMINAL_FEATURES])
    )


def _transaction(row, **overrides) -> Transaction:
    body = {
        "transaction_id": int(row.TRANSACTION_ID),
        "tx_datetime": pd.Timestamp(row.TX_DATETIME).to_pydatetime(),
        "customer_id": str(row.CUSTOMER_ID),
        "terminal_id": str(row.TERMINAL_ID),
        "tx_amount": float(row.TX_AMOUNT),
    }
    return Transaction.model_validate({**body, **overrides})


@pytest.fixture(scope="module")
def history_home(tmp_path_factory):
    """``(settings, all 40 days)``: 38 days published, features built, histories pushed."""
    from fraudflow.demo.simulate import SimulationConfig, simulate_transactions
    from fraudflow.features.compute import build_features
    from fraudflow.features.store import apply_feature_repo, materialize_online
    from fraudflow.schema import normalise_transactions
    from fraudflow.settings import get_settings
    from tests.helpers import publish_history

    world = SimulationConfig(days=DAYS, customers=300, terminals=600, seed=5)
    frame = normalise_transactions(simulate_transactions(world))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FRAUDFLOW_HOME", str(tmp_path_factory.mktemp("realtime") / "home"))
        settings = get_settings()
    first_live = world.start + dt.timedelta(days=PUBLISHED)
    publish_history(settings, frame[frame["TX_DATETIME"].dt.date < first_live])
    build_features(settings)
    apply_feature_repo(settings)
    materialize_online(settings, end=dt.datetime.combine(first_live, dt.time()))
    return settings, frame, first_live


def _score_live(settings, rows: pd.DataFrame, batch: int = 1) -> pd.DataFrame:
    """Score ``rows`` in time order, ``batch`` transactions per request, as the service does;
    the served windows by transaction id."""
    from fraudflow.serving.scoring import FeatureLookup

    lookup = FeatureLookup(settings)
    ordered = rows.sort_values("TX_DATETIME", kind="stable")
    served = []
    for start in range(0, len(ordered), batch):
        chunk = ordered.iloc[start : start + batch]
        features, degraded, reasons = lookup.lookup([_transaction(r) for r in chunk.itertuples(index=False)])
        assert not degraded.any(), reasons
        served.append(features[ENTITY_FEATURES].set_axis(chunk["TRANSACTION_ID"].to_numpy()))
    return pd.concat(served)


def test_live_days_get_exactly_the_offline_features(history_home):
    settings, frame, first_live = history_home
    day = frame[frame["TX_DATETIME"].dt.date == first_live]
    served = _score_live(settings, day)
    offline = _offline(frame).loc[served.index]
    mismatched = (served - offline).abs() > 1e-6
    assert mismatched.to_numpy().sum() == 0, mismatched.sum()
    # The failing case: the materialized values of the day before (what the service read
    # before it computed windows per request) differ for most of these transactions.
    stale = _offline(frame[frame["TX_DATETIME"].dt.date < first_live])
    last = stale.join(frame.set_index("TRANSACTION_ID")[["CUSTOMER_ID"]]).groupby("CUSTOMER_ID").last()
    by_card = day.set_index("TRANSACTION_ID")["CUSTOMER_ID"]
    yesterday = last.reindex(by_card.loc[served.index])[CUSTOMER_FEATURES].to_numpy()
    assert (np.abs(yesterday - served[CUSTOMER_FEATURES].to_numpy()) > 1e-6).any(axis=1).mean() > 0.5


def test_a_retried_transaction_counts_once_and_feast_reads_what_the_service_wrote(history_home):
    from fraudflow.features.store import open_store
    from fraudflow.serving.scoring import FeatureLookup

    settings, frame, first_live = history_home
    card = frame[frame["TX_DATETIME"].dt.date < first_live]["CUSTOMER_ID"].iloc[0]
    base = frame[frame["CUSTOMER_ID"] == card].iloc[-1]
    at = pd.Timestamp(dt.datetime.combine(first_live + dt.timedelta(days=5), dt.time(9)))
    lookup = FeatureLookup(settings)
    new = [
        _transaction(base, transaction_id=9_000_001, tx_datetime=at.to_pydatetime(), tx_amount=10.0),
        _transaction(
            base, transaction_id=9_000_002, tx_datetime=(at + pd.Timedelta("30min")).to_pydatetime(), tx_amount=20.0
        ),
    ]
    first = lookup.lookup([new[0]])[0]
    second = lookup.lookup([new[1]])[0]
    retried = lookup.lookup([new[1]])[0]  # a client retry: same id, same answer, counted once
    pd.testing.assert_frame_equal(second, retried)
    assert second["CUSTOMER_ID_NB_TX_1DAY_WINDOW"].iloc[0] == first["CUSTOMER_ID_NB_TX_1DAY_WINDOW"].iloc[0] + 1
    third = lookup.lookup(
        [_transaction(base, transaction_id=9_000_003, tx_datetime=(at + pd.Timedelta("1h")).to_pydatetime())]
    )[0]
    assert third["CUSTOMER_ID_NB_TX_1DAY_WINDOW"].iloc[0] == first["CUSTOMER_ID_NB_TX_1DAY_WINDOW"].iloc[0] + 2
    # Feast itself reads the card's live row the service wrote (the online store stays Feast's).
    live = (
        open_store(settings)
        .get_online_features(features=["customer_live:TX_IDS"], entity_rows=[{"CUSTOMER_ID": card}])
        .to_dict()
    )
    assert {"9000001", "9000002", "9000003"} <= set(live["TX_IDS"][0])
    assert live["TX_IDS"][0].count("9000002") == 1


def test_a_label_younger_than_the_delay_never_reaches_a_terminal_feature(history_home):
    from fraudflow.features.history import OnlineHistories, batch_history_rows, push_source
    from fraudflow.features.store import open_store
    from fraudflow.lake import read_lake
    from fraudflow.serving.scoring import FeatureLookup

    settings, frame, first_live = history_home
    lake = read_lake(settings)
    through = dt.datetime.combine(first_live, dt.time()) - dt.timedelta(seconds=1)
    busiest = lake["TERMINAL_ID"].value_counts().index[0]
    probe = _transaction(
        lake[lake["TERMINAL_ID"] == busiest].iloc[-1],
        transaction_id=9_100_000,
        customer_id="probe-card",
        tx_datetime=dt.datetime.combine(first_live, dt.time(12)),
    )
    store = open_store(settings)

    def served_terminal_features(labels: pd.Series) -> np.ndarray:
        rows = batch_history_rows(lake.assign(TX_FRAUD=labels), through)["terminal_history"]
        store.push(push_source("terminal_history"), rows.assign(event_timestamp=pd.Timestamp.now(tz="UTC")))
        OnlineHistories(store)  # the views still resolve after the push
        return FeatureLookup(settings).lookup([probe])[0][TERMINAL_FEATURES].to_numpy()[0]

    probe_time = pd.Timestamp(probe.tx_datetime)
    young = lake["TX_DATETIME"] > probe_time - pd.Timedelta(days=7)
    assert young.any()
    try:
        truth = served_terminal_features(lake["TX_FRAUD"])
        # Every label of the last 7 days flipped to fraud: nothing served may change ...
        np.testing.assert_allclose(served_terminal_features(lake["TX_FRAUD"].where(~young, 1)), truth)
        # ... while the same flip on labels just past the delay does change it (the check can fail).
        matured = (lake["TX_DATETIME"] <= probe_time - pd.Timedelta(days=7)) & (
            lake["TX_DATETIME"] > probe_time - pd.Timedelta(days=8)
        )
        assert (served_terminal_features(lake["TX_FRAUD"].where(~matured, 1)) != truth).any()
    finally:
        served_terminal_features(lake["TX_FRAUD"])  # leave the true labels for the next test


def test_the_daily_batch_of_a_day_already_pushed_live_converges(history_home):
    """Day 39 was scored live (first test); its file arrives and the batch path pushes it:
    day 40, scored live in batches of 250 (``/score_batch``: many cards, some twice, per
    request), still gets exactly the offline features, and the live copies of day 39 are
    superseded by the lake's."""
    from fraudflow.features.compute import build_features
    from fraudflow.features.history import CUSTOMER_HISTORY, OnlineHistories
    from fraudflow.features.store import materialize_online, open_store
    from tests.helpers import publish_history

    settings, frame, first_live = history_home
    second_live = first_live + dt.timedelta(days=1)
    publish_history(settings, frame[frame["TX_DATETIME"].dt.date == first_live])
    build_features(settings)
    materialize_online(settings, end=dt.datetime.combine(second_live, dt.time()))
    day = frame[frame["TX_DATETIME"].dt.date == second_live]
    served = _score_live(settings, day, batch=250)
    offline = _offline(frame).loc[served.index]
    assert ((served - offline).abs() > 1e-6).to_numpy().sum() == 0
    card = day["CUSTOMER_ID"].iloc[0]
    rows = OnlineHistories(open_store(settings)).read([card], ["-"])
    through = rows[f"{CUSTOMER_HISTORY}__THROUGH_SECONDS"][0]
    assert through == int(pd.Timestamp(dt.datetime.combine(second_live, dt.time())).timestamp()) - 1
    day_39 = set(frame[(frame["CUSTOMER_ID"] == card) & (frame["TX_DATETIME"].dt.date == first_live)]["TRANSACTION_ID"])
    assert {int(i) for i in rows[f"{CUSTOMER_HISTORY}__TX_IDS"][0]} >= day_39


# -- through HTTP ------------------------------------------------------------------------------


def _served_log(settings, ids: set[int]) -> pd.DataFrame:
    """The prediction-log rows of ``ids``: what the service fed the model, as it wrote them."""
    import json

    from fraudflow.serving.prediction_log import read_predictions

    log = read_predictions(settings.predictions_dir)
    mine = log[log["transaction_id"].astype(str).isin({str(i) for i in ids})]
    features = pd.DataFrame([json.loads(f) if isinstance(f, str) else f for f in mine["features"]])
    features.index = mine["transaction_id"].astype(int).to_numpy()
    return features


def test_a_card_history_through_http_gives_hand_computed_values_and_survives_a_restart(serving_home):
    """Several transactions of one card within a day (one retried), a service restart in the
    middle of the day, then one more: each served window is the hand-computed one."""
    from fraudflow.deployment.service_process import ServingProcess

    settings, frame = serving_home
    card = frame["CUSTOMER_ID"].value_counts().index[0]
    mine = frame[frame["CUSTOMER_ID"] == card]
    day = frame["TX_DATETIME"].max().normalize() + pd.Timedelta(days=1)
    plan = [  # (id, time of day, amount)
        (8_000_001, "08:00", 10.00),
        (8_000_002, "08:30", 20.50),
        (8_000_002, "08:30", 20.50),  # retried by the client
        (8_000_003, "14:00", 31.25),
        (8_000_004, "18:00", 40.00),  # after the restart
    ]
    terminal = mine["TERMINAL_ID"].iloc[-1]

    def send(url: str, tx_id: int, at: str, amount: float) -> None:
        body = {
            "transaction_id": tx_id,
            "tx_datetime": f"{day.date()}T{at}:00",
            "customer_id": card,
            "terminal_id": terminal,
            "tx_amount": amount,
        }
        response = httpx.post(f"{url}/score", json=body, timeout=10)
        assert response.status_code == 200, response.text
        assert response.json()["degraded"] is False

    service = ServingProcess(settings).start()
    try:
        for tx_id, at, amount in plan[:4]:
            send(service.url, tx_id, at, amount)
    finally:
        service.stop()
    service = ServingProcess(settings).start()  # restarted in the middle of the day
    try:
        send(service.url, *plan[4])
    finally:
        service.stop()  # flushes the prediction log

    served = _served_log(settings, {p[0] for p in plan})
    assert served.index.value_counts()[8_000_002] == 2  # both answers logged, counted once
    served = served[~served.index.duplicated(keep="last")]
    new = pd.DataFrame(
        {
            "TX_DATETIME": [day + pd.Timedelta(p[1] + ":00") for p in plan[:2] + plan[3:]],
            "TX_AMOUNT": [10.0, 20.5, 31.25, 40.0],
        },
        index=[8_000_001, 8_000_002, 8_000_003, 8_000_004],
    )
    history = pd.concat([mine.set_index("TRANSACTION_ID")[["TX_DATETIME", "TX_AMOUNT"]], new])
    for tx_id, row in new.iterrows():
        for n in (1, 7, 30):  # by hand: the card's transactions in (t - n days, t]
            inside = history[
                (history["TX_DATETIME"] > row.TX_DATETIME - pd.Timedelta(days=n))
                & (history["TX_DATETIME"] <= row.TX_DATETIME)
            ]
            assert served.loc[tx_id, f"CUSTOMER_ID_NB_TX_{n}DAY_WINDOW"] == len(inside), (tx_id, n)
            assert served.loc[tx_id, f"CUSTOMER_ID_AVG_AMOUNT_{n}DAY_WINDOW"] == pytest.approx(
                inside["TX_AMOUNT"].mean(), abs=1e-6
            )
    # The restart lost nothing acknowledged: the last transaction counts all four of the day.
    assert served.loc[8_000_004, "CUSTOMER_ID_NB_TX_1DAY_WINDOW"] >= 4
