"""Daily ingestion: snapshot a day's landing file, then publish it to the lake.

Publishing replaces the day's file with one ``os.replace``: readers see the old partition or
the new one, never half of either, and a re-run of a day replaces it instead of appending.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import uuid
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from pydantic import BaseModel

from fraudflow.landing import (
    LANDING_SUFFIXES,
    BatchParseError,
    StagedBatch,
    discard_staging,
    file_sha256,
    read_batch,
    safe_run_id,
)
from fraudflow.lineage import record_lineage
from fraudflow.quarantine import quarantine_landing_file
from fraudflow.schema import LAKE_SCHEMA, normalise_transactions, partition_id, to_arrow
from fraudflow.settings import Settings

PARTITION_FILE = "part-0.parquet"
PARTITION_MANIFEST = "_partition.json"


class PublishedPartition(BaseModel):
    partition_id: str
    day: dt.date
    path: str
    rows: int
    fraud_rate: float
    amount_mean: float
    source_file: str
    source_sha256: str
    data_sha256: str
    run_id: str | None
    validation_id: str | None
    published_at: dt.datetime


def load_landing_file(settings: Settings, *, day: dt.date, source: Path, run_id: str | None) -> StagedBatch:
    """Snapshot the landing file into staging and check it parses as a table.

    Raises:
        BatchParseError: the bytes are not a readable table; the file is quarantined first
            with the parse error as its reason.
    """
    staged_dir = settings.staging_dir / safe_run_id(run_id) / f"date={day.isoformat()}"
    staged_dir.mkdir(parents=True, exist_ok=True)
    staged_path = staged_dir / source.name
    shutil.copyfile(source, staged_path)
    staged = StagedBatch(
        day=day,
        source_file=str(source),
        staged_file=str(staged_path),
        format=LANDING_SUFFIXES[source.suffix],
        sha256=file_sha256(staged_path),
        size_bytes=staged_path.stat().st_size,
        rows=0,
    )
    try:
        staged.rows = len(read_batch(staged_path))
    except BatchParseError as exc:
        record = quarantine_landing_file(
            settings,
            staged=staged,
            stage="parse",
            summary=str(exc),
            failures=[{"expectation": "file parses as a table", "error": str(exc)}],
            data_docs=[],
            validation_id=None,
            run_id=run_id,
        )
        raise BatchParseError(f"{source} quarantined to {record.folder}: {exc}") from exc
    return staged


def write_atomically(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def publish_partition(
    settings: Settings,
    *,
    staged: StagedBatch,
    run_id: str | None,
    validation_id: str | None,
) -> PublishedPartition:
    """Normalise the staged batch and make it the day's lake partition, replacing any earlier one."""
    frame = normalise_transactions(read_batch(Path(staged.staged_file)))
    folder = settings.transactions_dir / f"date={staged.day.isoformat()}"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / PARTITION_FILE
    write_atomically(target, lambda tmp: pq.write_table(to_arrow(frame), tmp, compression="zstd"))
    published = PublishedPartition(
        partition_id=partition_id(staged.day),
        day=staged.day,
        path=str(target),
        rows=len(frame),
        fraud_rate=float(frame["TX_FRAUD"].mean()) if len(frame) else 0.0,
        amount_mean=float(frame["TX_AMOUNT"].mean()) if len(frame) else 0.0,
        source_file=staged.source_file,
        source_sha256=staged.sha256,
        data_sha256=file_sha256(target),
        run_id=run_id,
        validation_id=validation_id,
        published_at=dt.datetime.now(dt.UTC),
    )
    write_atomically(
        folder / PARTITION_MANIFEST,
        lambda tmp: tmp.write_text(json.dumps(published.model_dump(mode="json"), indent=2)),
    )
    discard_staging(staged)
    record_lineage(
        settings,
        stage="publish_partition",
        run_id=run_id,
        read={"source_file": staged.source_file, "sha256": staged.sha256, "validation_id": validation_id},
        wrote={"partition_id": published.partition_id, "rows": published.rows, "sha256": published.data_sha256},
    )
    return published


def read_partition_manifest(settings: Settings, day: dt.date) -> PublishedPartition | None:
    path = settings.transactions_dir / f"date={day.isoformat()}" / PARTITION_MANIFEST
    return PublishedPartition.model_validate_json(path.read_text()) if path.exists() else None


def recent_partitions(settings: Settings, day: dt.date, limit: int) -> list[PublishedPartition]:
    """Manifests of up to ``limit`` published partitions before ``day``, newest first."""
    earlier = [d for d in list_partitions(settings) if d < day][-limit:]
    return [m for m in (read_partition_manifest(settings, d) for d in reversed(earlier)) if m is not None]


def list_partitions(settings: Settings) -> list[dt.date]:
    if not settings.transactions_dir.is_dir():
        return []
    return sorted(
        dt.date.fromisoformat(p.parent.name.removeprefix("date="))
        for p in settings.transactions_dir.glob(f"date=*/{PARTITION_FILE}")
    )


def read_lake(settings: Settings, *, start: dt.date | None = None, end: dt.date | None = None) -> pd.DataFrame:
    """Published transactions of the inclusive date range (all days when unbounded)."""
    days = [d for d in list_partitions(settings) if (start is None or d >= start) and (end is None or d <= end)]
    if not days:
        return LAKE_SCHEMA.empty_table().to_pandas()
    files = [str(settings.transactions_dir / f"date={d.isoformat()}" / PARTITION_FILE) for d in days]
    return ds.dataset(files, format="parquet").to_table().to_pandas()
