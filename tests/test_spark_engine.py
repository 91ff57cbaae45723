"""``FRAUDFLOW_ENGINE=spark``: build_features on Spark (local mode, a real JVM) writes the same
feature partitions as the local engine, value for value, from the same lake.

The lake is written by the real ingestion functions; the local engine's tables are the
reference (their windows are tested by hand in test_features.py).
"""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest

from fraudflow.demo.simulate import SimulationConfig, simulate_transactions
from fraudflow.features.compute import TABLES, build_features, feature_dir, stale_feature_days
from fraudflow.layout import PART_FILE, partition_dir
from fraudflow.schema import normalise_transactions
from tests.helpers import publish_history


@pytest.fixture(scope="module")
def lake_home(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FRAUDFLOW_HOME", str(tmp_path_factory.mktemp("spark") / "home"))
        from fraudflow.settings import get_settings

        settings = get_settings()
        history = normalise_transactions(
            simulate_transactions(SimulationConfig(days=45, customers=300, terminals=600, seed=12))
        )
        days = publish_history(settings, history)
        yield settings, days
        from pyspark.sql import SparkSession

        if (session := SparkSession.getActiveSession()) is not None:
            session.stop()


@pytest.fixture(scope="module")
def spark_home(lake_home, tmp_path_factory):
    """A second home on the Spark engine over a copy of the same lake (the tests compare the
    two homes; this one keeps the Spark engine's tables and Feast registry)."""
    import shutil

    from fraudflow.settings import Settings

    settings, _ = lake_home
    spark = Settings(home=tmp_path_factory.mktemp("spark-engine") / "home", engine="spark")
    shutil.copytree(settings.transactions_dir, spark.transactions_dir)
    return spark


def _tables(settings, days: list[dt.date]) -> dict[tuple[str, dt.date], pd.DataFrame]:
    return {
        (table, day): pd.read_parquet(partition_dir(feature_dir(settings, table), day) / PART_FILE)
        for table in TABLES
        for day in days
    }


def test_spark_features_equal_the_local_engine_value_for_value(lake_home, spark_home):
    """Every partition the Spark engine writes (in blocks of 30 days, each reading its own 37
    lookback days) holds the local engine's rows in the same order, with equal values and
    types; the manifests mark the days fresh and the lineage names the engine."""
    settings, days = lake_home
    local = build_features(settings, days=days)
    spark = build_features(spark_home, days=days)
    assert spark.engine == "spark" and spark.rows == local.rows and spark.days == days
    expected, written = _tables(settings, days), _tables(spark_home, days)
    for key, frame in expected.items():
        pd.testing.assert_frame_equal(written[key], frame, check_exact=True, obj=f"{key[0]} {key[1]}")
    assert stale_feature_days(spark_home) == []
    assert sum(len(f) for (table, _), f in written.items() if table == "customer") == local.rows["customer"]
    events = [json.loads(line) for line in spark_home.lineage_log.read_text().splitlines()]
    assert events[-1]["stage"] == "build_features" and events[-1]["wrote"]["engine"] == "spark"
    # Nothing of the job is left outside the layout: the staging folder is removed.
    assert list((spark_home.spark_dir / "staging").iterdir()) == []


def test_feast_spark_offline_store_joins_and_materializes_what_duckdb_does(lake_home, spark_home):
    """With FRAUDFLOW_ENGINE=spark, Feast's Spark offline store (SparkSources over the same
    partitions) returns the DuckDB store's training rows value for value (one per transaction,
    same-second ones included), and materializes the same online rows."""
    from fraudflow.features.point_in_time import historical_features
    from fraudflow.features.store import (
        apply_feature_repo,
        materialize_online,
        online_features,
        open_store,
    )
    from fraudflow.lake import read_lake

    settings, days = lake_home
    spark = spark_home
    for home in (settings, spark):
        if stale_feature_days(home):  # built by the test above unless run alone
            build_features(home, days=days)
    transactions = read_lake(settings)
    # This world has cards and terminals with two transactions in the same second: Feast's
    # Spark store returns such entity rows twice (its row id is the join key and timestamp).
    assert transactions.duplicated(["CUSTOMER_ID", "TX_DATETIME"]).any()
    assert transactions.duplicated(["TERMINAL_ID", "TX_DATETIME"]).any()
    joined = {}
    for engine, home in (("local", settings), ("spark", spark)):
        apply_feature_repo(home)
        joined[engine] = historical_features(home, transactions, chunk_rows=len(transactions) // 2)
        materialize_online(home, end=dt.datetime.combine(days[-1], dt.time()) + dt.timedelta(days=1))
    sources = {s.name: type(s).__name__ for s in open_store(spark).list_data_sources()}
    assert sources["customer_spending_source"] == "SparkSource", sources
    assert len(joined["local"]) == len(transactions) and joined["local"]["CUSTOMER_ID_NB_TX_30DAY_WINDOW"].gt(1).any()
    assert joined["spark"]["TRANSACTION_ID"].is_unique
    pd.testing.assert_frame_equal(joined["spark"], joined["local"], check_exact=True)
    requests = [
        {"CUSTOMER_ID": c, "TERMINAL_ID": t, "tx_amount": 12.5, "tx_datetime": "2018-05-16T10:00:00"}
        for c, t in transactions[["CUSTOMER_ID", "TERMINAL_ID"]].head(50).itertuples(index=False)
    ]
    online = {
        engine: online_features(open_store(home), requests) for engine, home in (("local", settings), ("spark", spark))
    }
    pd.testing.assert_frame_equal(online["spark"], online["local"], check_exact=True)
    assert online["local"]["TERMINAL_ID_NB_TX_30DAY_WINDOW"].notna().all()
    # Switched back to the local engine before build_features re-applied the repo: Feast's DuckDB
    # store would fail on the SparkSources with a bare AssertionError; the stage says what to do.
    from fraudflow.features.store import RegistryOfAnotherEngine
    from fraudflow.settings import Settings

    switched = Settings(home=spark.home, engine="local")
    with pytest.raises(RegistryOfAnotherEngine, match="FRAUDFLOW_ENGINE=local reads FileSources: run build_features"):
        historical_features(switched, transactions.head(20))


def test_a_model_trained_through_either_engine_gets_the_same_metrics_and_verdict(lake_home, spark_home):
    """The training path end to end on each engine (Spark's feature build and Feast's Spark
    store against numpy and DuckDB): the same training and test rows, so the same XGBoost
    model, the same test metrics and the same gate verdict."""
    from fraudflow.features.store import apply_feature_repo
    from fraudflow.training.gate import GateConfig, evaluate_gate
    from fraudflow.training.train import train_candidate
    from fraudflow.training.training_set import build_training_set

    settings, days = lake_home
    outcome = {}
    for engine, home in (("local", settings), ("spark", spark_home)):
        if stale_feature_days(home):  # built by the first test unless run alone
            build_features(home, days=days)
        apply_feature_repo(home)
        training_set = build_training_set(home, run_date=days[-1], run_id=f"engines-{engine}", reason="test")
        run = train_candidate(home, candidate="xgboost", training_set=training_set, params={"n_estimators": 50})
        test = pd.read_parquet(training_set.test_path)
        verdict = evaluate_gate(
            candidate="xgboost",
            frame=test,
            challenger_scores=pd.read_parquet(run.scores_path)["score"].to_numpy(),
            champion_scores=None,
            # floors for a 300-card world (the defaults, AP 0.50 / AUC 0.80, are for the handbook's size)
            config=GateConfig.from_settings(home).model_copy(
                update={"min_average_precision": 0.4, "min_auc_roc": 0.75}
            ),
        )
        outcome[engine] = (pd.read_parquet(training_set.train_path), test, run.metrics, verdict)
    (train, test, metrics, verdict), spark_outcome = outcome["local"], outcome["spark"]
    pd.testing.assert_frame_equal(spark_outcome[0], train, check_exact=True)
    pd.testing.assert_frame_equal(spark_outcome[1], test, check_exact=True)
    assert spark_outcome[2] == metrics
    assert spark_outcome[3].model_dump() == verdict.model_dump()
    assert verdict.passed, verdict.reason


def test_through_spark_connect_the_task_holds_no_driver_and_gets_the_same_features_and_join(
    lake_home, tmp_path_factory
):
    """FRAUDFLOW_SPARK_MASTER=sc://host:port: the feature build and Feast's Spark point-in-time
    join run in a Spark Connect server (started here, as a team runs one beside its cluster).
    The calling process, the Airflow task, is a gRPC client with no Spark driver of its own,
    and gets the local engine's partitions and DuckDB's join, value for value."""
    import os
    import shutil

    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    from fraudflow.features.point_in_time import historical_features
    from fraudflow.features.store import apply_feature_repo
    from fraudflow.lake import read_lake
    from fraudflow.settings import Settings
    from tests.spark_connect import spark_connect_server

    settings, days = lake_home
    if (classic := SparkSession.getActiveSession()) is not None:
        classic.stop()  # the other tests' local-mode driver: from here this process is a client only
    if stale_feature_days(settings):
        build_features(settings, days=days)
    transactions = read_lake(settings)
    apply_feature_repo(settings)
    expected = historical_features(settings, transactions)
    scratch = tmp_path_factory.mktemp("spark-connect")
    with spark_connect_server(scratch / "server") as url:
        home = Settings(home=scratch / "home", engine="spark", spark_master=url)
        shutil.copytree(settings.transactions_dir, home.transactions_dir)
        try:
            built = build_features(home, days=days)
            session = SparkSession.getActiveSession()
            assert type(session).__module__ == "pyspark.sql.connect.session", type(session)
            assert SparkContext._active_spark_context is None  # the driver is the server's
            assert built.engine == "spark" and stale_feature_days(home) == []
            local, remote = _tables(settings, days), _tables(home, days)
            for key, frame in local.items():
                pd.testing.assert_frame_equal(remote[key], frame, check_exact=True, obj=f"{key[0]} {key[1]}")
            apply_feature_repo(home)
            joined = historical_features(home, transactions, chunk_rows=len(transactions) // 2)
            pd.testing.assert_frame_equal(joined, expected, check_exact=True)
        finally:
            if (client := SparkSession.getActiveSession()) is not None:
                client.stop()
            os.environ.pop("SPARK_CONNECT_MODE_ENABLED", None)  # set by the Connect builder
