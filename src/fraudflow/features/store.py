"""Feast as fraudflow uses it: apply the repo, materialize online, look up online features.

Point-in-time joins (training sets, drift windows) are :mod:`fraudflow.features.point_in_time`.
The feature service ``fraud_detection_v1`` serves them (point-in-time join on each transaction's
timestamp, over views that reach only the transaction's own row); ``fraud_detection_online_v1``
names the same 15 inputs over the same tables as materialized into the online store. Both take
the window values from the feature tables, so the model's inputs have one definition.
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

from fraudflow.features.compute import LOOKBACK_DAYS, FeaturesNotBuilt
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


class RegistryOfAnotherEngine(FeaturesNotBuilt):
    """The Feast registry's sources were applied for the other engine (Feast's DuckDB store reads
    only ``FileSource``s, its Spark store only ``SparkSource``s)."""


def require_registry_engine(store, settings: Settings) -> None:
    """Raise :class:`RegistryOfAnotherEngine`, naming the fix, when the registry's batch sources
    are not the kind ``settings.engine`` reads (after a switch of ``FRAUDFLOW_ENGINE``, before
    ``build_features`` has re-applied the repo); Feast itself fails with a bare assertion."""
    kinds = {type(s).__name__ for s in store.list_data_sources()} & {"FileSource", "SparkSource"}
    wanted = "SparkSource" if settings.engine == "spark" else "FileSource"
    if kinds and wanted not in kinds:
        raise RegistryOfAnotherEngine(
            f"the Feast registry holds {', '.join(sorted(kinds))}s, applied for the other engine, but "
            f"FRAUDFLOW_ENGINE={settings.engine} reads {wanted}s: run build_features once (it applies the "
            "feature repo for the current engine)"
        )


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
    require_registry_engine(store, settings)
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
