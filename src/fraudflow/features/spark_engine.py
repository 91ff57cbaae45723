"""``build_features`` on Spark (``FRAUDFLOW_ENGINE=spark``): the same windows as Spark SQL
window functions, for histories that outgrow one process.

The window definitions stay in :mod:`fraudflow.features.compute` (``WINDOWS``, the label
delay, the feature names, integer cents); this module only states them as ``RANGE`` frames
over epoch seconds, so both engines compute the same value for every row (tested value for
value). A block of days is one Spark job: it reads the block's lake partitions plus their 37
lookback days, computes both tables and writes one file per day into a staging folder; each
day's file then replaces ``features/<table>/date=<day>/part-0.parquet`` atomically, so the
lake keeps one layout whichever engine wrote it, and Feast reads either.

``spark_master`` decides where the driver and the work run:

- ``local[N]``: a JVM beside the calling process (the Airflow task), N threads;
- ``spark://host:7077``: the task is the driver (client mode) of a team's standalone cluster;
- ``sc://host:15002``: Spark Connect. The task is a thin gRPC client; the driver runs in the
  team's Spark Connect server, so no JVM runs on the Airflow worker. Server-side properties
  (driver memory, warehouse, UI) are the server's; fraudflow sends only session properties.

Off ``local[N]``, the home must be on a path the driver and executors share.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from fraudflow.features.compute import ENTITIES, FEATURE_INPUTS, LOOKBACK_DAYS, TABLES, WINDOWS, feature_dir
from fraudflow.lake import list_partitions
from fraudflow.layout import PART_FILE, PART_GLOB, partition_dir
from fraudflow.schema import LABEL_DELAY_DAYS
from fraudflow.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

_DAY = 86_400


def session_conf(settings: Settings) -> dict[str, str]:
    """The Spark properties fraudflow runs with (Feast's Spark offline store gets the same).

    Timestamps are UTC (Feast's Spark store compares them as text in the session's zone) and
    written as parquet ``TIMESTAMP_MICROS`` (what pandas writes); the driver's scratch space
    and warehouse live under the home, not in /tmp or the cwd. ``spark_conf`` comes last.
    """
    session = {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.shuffle.partitions": "8",
    }
    if is_spark_connect(settings):  # the server owns its driver, catalog and UI
        return {"spark.remote": settings.spark_master, **session, **settings.spark_conf}
    scratch = settings.spark_dir
    return {
        "spark.master": settings.spark_master,
        "spark.app.name": "fraudflow",
        **session,
        "spark.sql.catalogImplementation": "in-memory",
        "spark.sql.warehouse.dir": str(scratch / "warehouse"),
        "spark.local.dir": str(scratch / "local"),
        "spark.ui.showConsoleProgress": "false",
        "spark.ui.enabled": "false",
        # local[N] runs the executors inside the driver's JVM: its heap is the job's memory (the
        # default 1g ran out joining the x10 training set). An out-of-memory JVM exits, so the
        # task fails instead of waiting forever on a dead Spark context.
        "spark.driver.memory": "4g",
        "spark.driver.extraJavaOptions": "-XX:+ExitOnOutOfMemoryError",
        **settings.spark_conf,
    }


def is_spark_connect(settings: Settings) -> bool:
    """Whether ``spark_master`` names a Spark Connect server (``sc://host:port``)."""
    return settings.spark_master.startswith("sc://")


def spark_session(settings: Settings) -> SparkSession:
    """The process's Spark session with :func:`session_conf` (created once, then reused: Feast's
    Spark offline store takes the active session too). For ``sc://`` a Spark Connect session."""
    from pyspark.sql import SparkSession

    conf = session_conf(settings)
    if is_spark_connect(settings):
        builder = SparkSession.builder.remote(conf.pop("spark.remote"))
    else:
        settings.spark_dir.mkdir(parents=True, exist_ok=True)
        builder = SparkSession.builder
    for key, value in conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    if not is_spark_connect(settings):  # a Connect client has no JVM, hence no SparkContext
        session.sparkContext.setLogLevel("ERROR")
    return session


def window_columns(table: str, seconds: Column) -> dict[str, Column]:
    """The six window features of ``table`` as Spark columns over ``seconds`` (epoch seconds).

    Customer windows are (t - n days, t], the transaction and its same-second peers included;
    terminal windows (t - delay - n days, t - delay] (only labels older than the delay). With
    whole seconds, "after t - n days" is the ``RANGE`` bound ``-(n days) + 1``.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    entity = ENTITIES[table]
    columns: dict[str, Column] = {}
    for n in WINDOWS:
        if table == "customer":
            frame = Window.partitionBy(entity).orderBy(seconds).rangeBetween(-n * _DAY + 1, 0)
            count = F.count(F.lit(1)).over(frame)
            cents = F.sum("AMOUNT_CENTS").over(frame)
            columns[f"CUSTOMER_ID_NB_TX_{n}DAY_WINDOW"] = count
            columns[f"CUSTOMER_ID_AVG_AMOUNT_{n}DAY_WINDOW"] = cents / F.greatest(count, F.lit(1)) / 100
        else:
            lo, hi = (LABEL_DELAY_DAYS + n) * _DAY, LABEL_DELAY_DAYS * _DAY
            frame = Window.partitionBy(entity).orderBy(seconds).rangeBetween(-lo + 1, -hi)
            count = F.count(F.lit(1)).over(frame)
            frauds = F.coalesce(F.sum(F.col("TX_FRAUD").cast("long")).over(frame), F.lit(0))
            columns[f"TERMINAL_ID_NB_TX_{n}DAY_WINDOW"] = count
            columns[f"TERMINAL_ID_RISK_{n}DAY_WINDOW"] = F.when(count > 0, frauds / count).otherwise(F.lit(0.0))
    return columns


def feature_table(lake: DataFrame, table: str) -> DataFrame:
    """The ``customer`` or ``terminal`` feature rows of every transaction in ``lake`` (the
    :data:`FEATURE_INPUTS` columns), with the columns and types of the local engine's tables."""
    from pyspark.sql import functions as F

    entity = ENTITIES[table]
    rows = lake.select(
        F.col(entity),
        F.col("TX_DATETIME").cast("timestamp").alias("event_timestamp"),
        F.col("TRANSACTION_ID").cast("long"),
        F.round(F.col("TX_AMOUNT") * 100).cast("long").alias("AMOUNT_CENTS"),
        F.col("TX_FRAUD"),
    ).withColumn("SECONDS", F.unix_seconds("event_timestamp"))
    windows = window_columns(table, F.col("SECONDS"))
    return rows.select(
        entity,
        "event_timestamp",
        "TRANSACTION_ID",
        *[column.cast("long" if "_NB_TX_" in name else "double").alias(name) for name, column in windows.items()],
    )


def build_feature_block(settings: Settings, block: list[dt.date]) -> dict[str, int]:
    """Compute and write both tables' partitions for the days of ``block`` on Spark; rows
    written per table. Each day's file replaces its partition file atomically."""
    from pyspark.sql import functions as F

    session = spark_session(settings)
    start = block[0] - dt.timedelta(days=LOOKBACK_DAYS)
    inputs = [d for d in list_partitions(settings) if start <= d <= block[-1]]
    files = [str(partition_dir(settings.transactions_dir, d) / PART_FILE) for d in inputs]
    lake = session.read.parquet(*files).select(*FEATURE_INPUTS)
    wanted = [d.isoformat() for d in block]
    staging = settings.spark_dir / "staging" / uuid.uuid4().hex
    rows: dict[str, int] = {}
    try:
        for table in TABLES:
            frame = feature_table(lake, table)
            day = F.date_format("event_timestamp", "yyyy-MM-dd")
            (
                frame.withColumn("day", day)
                .where(F.col("day").isin(wanted))
                .repartition("day")
                .sortWithinPartitions("day", "event_timestamp", "TRANSACTION_ID")  # day first: the writer keeps it
                .write.partitionBy("day")
                .parquet(str(staging / table))
            )
            rows[table] = _publish_days(settings, table, staging / table, block)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return rows


def _publish_days(settings: Settings, table: str, written: Path, block: list[dt.date]) -> int:
    """Move each day's one Spark file into the feature layout (``os.replace``: atomic)."""
    import pyarrow.parquet as pq

    total = 0
    for day in block:
        files = sorted((written / f"day={day.isoformat()}").glob(PART_GLOB))
        if not files:
            continue
        if len(files) != 1:
            raise RuntimeError(f"Spark wrote {len(files)} files for {table} {day}; expected one per day")
        folder = partition_dir(feature_dir(settings, table), day)
        folder.mkdir(parents=True, exist_ok=True)
        total += pq.ParquetFile(files[0]).metadata.num_rows
        os.replace(files[0], folder / PART_FILE)
    return total
