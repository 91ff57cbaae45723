"""Point-in-time feature rows from Feast's offline store: training sets and drift windows.

Every lake transaction is joined with the feature service ``fraud_detection_v1`` at its own
timestamp, through whichever offline store the engine names (DuckDB, or Spark's), in chunks of
whole days so that memory follows the largest chunk, not the history. Both stores' results come
back with the same types and one row per transaction.
"""

from __future__ import annotations

import pandas as pd

from fraudflow.features.compute import MODEL_INPUTS, require_fresh_features
from fraudflow.features.store import FEATURE_SERVICE, open_store, require_registry_engine
from fraudflow.settings import Settings


def entity_frame(transactions: pd.DataFrame) -> pd.DataFrame:
    """The entity dataframe for a point-in-time join: entities, event time, request fields,
    and pass-through columns (label, scenario, ids) for evaluation."""
    when = pd.to_datetime(transactions["TX_DATETIME"]).dt.tz_localize("UTC")
    frame = transactions[
        ["TRANSACTION_ID", "CUSTOMER_ID", "TERMINAL_ID", "TX_TIME_DAYS", "TX_FRAUD", "TX_FRAUD_SCENARIO"]
    ].copy()
    frame["event_timestamp"] = when
    frame["tx_amount"] = transactions["TX_AMOUNT"].astype("float64")
    frame["tx_datetime"] = when
    return frame.reset_index(drop=True)


def historical_features(
    settings: Settings,
    transactions: pd.DataFrame,
    *,
    chunk_rows: int | None = None,
    service_name: str = FEATURE_SERVICE,
) -> pd.DataFrame:
    """The 15 model inputs for each transaction, from Feast's offline store (point in time).

    Rows come back sorted by TRANSACTION_ID, with the pass-through columns of ``entity_frame``.
    Missing window rows are filled with 0, the handbook's empty window.

    ``service_name``: :data:`FEATURE_SERVICE` for transactions of the lake, each of which has
    its own row in the feature tables (its views reach back one second: the join stays small);
    :data:`ONLINE_FEATURE_SERVICE` for other instants (the newest row within the views' TTLs,
    what the online store holds as of then).

    Raises:
        FeaturesNotBuilt: with :data:`FEATURE_SERVICE`, a day of ``transactions`` has no fresh
            feature partition (``build_features`` has not reached it), or the registry was
            applied for the other engine.

    Why in chunks: Feast's DuckDB offline store holds ~12 KB per entity row while it joins, so
    one call for a 1.3M-row training set peaked at 16.7 GB. The rows are joined in runs of whole
    days of at most ``chunk_rows`` (``FRAUDFLOW_OFFLINE_JOIN_CHUNK_ROWS``; a larger day is one
    chunk): peak memory follows the largest chunk, not the history. A point-in-time join of a
    row depends on that row alone, so the result is the same as one call (tested).
    """
    entities = entity_frame(transactions)
    if service_name == FEATURE_SERVICE:  # its views find only a transaction's own row
        require_fresh_features(settings, entities["event_timestamp"].dt.date.unique())
    store = open_store(settings)
    require_registry_engine(store, settings)
    service = store.get_feature_service(service_name)
    parts = []
    for chunk in _day_chunks(entities, chunk_rows or settings.offline_join_chunk_rows) or [entities]:
        joined = store.get_historical_features(entity_df=chunk, features=service).to_df()
        parts.append(_one_row_per_transaction(_with_feature_types(joined)))
    joined = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    return joined.sort_values("TRANSACTION_ID", kind="stable").reset_index(drop=True)


def _with_feature_types(joined: pd.DataFrame) -> pd.DataFrame:
    """Missing windows as 0, counts int64, times UTC microseconds, whichever store joined (Feast's
    Spark store gives float64 counts where a row is missing, naive ns times in the session zone)."""
    joined[MODEL_INPUTS] = joined[MODEL_INPUTS].fillna(0)
    counts = [c for c in MODEL_INPUTS if "_NB_TX_" in c or c in ("TX_DURING_WEEKEND", "TX_DURING_NIGHT")]
    joined[counts] = joined[counts].astype("int64")
    for column in ("event_timestamp", "tx_datetime"):
        if column in joined:
            when = joined[column]
            joined[column] = (when.dt.tz_localize("UTC") if when.dt.tz is None else when).astype("datetime64[us, UTC]")
    return joined


def _one_row_per_transaction(joined: pd.DataFrame) -> pd.DataFrame:
    """Drop the copies Feast's Spark store returns of an entity row sharing its join key and
    timestamp with another (two transactions of a card or terminal in one second: its row id,
    ``entity_row_unique_id`` in ``spark.py``, is only those). The copies are equal (windows count
    same-second transactions alike); anything else is a wrong join and fails loudly."""
    if joined["TRANSACTION_ID"].is_unique:  # the usual case: one column read, no copy
        return joined
    joined = joined.drop_duplicates(ignore_index=True)
    conflicting = joined["TRANSACTION_ID"].duplicated()
    if conflicting.any():
        ids = joined.loc[conflicting, "TRANSACTION_ID"].head(5).tolist()
        raise RuntimeError(f"the offline store returned different feature rows for transactions {ids}")
    return joined


def _day_chunks(entities: pd.DataFrame, chunk_rows: int) -> list[pd.DataFrame]:
    """``entities`` cut into runs of consecutive whole days of at most ``chunk_rows`` rows."""
    day = entities["event_timestamp"].dt.floor("D")
    sizes = day.value_counts().sort_index()
    chunks, current, rows = [], [], 0
    for when, n in sizes.items():
        if current and rows + n > chunk_rows:
            chunks.append(current)
            current, rows = [], 0
        current.append(when)
        rows += n
    if current:
        chunks.append(current)
    return [entities[day.isin(days)] for days in chunks]
