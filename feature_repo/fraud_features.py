"""What fraudflow's feature store holds (where it lives: feature_store.yaml).

The offline tables are the lake's daily feature partitions written by
``fraudflow.features.build_features``: one row per entity and transaction time, so a
point-in-time join on a transaction's timestamp returns the handbook's value for it.
"""

from datetime import timedelta

import pandas as pd
from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, RequestSource, ValueType
from feast.data_format import ParquetFormat
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Array, Float64, Int64, String, UnixTimestamp

from fraudflow.features.compute import CUSTOMER_FEATURES, TERMINAL_FEATURES, WINDOWS, feature_dir
from fraudflow.features.history import CUSTOMER_HISTORY, CUSTOMER_LIVE, TERMINAL_HISTORY, push_source
from fraudflow.layout import PART_FILE, PARTITION_GLOB
from fraudflow.schema import LABEL_DELAY_DAYS
from fraudflow.settings import get_settings

# Feast reads this module to know what exists: the sources' paths are the current home's
# (read when fraudflow applies the repo, never when fraudflow is imported).
_settings = get_settings()

# A card (the handbook's customer): spending windows are keyed on it.
customer = Entity(name="customer", join_keys=["CUSTOMER_ID"], value_type=ValueType.STRING)
# A merchant terminal: fraud risk windows are keyed on it.
terminal = Entity(name="terminal", join_keys=["TERMINAL_ID"], value_type=ValueType.STRING)


def _parquet_source(name: str, path: str):
    """A parquet source for the engine's offline store: a FileSource for DuckDB or, with
    FRAUDFLOW_ENGINE=spark, a SparkSource (Feast's Spark store reads no other kind). The
    format must be explicit: Feast's DuckDB store returns no table (and then fails) for a path
    that does not end in ".parquet"."""
    if _settings.engine == "spark":
        from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

        return SparkSource(name=name, path=path, file_format="parquet", timestamp_field="event_timestamp")
    return FileSource(name=name, path=path, file_format=ParquetFormat(), timestamp_field="event_timestamp")


# The daily feature partitions.
customer_spending_source = _parquet_source(
    "customer_spending_source", str(feature_dir(_settings, "customer") / PARTITION_GLOB / PART_FILE)
)
terminal_risk_source = _parquet_source(
    "terminal_risk_source", str(feature_dir(_settings, "terminal") / PARTITION_GLOB / PART_FILE)
)

# Counts and mean amounts over 1/7/30 days, current transaction included. TTL: the longest
# window plus a day; an older row describes an empty window, so serving falls back to defaults.
customer_spending_fv = FeatureView(
    name="customer_spending",
    entities=[customer],
    ttl=timedelta(days=max(WINDOWS) + 1),
    schema=[Field(name=f, dtype=Int64 if "_NB_TX_" in f else Float64) for f in CUSTOMER_FEATURES],
    source=customer_spending_source,
    online=True,
    tags={"owner": "fraudflow", "windows": ",".join(map(str, WINDOWS)) + " days"},
)

# Transaction counts and fraud shares over 1/7/30 days behind the 7-day label delay.
# TTL: delay + the longest window + a day.
terminal_risk_fv = FeatureView(
    name="terminal_risk",
    entities=[terminal],
    ttl=timedelta(days=LABEL_DELAY_DAYS + max(WINDOWS) + 1),
    schema=[Field(name=f, dtype=Int64 if "_NB_TX_" in f else Float64) for f in TERMINAL_FEATURES],
    source=terminal_risk_source,
    online=True,
    tags={"owner": "fraudflow", "label_delay_days": str(LABEL_DELAY_DAYS)},
)

# The same tables as the training set reads them. Every transaction has its own row, at its own
# instant, in both tables, so a point-in-time join needs to reach no further back than that row:
# with the serving TTLs above, Feast's join pairs each entity row with every row of its card
# (terminal) in the last 31 (38) days before keeping the newest, ~7x the time for the same
# values (tests/test_features.py checks they are equal). Offline only.
customer_spending_at_transaction_fv = FeatureView(
    name="customer_spending_at_transaction",
    entities=[customer],
    ttl=timedelta(seconds=1),
    schema=customer_spending_fv.schema,
    source=customer_spending_source,
    online=False,
    tags={**customer_spending_fv.tags, "reads": "the row at the transaction's own instant"},
)
terminal_risk_at_transaction_fv = FeatureView(
    name="terminal_risk_at_transaction",
    entities=[terminal],
    ttl=timedelta(seconds=1),
    schema=terminal_risk_fv.schema,
    source=terminal_risk_source,
    online=False,
    tags={**terminal_risk_fv.tags, "reads": "the row at the transaction's own instant"},
)

# What the caller sends with each transaction (the scoring API's own field names).
transaction_request = RequestSource(
    name="transaction_request",
    schema=[Field(name="tx_amount", dtype=Float64), Field(name="tx_datetime", dtype=UnixTimestamp)],
)


# Amount, weekend and night flags: the same function in training and serving.
@on_demand_feature_view(
    sources=[transaction_request],
    schema=[
        Field(name="TX_AMOUNT", dtype=Float64),
        Field(name="TX_DURING_WEEKEND", dtype=Int64),
        Field(name="TX_DURING_NIGHT", dtype=Int64),
    ],
    mode="pandas",
)
def transaction_request_features(inputs: pd.DataFrame) -> pd.DataFrame:
    # Feast rebuilds this function from its source text, without this module's globals:
    # the import must live in the body.
    from fraudflow.features.compute import request_time_features

    return request_time_features(inputs["tx_amount"], inputs["tx_datetime"])


# The model's 15 inputs as training sets, drift checks and refits read them (point in time, at
# each transaction); versioned because models are trained against a fixed list.
fraud_detection_v1 = FeatureService(
    name="fraud_detection_v1",
    features=[transaction_request_features, customer_spending_at_transaction_fv, terminal_risk_at_transaction_fv],
    tags={"model_inputs": "15"},
)

# The same 15 inputs from the online store: each entity's materialized latest row.
fraud_detection_online_v1 = FeatureService(
    name="fraud_detection_online_v1",
    features=[transaction_request_features, customer_spending_fv, terminal_risk_fv],
    tags={"model_inputs": "15"},
)


# -- Real-time windows (fraudflow.features.history) -------------------------------------------
# The scoring service computes the 12 window features at the instant of each request from the
# entities' recent transactions, with the same function as the offline tables. Histories are
# pushed (batch path after each day; the scoring path for each card transaction it scores);
# nothing is materialized from these sources, which exist because a push source needs a batch
# source.
def _pushed(view: str) -> PushSource:
    archive = _parquet_source(f"{view}_archive", str(feature_dir(_settings, view) / "history.parquet"))
    return PushSource(name=push_source(view), batch_source=archive)


_seconds, _ids = Field(name="TX_SECONDS", dtype=Array(Int64)), Field(name="TX_IDS", dtype=Array(String))

# A card's lake transactions of the last 30 days; THROUGH_SECONDS: the end of the newest lake day.
customer_history_fv = FeatureView(
    name=CUSTOMER_HISTORY,
    entities=[customer],
    ttl=timedelta(0),
    schema=[_ids, _seconds, Field(name="TX_CENTS", dtype=Array(Int64)), Field(name="THROUGH_SECONDS", dtype=Int64)],
    source=_pushed(CUSTOMER_HISTORY),
    online=True,
    tags={"owner": "fraudflow", "written_by": "batch"},
)

# The card's transactions scored live after THROUGH_SECONDS (written before each answer).
customer_live_fv = FeatureView(
    name=CUSTOMER_LIVE,
    entities=[customer],
    ttl=timedelta(0),
    schema=[_ids, _seconds, Field(name="TX_CENTS", dtype=Array(Int64))],
    source=_pushed(CUSTOMER_LIVE),
    online=True,
    tags={"owner": "fraudflow", "written_by": "scoring service"},
)

# A terminal's lake transactions of the last 37 days with labels (only the batch path knows labels).
terminal_history_fv = FeatureView(
    name=TERMINAL_HISTORY,
    entities=[terminal],
    ttl=timedelta(0),
    schema=[_seconds, Field(name="TX_FRAUD", dtype=Array(Int64)), Field(name="THROUGH_SECONDS", dtype=Int64)],
    source=_pushed(TERMINAL_HISTORY),
    online=True,
    tags={"owner": "fraudflow", "written_by": "batch", "label_delay_days": str(LABEL_DELAY_DAYS)},
)

# What the scoring service reads per request.
fraud_detection_realtime_v1 = FeatureService(
    name="fraud_detection_realtime_v1",
    features=[customer_history_fv, customer_live_fv, terminal_history_fv],
    tags={"windows": "computed per request by fraudflow.features.compute.window_features"},
)
