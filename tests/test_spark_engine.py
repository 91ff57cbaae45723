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


def _tables(settings, days: list[dt.date]) -> dict[tuple[str, dt.date], pd.DataFrame]:
    return {
        (table, day): pd.read_parquet(partition_dir(feature_dir(settings, table), day) / PART_FILE)
        for table in TABLES
        for day in days
    }


def test_spark_features_equal_the_local_engine_value_for_value(lake_home):
    """Every partition the Spark engine writes (in blocks of 20 days, each reading its own 37
    lookback days) holds the local engine's rows in the same order, with equal values and
    types; the manifests mark the days fresh and the lineage names the engine."""
    settings, days = lake_home
    local = build_features(settings, days=days)
    expected = _tables(settings, days)
    spark = build_features(settings.model_copy(update={"engine": "spark", "feature_block_days": 20}), days=days)
    assert spark.engine == "spark" and spark.rows == local.rows and spark.days == days
    written = _tables(settings, days)
    for key, frame in expected.items():
        pd.testing.assert_frame_equal(written[key], frame, check_exact=True, obj=f"{key[0]} {key[1]}")
    assert stale_feature_days(settings) == []
    assert sum(len(f) for (table, _), f in written.items() if table == "customer") == local.rows["customer"]
    events = [json.loads(line) for line in settings.lineage_log.read_text().splitlines()]
    assert events[-1]["stage"] == "build_features" and events[-1]["wrote"]["engine"] == "spark"
    # Nothing of the job is left outside the layout: the staging folder is removed.
    assert list((settings.spark_dir / "staging").iterdir()) == []


def test_feast_spark_offline_store_joins_and_materializes_what_duckdb_does(lake_home, tmp_path):
    """With FRAUDFLOW_ENGINE=spark, Feast's Spark offline store (SparkSources over the same
    partitions) returns the DuckDB store's training rows value for value (one per transaction,
    same-second ones included), and materializes the same online rows."""
    import shutil

    from fraudflow.features.store import (
        apply_feature_repo,
        historical_features,
        materialize_online,
        online_features,
        open_store,
    )
    from fraudflow.lake import read_lake

    settings, days = lake_home
    build_features(settings, days=days)
    from fraudflow.settings import Settings

    spark = Settings(home=tmp_path / "spark-home", engine="spark")
    shutil.copytree(settings.lake_dir, spark.lake_dir)
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
