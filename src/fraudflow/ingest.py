"""Daily ingestion: find a day's landing file, snapshot it, and publish it to the lake.

The landing zone is where source systems (or users) drop one file per day, parquet or CSV.
Ingestion never reads a landing file twice: it copies the bytes to staging first, so the
validation and the published partition both come from the same checksummed snapshot even
if someone rewrites the landing file mid-run. Publishing replaces the day's file with one
``os.replace``: readers see the old partition or the new one, never half of either, and a
re-run of a day replaces it instead of appending.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from pydantic import BaseModel

from fraudflow.lineage import record_lineage
from fraudflow.schema import LAKE_SCHEMA, normalise_transactions, partition_id, to_arrow
from fraudflow.settings import Settings

LANDING_SUFFIXES = {".parquet": "parquet", ".csv": "csv"}
PARTITION_FILE = "part-0.parquet"
PARTITION_MANIFEST = "_partition.json"


class LandingError(RuntimeError):
    """The landing folder of a day is missing, empty, or ambiguous."""


class BatchParseError(ValueError):
    """A landing file is not a readable table (truncated, empty, wrong delimiter, ...)."""


class StagedBatch(BaseModel):
    day: dt.date
    source_file: str
    staged_file: str
    format: Literal["parquet", "csv"]
    sha256: str
    size_bytes: int
    rows: int


class PublishedPartition(BaseModel):
    partition_id: str
    day: dt.date
    path: str
    rows: int
    source_file: str
    source_sha256: str
    data_sha256: str
    run_id: str | None
    validation_id: str | None
    published_at: dt.datetime


def landing_folder(settings: Settings, day: dt.date) -> Path:
    return settings.landing_dir / f"date={day.isoformat()}"


def find_landing_file(settings: Settings, day: dt.date) -> Path | None:
    """The day's landing file, or None while it has not arrived.

    Raises:
        LandingError: more than one candidate file (which one is the day would be a guess).
    """
    folder = landing_folder(settings, day)
    if not folder.is_dir():
        return None
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix in LANDING_SUFFIXES
    )
    if len(files) > 1:
        raise LandingError(f"{len(files)} landing files for {day} in {folder}: {[f.name for f in files]}; keep one")
    return files[0] if files else None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_batch(path: Path) -> pd.DataFrame:
    """Parse a landing file as it is (no type coercion: validation judges the raw types)."""
    fmt = LANDING_SUFFIXES.get(path.suffix)
    try:
        if path.stat().st_size == 0:
            raise BatchParseError(f"{path.name} is empty (0 bytes)")
        if fmt == "parquet":
            return pd.read_parquet(path)
        if fmt == "csv":
            return pd.read_csv(path)
    except BatchParseError:
        raise
    except Exception as exc:  # pyarrow/pandas raise a dozen types for unreadable bytes
        raise BatchParseError(f"cannot parse {path.name} as {fmt}: {type(exc).__name__}: {exc}") from exc
    raise BatchParseError(f"{path.name}: unsupported file type {path.suffix!r} (use .parquet or .csv)")


def _safe(run_id: str | None) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", run_id or "adhoc")


def load_landing_file(settings: Settings, *, day: dt.date, source: Path, run_id: str | None) -> StagedBatch:
    """Snapshot the landing file into staging and check it parses as a table.

    Raises:
        BatchParseError: the bytes are not a readable table; the landing file is untouched.
    """
    staged_dir = settings.staging_dir / _safe(run_id) / f"date={day.isoformat()}"
    staged_dir.mkdir(parents=True, exist_ok=True)
    staged = staged_dir / source.name
    shutil.copyfile(source, staged)
    frame = read_batch(staged)
    return StagedBatch(
        day=day,
        source_file=str(source),
        staged_file=str(staged),
        format=LANDING_SUFFIXES[source.suffix],
        sha256=file_sha256(staged),
        size_bytes=staged.stat().st_size,
        rows=len(frame),
    )


def discard_staging(staged: StagedBatch) -> None:
    """Remove a run's staged snapshot (and the run's staging folder once it is empty)."""
    day_dir = Path(staged.staged_file).parent
    shutil.rmtree(day_dir, ignore_errors=True)
    try:
        day_dir.parent.rmdir()
    except OSError:
        pass  # other days of the same run are still staged


def _write_atomically(path: Path, write) -> None:
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
    _write_atomically(target, lambda tmp: pq.write_table(to_arrow(frame), tmp, compression="zstd"))
    published = PublishedPartition(
        partition_id=partition_id(staged.day),
        day=staged.day,
        path=str(target),
        rows=len(frame),
        source_file=staged.source_file,
        source_sha256=staged.sha256,
        data_sha256=file_sha256(target),
        run_id=run_id,
        validation_id=validation_id,
        published_at=dt.datetime.now(dt.UTC),
    )
    _write_atomically(
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
