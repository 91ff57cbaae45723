"""Feast as fraudflow uses it: apply the repo, materialize online, build training sets, look up.

Training sets come from ``get_historical_features`` with the feature service
``fraud_detection_v1`` (point-in-time join on each transaction's timestamp, over views that
reach only the transaction's own row); ``fraud_detection_online_v1`` names the same 15 inputs
over the same tables as materialized into the online store. Both take the window values from
the feature tables, so the model's inputs have one definition.
"""

from __future__ import annotations

import atexit
import datetime as dt
import functools
import importlib.util
import os
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel

from fraudflow.features.compute import LOOKBACK_DAYS, MODEL_INPUTS, require_fresh_features
from fraudflow.features.history import push_batch_history
from fraudflow.lineage import record_lineage
from fraudflow.settings import Settings, repo_root

FEATURE_SERVICE = "fraud_detection_v1"  # point in time, at each transaction (training sets)
ONLINE_FEATURE_SERVICE = "fraud_detection_online_v1"  # the materialized latest rows
# The views materialized from the offline tables (the history views are pushed, not materialized).
MATERIALIZED_VIEWS = ("customer_spending", "terminal_risk")
ENTITY_COLUMNS = ["CUSTOMER_ID", "TERMINAL_ID"]
REQUEST_COLUMNS = ["tx_amount", "tx_datetime"]


class Materialization(BaseModel):
    start: dt.datetime | None
    end: dt.datetime
    mode: str
    seconds: float


def feature_repo_path() -> Path:
    return repo_root() / "feature_repo"


def repo_config(settings: Settings):
    """The store's configuration when it differs from ``feature_store.yaml`` (local profile,
    SQLite): production puts the registry on PostgreSQL (SQL registry), and either profile can
    put the online store on Redis (``FRAUDFLOW_FEAST_ONLINE_STORE=redis``, db 1 of
    ``FRAUDFLOW_REDIS_URL``). The offline store is DuckDB over the (shared) lake, or Feast's
    Spark store with ``FRAUDFLOW_ENGINE=spark`` (the session fraudflow's feature build uses)."""
    from feast.repo_config import RepoConfig

    if settings.profile == "production":
        registry: dict[str, Any] | str = {
            "registry_type": "sql",
            "path": settings.postgres_database("feast", "postgresql+psycopg2"),
            "cache_ttl_seconds": 60,
            "sqlalchemy_config_kwargs": {"pool_pre_ping": True},
        }
    else:
        registry = str(settings.feast_dir / "registry.db")
    if settings.online_store == "redis":
        online = {"type": "redis", "connection_string": feast_redis_connection(settings.redis_url or "", db=1)}
    else:
        online = {"type": "sqlite", "path": str(settings.feast_dir / "online_store.db")}
    return RepoConfig(
        project="fraudflow",
        provider="local",
        registry=registry,
        online_store=online,
        offline_store=_offline_store(settings),
        entity_key_serialization_version=3,
        repo_path=feature_repo_path(),
    )


def _offline_store(settings: Settings) -> dict[str, Any]:
    if settings.engine == "spark":
        from fraudflow.features.spark_engine import session_conf

        return {"type": "spark", "spark_conf": session_conf(settings)}
    return {"type": "duckdb"}


def feast_redis_connection(url: str, *, db: int) -> str:
    """Feast's Redis ``connection_string`` (``host:port,db=N,username=..,password=..,ssl=true``)
    for a ``redis://`` or ``rediss://`` URL, keeping what the URL says: its credentials
    (percent-decoded) and TLS. Values are JSON-quoted, as Feast json-decodes each one (a password
    of digits would otherwise reach Redis as an integer). Feast splits the string on commas, so
    a user name or password holding one cannot be passed: refused with a clear error."""
    import json
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError(f"FRAUDFLOW_REDIS_URL must be redis://[user:password@]host[:port] or rediss://.., not {url!r}")
    fields = [f"{parts.hostname}:{parts.port or 6379}", f"db={db}"]
    for key, value in (("username", parts.username), ("password", parts.password)):
        if value:
            if "," in unquote(value):
                raise ValueError(f"the Redis {key} in FRAUDFLOW_REDIS_URL contains ',', which Feast cannot pass")
            fields.append(f"{key}={json.dumps(unquote(value))}")
    if parts.scheme == "rediss":
        fields.append("ssl=true")
    return ",".join(fields)


def open_store(settings: Settings):
    """A FeatureStore on ``feature_repo/``: as ``feature_store.yaml`` says (local profile:
    registry and SQLite online store in the home), or as :func:`repo_config` builds it."""
    from feast import FeatureStore

    _release_ibis_backend_at_exit()
    os.environ["FRAUDFLOW_HOME"] = str(settings.root)  # expanded by Feast in feature_store.yaml
    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    if settings.engine == "spark":
        from fraudflow.features.spark_engine import spark_session

        spark_session(settings)  # Feast's Spark store takes the active session
    if settings.profile == "production" or settings.online_store == "redis" or settings.engine == "spark":
        return FeatureStore(repo_path=str(feature_repo_path()), config=repo_config(settings))
    return FeatureStore(repo_path=str(feature_repo_path()))


@functools.cache
def _release_ibis_backend_at_exit() -> None:
    """Close the DuckDB connection that Feast's offline store leaves behind, before exit.

    Feast's DuckDB offline store runs through ibis, which opens a process-wide default DuckDB
    backend (``ibis.options.default_backend``) and never closes it. At interpreter exit the
    duckdb extension (nanobind) is torn down while that connection is still alive, and
    nanobind prints dozens of ``nanobind: leaked ...`` lines on every command that touched
    Feast. ``atexit`` handlers run before module teardown, so closing it there ends the noise
    at its source (``tests/test_feature_store.py`` shows it).
    """
    atexit.register(_close_ibis_default_backend)


def _close_ibis_default_backend() -> None:
    import gc

    ibis = sys.modules.get("ibis")
    backend = getattr(getattr(ibis, "options", None), "default_backend", None)
    if backend is None:
        return
    try:
        backend.disconnect()
    finally:
        ibis.options.default_backend = None
        gc.collect()


def _repo_objects(settings: Settings) -> list[Any]:
    """``feature_repo/*.py``'s definitions for ``settings.engine`` (set while they are read)."""
    from feast import Entity, FeatureService, FeatureView
    from feast.data_source import DataSource  # FileSource, SparkSource, PushSource, RequestSource
    from feast.on_demand_feature_view import OnDemandFeatureView

    kinds = (Entity, FeatureService, FeatureView, DataSource, OnDemandFeatureView)
    objects = []
    before = os.environ.get("FRAUDFLOW_ENGINE")
    os.environ["FRAUDFLOW_ENGINE"] = settings.engine
    try:
        for path in sorted(feature_repo_path().glob("*.py")):
            spec = importlib.util.spec_from_file_location(f"fraudflow_feature_repo_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            objects += [v for v in vars(module).values() if isinstance(v, kinds)]
    finally:
        if before is None:
            os.environ.pop("FRAUDFLOW_ENGINE", None)
        else:
            os.environ["FRAUDFLOW_ENGINE"] = before
    return objects


def apply_feature_repo(settings: Settings) -> list[str]:
    """Register the repo's definitions (``feast apply``, from Python); returns their names."""
    store = open_store(settings)
    objects = _repo_objects(settings)
    store.apply(objects)
    return sorted(getattr(o, "name", str(o)) for o in objects)


def materialize_online(settings: Settings, *, end: dt.datetime, run_id: str | None = None) -> Materialization:
    """Load the latest feature values up to ``end`` into the online store, and push every card's
    and terminal's recent history (what the scoring service computes its windows from).

    Feast's ``materialize_incremental`` starts a view's first run at ``now - ttl``, which skips
    any history older than the TTL (all of the simulated 2018 data). The first run is therefore
    an explicit ``materialize`` over the longest lookback; later runs are incremental.
    """
    started = time.perf_counter()
    store = open_store(settings)
    end = end if end.tzinfo else end.replace(tzinfo=dt.UTC)
    views = [v for v in store.list_feature_views() if v.name in MATERIALIZED_VIEWS]
    names = [v.name for v in views]
    if views and all(v.materialization_intervals for v in views):
        store.materialize_incremental(end_date=end, feature_views=names)
        start, mode = None, "incremental"
    else:
        start, mode = end - dt.timedelta(days=LOOKBACK_DAYS + 1), "initial"
        store.materialize(start_date=start, end_date=end, feature_views=names)
    history = push_batch_history(settings, store, end=end, run_id=run_id)
    _sqlite_write_ahead_log(settings)
    record_lineage(
        settings,
        stage="materialize_online",
        run_id=run_id,
        read={"feature_views": [v.name for v in views], "until": end.isoformat()},
        wrote={"online_store": settings.online_store, "mode": mode, "histories": history.model_dump(mode="json")},
    )
    return Materialization(start=start, end=end, mode=mode, seconds=round(time.perf_counter() - started, 3))


def _sqlite_write_ahead_log(settings: Settings) -> None:
    """Put the SQLite online store in WAL mode (persistent in the file).

    Every scoring worker writes card histories: in SQLite's default rollback-journal mode a
    write locks readers out and a waiting connection sleeps in SQLite's busy handler (1, 2, 5,
    10 ms ...), which put /score's p99 at 200 req/s above 60 ms. In WAL mode readers never
    wait for the writer.
    """
    import contextlib
    import sqlite3

    if settings.online_store != "sqlite":
        return
    path = settings.feast_dir / "online_store.db"
    if path.exists():
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
            db.execute("PRAGMA journal_mode=WAL")


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
            feature partition (``build_features`` has not reached it).

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


def online_features(store, requests: list[dict[str, Any]]) -> pd.DataFrame:
    """Model inputs for live requests (dicts with CUSTOMER_ID, TERMINAL_ID, tx_amount,
    tx_datetime) from the online store; entities unknown to it come back as NaN."""
    service = store.get_feature_service(ONLINE_FEATURE_SERVICE)
    rows = [
        {
            "CUSTOMER_ID": str(r["CUSTOMER_ID"]),
            "TERMINAL_ID": str(r["TERMINAL_ID"]),
            "tx_amount": float(r["tx_amount"]),
            "tx_datetime": pd.Timestamp(r["tx_datetime"]),
        }
        for r in requests
    ]
    result = store.get_online_features(features=service, entity_rows=rows).to_df()
    return result
