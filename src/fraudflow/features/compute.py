"""The 15 model inputs of the Fraud Detection Handbook, computed from the lake, vectorised.

Customer and terminal window features are written as daily feature tables (one row per
entity and transaction time) that Feast reads as its offline store; a point-in-time join on
a transaction's own timestamp then returns exactly the handbook's value for it. Request-time
inputs (amount, weekend, night) are computed by :func:`request_time_features`, the one
implementation that both Feast's on-demand view (training and serving) and tests call.

Incremental: a feature day depends on 38 lake days (30-day windows behind a 7-day label
delay). Each feature partition records a fingerprint of those inputs, so only days whose
inputs changed (a new day, or a re-published earlier one) are recomputed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel

from fraudflow.lake import list_partitions, read_lake, read_partition_manifest, write_atomically
from fraudflow.layout import PART_FILE, partition_dir
from fraudflow.lineage import record_lineage
from fraudflow.schema import LABEL_DELAY_DAYS
from fraudflow.settings import Settings

WINDOWS = (1, 7, 30)
LOOKBACK_DAYS = max(WINDOWS) + LABEL_DELAY_DAYS  # lake days a feature day reads, besides itself
REQUEST_FEATURES = ["TX_AMOUNT", "TX_DURING_WEEKEND", "TX_DURING_NIGHT"]
CUSTOMER_FEATURES = [f"CUSTOMER_ID_{kind}_{n}DAY_WINDOW" for n in WINDOWS for kind in ("NB_TX", "AVG_AMOUNT")]
TERMINAL_FEATURES = [f"TERMINAL_ID_{kind}_{n}DAY_WINDOW" for n in WINDOWS for kind in ("NB_TX", "RISK")]
MODEL_INPUTS = REQUEST_FEATURES + CUSTOMER_FEATURES + TERMINAL_FEATURES
LABEL = "TX_FRAUD"
TABLES = ("customer", "terminal")
ENTITIES = {"customer": "CUSTOMER_ID", "terminal": "TERMINAL_ID"}
FEATURE_INPUTS = ["TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT", "TX_FRAUD"]
_DAY = 86_400
_BLOCK = np.int64(1) << np.int64(34)  # seconds span per entity in the sort key (> 500 years)


class FeatureBuild(BaseModel):
    days: list[dt.date]
    rows: dict[str, int]
    seconds: float
    engine: str = "local"


def request_time_arrays(tx_amount: np.ndarray, tx_datetime: np.ndarray) -> dict[str, np.ndarray]:
    """Amount, weekend and night flags (handbook: weekday Sat/Sun; hour <= 6) from numpy arrays.

    The one implementation of the request-time inputs: numpy arithmetic on epoch seconds, so
    the serving path pays microseconds for one row, and training pays the same per row.
    ``tx_datetime`` is datetime64 (naive UTC).
    """
    seconds = np.asarray(tx_datetime, dtype="datetime64[s]").astype(np.int64)
    days = np.floor_divide(seconds, _DAY)
    return {
        "TX_AMOUNT": np.asarray(tx_amount, dtype=np.float64),
        "TX_DURING_WEEKEND": ((days + 3) % 7 >= 5).astype(np.int64),  # 1970-01-01 was a Thursday
        "TX_DURING_NIGHT": (np.mod(seconds, _DAY) // 3600 <= 6).astype(np.int64),
    }


def request_time_features(tx_amount: pd.Series, tx_datetime: pd.Series) -> pd.DataFrame:
    """:func:`request_time_arrays` for pandas callers (Feast's on-demand view); aware
    timestamps are converted to UTC first."""
    when = pd.to_datetime(tx_datetime)
    if getattr(when.dt, "tz", None) is not None:
        when = when.dt.tz_convert("UTC").dt.tz_localize(None)
    arrays = request_time_arrays(tx_amount.to_numpy(), when.to_numpy())
    return pd.DataFrame(arrays, index=tx_amount.index)


class _SortedHistory:
    """Rows sorted by (entity code, seconds) as one sort key (entity block + seconds), so every
    window bound is a searchsorted and the whole history one vectorised pass. Built once per
    table and shared by its windows."""

    def __init__(self, codes: np.ndarray, seconds: np.ndarray, values: np.ndarray) -> None:
        self.key = codes * _BLOCK + seconds
        self.floor = codes * _BLOCK - 1  # clipping here keeps a bound inside the row's own entity block
        self.csum = np.concatenate([[0], np.cumsum(values, dtype=np.int64)])

    def window(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """Counts and (integer) sums over the window (t - lo, t - hi] of each row's own entity."""
        start = np.searchsorted(self.key, np.maximum(self.key - lo, self.floor), side="right")
        end = np.searchsorted(self.key, np.maximum(self.key - hi, self.floor), side="right")
        return (end - start).astype(np.int64), self.csum[end] - self.csum[start]


def window_features(table: str, codes: np.ndarray, seconds: np.ndarray, values: np.ndarray) -> dict[str, np.ndarray]:
    """The six window features of ``table`` for rows sorted by (entity code, seconds).

    The one definition of the windows, used by the offline tables (:func:`compute_feature_table`,
    every entity at once) and by the scoring service (one card's or terminal's history plus the
    transaction being scored, see ``fraudflow.features.history``).

    Args:
        table: ``customer`` (``values``: amounts in integer cents) or ``terminal`` (``values``:
            fraud labels 0/1).
        codes: Integer entity codes (all zeros for one entity).
        seconds: Transaction times in whole seconds (any common origin).
    """
    columns: dict[str, np.ndarray] = {}
    history = _SortedHistory(codes, seconds, values)
    for n in WINDOWS:
        if table == "customer":  # (t - n days, t], the transaction itself included
            count, amount = history.window(n * _DAY, 0)
            columns[f"CUSTOMER_ID_NB_TX_{n}DAY_WINDOW"] = count
            columns[f"CUSTOMER_ID_AVG_AMOUNT_{n}DAY_WINDOW"] = amount / np.maximum(count, 1) / 100
        else:  # (t - delay - n days, t - delay]: only labels older than the delay
            lo, hi = (LABEL_DELAY_DAYS + n) * _DAY, LABEL_DELAY_DAYS * _DAY
            count, fraud_count = history.window(lo, hi)
            columns[f"TERMINAL_ID_NB_TX_{n}DAY_WINDOW"] = count
            columns[f"TERMINAL_ID_RISK_{n}DAY_WINDOW"] = np.where(count > 0, fraud_count / np.maximum(count, 1), 0.0)
    return columns


def amount_cents(amounts: np.ndarray) -> np.ndarray:
    """Amounts as integer cents: window sums stay exact (and equal offline and online)."""
    return np.round(np.asarray(amounts, dtype=np.float64) * 100).astype(np.int64)


def epoch_seconds(when: np.ndarray) -> np.ndarray:
    """Naive-UTC datetime64 values as whole epoch seconds (the windows' time unit)."""
    return np.asarray(when).astype("datetime64[s]").astype(np.int64)


def compute_feature_table(transactions: pd.DataFrame, table: str) -> pd.DataFrame:
    """The ``customer`` or ``terminal`` feature rows for every transaction, ordered by (time, ID).

    Customer windows (t - n days, t] include the current transaction; terminal windows
    (t - 7 - n days, t - 7 days] only use labels older than the delay. Values for a row only
    depend on rows at or before its time, so callers may pass extra history and keep a subset.
    Needs only the :data:`FEATURE_INPUTS` columns.
    """
    tx = transactions
    entity = ENTITIES[table]
    naive = tx["TX_DATETIME"].to_numpy().astype("datetime64[us]")
    seconds = epoch_seconds(naive)
    seconds = seconds - seconds.min() if len(tx) else seconds
    codes = pd.factorize(tx[entity])[0].astype(np.int64)
    order = np.lexsort((seconds, codes))
    raw = amount_cents(tx["TX_AMOUNT"].to_numpy()) if table == "customer" else tx["TX_FRAUD"].to_numpy()
    seconds_sorted = seconds[order]
    windows = window_features(table, codes[order], seconds_sorted, raw.astype(np.int64)[order])
    del codes, raw
    # Time order, ties by transaction ID: a day's file is the same whichever block built it.
    by_time = np.lexsort((tx["TRANSACTION_ID"].to_numpy()[order], seconds_sorted))
    del seconds_sorted
    rows = order[by_time]
    del order
    columns = {
        entity: tx[entity].take(rows).reset_index(drop=True),
        "TRANSACTION_ID": tx["TRANSACTION_ID"].to_numpy()[rows],
    }
    for name in list(windows):  # one window column at a time: no second copy of all of them
        columns[name] = windows.pop(name)[by_time]
    frame = pd.DataFrame(columns, copy=False)  # copy=False: no consolidation copy
    frame.insert(1, "event_timestamp", pd.DatetimeIndex(naive[rows]).tz_localize("UTC"))
    return frame


def compute_features(transactions: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Both feature tables for every transaction of ``transactions`` (see
    :func:`compute_feature_table`)."""
    return {table: compute_feature_table(transactions, table) for table in TABLES}


def day_blocks(days: list[dt.date], block_days: int) -> list[list[dt.date]]:
    """``days`` in blocks spanning at most ``block_days`` calendar days each, in order."""
    blocks: list[list[dt.date]] = []
    for day in sorted(days):
        if blocks and (day - blocks[-1][0]).days < block_days:
            blocks[-1].append(day)
        else:
            blocks.append([day])
    return blocks


def feature_dir(settings: Settings, table: str) -> Path:
    return settings.lake_dir / "features" / table


def _input_fingerprint(settings: Settings, day: dt.date) -> str:
    """sha256 over the data checksums of the lake days a feature day reads (day - 37 .. day)."""
    digest = hashlib.sha256()
    for offset in range(LOOKBACK_DAYS, -1, -1):
        manifest = read_partition_manifest(settings, day - dt.timedelta(days=offset))
        digest.update((manifest.data_sha256 if manifest else "-").encode())
    return digest.hexdigest()


def _manifest_path(settings: Settings, day: dt.date) -> Path:
    return partition_dir(feature_dir(settings, "customer"), day) / "_features.json"


class FeaturesNotBuilt(RuntimeError):
    """Lake days whose feature partitions are missing or were built from other inputs: a point
    in time join on them would read no row (or an outdated one) for their transactions."""


def _is_fresh(settings: Settings, day: dt.date) -> bool:
    path = _manifest_path(settings, day)
    recorded = json.loads(path.read_text())["inputs"] if path.exists() else None
    return recorded == _input_fingerprint(settings, day)


def stale_feature_days(settings: Settings) -> list[dt.date]:
    """Published days whose feature partition is missing or was built from other inputs."""
    return [day for day in list_partitions(settings) if not _is_fresh(settings, day)]


def require_fresh_features(settings: Settings, days: Iterable[dt.date]) -> None:
    """Raise unless every one of ``days`` has its features built from the lake as it is.

    Ingestion and ``build_features`` run apart (a catch-up publishes days while a build runs),
    so a training set or drift check can ask for a day the build has not reached yet.

    Raises:
        FeaturesNotBuilt: names the days; ``build_features`` (asset-triggered by each publish)
            catches up, so a retry heals it.
    """
    stale = sorted(d for d in set(days) if not _is_fresh(settings, d))
    if stale:
        raise FeaturesNotBuilt(
            f"the feature tables of {len(stale)} lake day(s) are missing or stale ({stale[0]} .. {stale[-1]}): "
            "build_features has not caught up with the lake yet (it runs after each published day); retry after it"
        )


def build_features(settings: Settings, *, days: list[dt.date] | None = None, run_id: str | None = None) -> FeatureBuild:
    """Compute and write the feature partitions of ``days`` (default: every stale day).

    Works in blocks of at most ``feature_block_days`` days: each block reads its span plus the
    37 lookback days (only the six input columns), computes one table at a time, writes each
    day with an atomic replace, then the block's manifests (input fingerprint) last. Peak
    memory follows the block's days, not the history's length; a crash keeps finished blocks.
    ``settings.engine`` picks who computes a block: this process (``local``) or Spark
    (:mod:`fraudflow.features.spark_engine`); both write the same partitions.
    """
    started = time.perf_counter()
    days = sorted(stale_feature_days(settings) if days is None else days)
    rows = {t: 0 for t in TABLES}
    if settings.engine == "spark":
        from fraudflow.features.spark_engine import build_feature_block
    else:
        build_feature_block = _build_feature_block
    for block in day_blocks(days, settings.feature_block_days):
        for table, written in build_feature_block(settings, block).items():
            rows[table] += written
        for day in block:
            path = _manifest_path(settings, day)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(
                path, lambda tmp, d=day: tmp.write_text(json.dumps({"inputs": _input_fingerprint(settings, d)}))
            )
    if not days:
        return FeatureBuild(days=[], rows=rows, seconds=0.0, engine=settings.engine)
    record_lineage(
        settings,
        stage="build_features",
        run_id=run_id,
        read={"partitions": [f"transactions/date={d}" for d in days], "lookback_days": LOOKBACK_DAYS},
        wrote={
            "feature_tables": list(TABLES),
            "days": [d.isoformat() for d in days],
            "rows": rows,
            "engine": settings.engine,
        },
    )
    return FeatureBuild(days=days, rows=rows, seconds=round(time.perf_counter() - started, 3), engine=settings.engine)


def _build_feature_block(settings: Settings, block: list[dt.date]) -> dict[str, int]:
    """The local engine: the block's days plus their lookback in one process (only the six
    input columns, IDs in Arrow buffers), one table at a time; rows written per table."""
    lake = read_lake(
        settings,
        start=block[0] - dt.timedelta(days=LOOKBACK_DAYS),
        end=block[-1],
        columns=FEATURE_INPUTS,
        arrow_strings=True,
    )
    return {table: _write_feature_days(settings, table, compute_feature_table(lake, table), block) for table in TABLES}


def _write_feature_days(settings: Settings, table: str, frame: pd.DataFrame, days: list[dt.date]) -> int:
    """Write each of ``days``' rows of a time-ordered feature table as its partition; rows
    written. Days are slices of the ordered timestamps (no per-row date objects)."""
    stamps = frame["event_timestamp"].to_numpy(dtype="datetime64[us]")  # naive UTC
    written = 0
    for day in days:
        lo, hi = np.searchsorted(stamps, np.array([day, day + dt.timedelta(days=1)], dtype="datetime64[us]"))
        if hi == lo:
            continue
        folder = partition_dir(feature_dir(settings, table), day)
        folder.mkdir(parents=True, exist_ok=True)
        part = frame.iloc[lo:hi].astype({ENTITIES[table]: object})  # the tables' one string type
        write_atomically(folder / PART_FILE, lambda tmp, p=part: p.to_parquet(tmp, index=False))
        written += hi - lo
    return int(written)
