"""The landing zone: where source systems (or users) drop one file per day, parquet or CSV.

Ingestion never reads a landing file twice: it snapshots the bytes into staging first, so
validation and the published partition both come from the same checksummed copy even if
someone rewrites the landing file mid-run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import shutil
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel

from fraudflow.layout import PARTITION_GLOB, partition_day, partition_dir
from fraudflow.settings import Settings

LANDING_SUFFIXES = {".parquet": "parquet", ".csv": "csv"}


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


def landing_folder(settings: Settings, day: dt.date) -> Path:
    return partition_dir(settings.landing_dir, day)


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


DONE_SUFFIX = ".done"  # <file>.done beside a landing file: the sender says it is complete


def landing_file_settled(path: Path, settle_seconds: float, now: float | None = None) -> tuple[bool, str]:
    """Whether ``path`` may be read: a ``<name>.done`` marker exists, or it has not changed for
    ``settle_seconds`` (a file copied in place, not via a dot-file and a rename, may still be
    growing). With the reason, for the sensor's log."""
    import time

    if path.with_name(path.name + DONE_SUFFIX).exists():
        return True, f"{path.name}{DONE_SUFFIX} marks it complete"
    age = (now if now is not None else time.time()) - path.stat().st_mtime
    if age >= settle_seconds:
        return True, f"unchanged for {age:.0f} s"
    return False, f"{path.name} changed {age:.1f} s ago; waiting until it is unchanged for {settle_seconds:g} s"


def waiting_days(settings: Settings, *, start: dt.date | None = None, end: dt.date | None = None) -> list[dt.date]:
    """Landed days in ``[start, end]`` with no published partition yet, oldest first."""
    from fraudflow.lake import list_partitions

    published = set(list_partitions(settings))
    landed = (partition_day(folder) for folder in settings.landing_dir.glob(PARTITION_GLOB) if folder.is_dir())
    return sorted(
        d for d in landed if d not in published and (start is None or start <= d) and (end is None or d <= end)
    )


def resolve_ingest_day(settings: Settings, *, requested: str | None, logical_date: dt.datetime | None) -> dt.date:
    """The day an ``ingest_transactions`` run ingests: ``requested`` (the ``day`` param), else the
    run's logical date (the scheduled run of a day's interval, or ``fraudflow ingest``), else (a
    run triggered without a logical date, as Airflow 3's Trigger button and API allow) the
    oldest landed day that is not published yet.

    Raises:
        LandingError: none of these names a day; the message says how to name one.
    """
    if requested:
        return dt.date.fromisoformat(requested)
    if logical_date is not None:
        return logical_date.date()
    waiting = [d for d in waiting_days(settings) if find_landing_file(settings, d)]
    if not waiting:
        raise LandingError(
            f"nothing to ingest: every day landed in {settings.landing_dir} is published; trigger with "
            '{"day": "YYYY-MM-DD"} to re-ingest one'
        )
    return waiting[0]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_batch(path: Path) -> pd.DataFrame:
    """Parse a landing file as it is (no type coercion: validation judges the raw types).

    A parquet file written by pandas carries the writer's ``DataFrame.attrs`` in its metadata,
    and pandas deep-copies ``attrs`` on every operation: a file with a few kB of them made
    the GX gate 1.5 s slower per day. They are not transaction data, so they are dropped.
    """
    fmt = LANDING_SUFFIXES.get(path.suffix)
    try:
        if path.stat().st_size == 0:
            raise BatchParseError(f"{path.name} is empty (0 bytes)")
        if fmt == "parquet":
            frame = pd.read_parquet(path)
            frame.attrs = {}
            return _in_utc(frame)
        if fmt == "csv":
            return _in_utc(_with_parsed_timestamps(pd.read_csv(path)))
    except BatchParseError:
        raise
    except Exception as exc:  # pyarrow/pandas raise a dozen types for unreadable bytes
        raise BatchParseError(f"cannot parse {path.name} as {fmt}: {type(exc).__name__}: {exc}") from exc
    raise BatchParseError(f"{path.name}: unsupported file type {path.suffix!r} (use .parquet or .csv)")


def _with_parsed_timestamps(frame: pd.DataFrame) -> pd.DataFrame:
    """CSV has no timestamp type: parse TX_DATETIME text (ISO 8601). Text that is not a time
    becomes null, which the not-null expectation then reports by column."""
    if "TX_DATETIME" in frame.columns and not pd.api.types.is_datetime64_any_dtype(frame["TX_DATETIME"]):
        frame["TX_DATETIME"] = pd.to_datetime(frame["TX_DATETIME"], errors="coerce", format="ISO8601")
    return frame


def _in_utc(frame: pd.DataFrame) -> pd.DataFrame:
    """Timezone-aware TX_DATETIME values become the UTC wall time fraudflow stores (the lake is
    naive UTC): a file written with aware times is judged on the same clock as every other file,
    not quarantined as "not between" its day's bounds."""
    if "TX_DATETIME" in frame.columns and isinstance(frame["TX_DATETIME"].dtype, pd.DatetimeTZDtype):
        frame["TX_DATETIME"] = frame["TX_DATETIME"].dt.tz_convert("UTC").dt.tz_localize(None)
    return frame


def safe_run_id(run_id: str | None) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", run_id or "adhoc")


def discard_staging(staged: StagedBatch) -> None:
    """Remove a run's staged snapshot (and the run's staging folder once it is empty)."""
    day_dir = Path(staged.staged_file).parent
    shutil.rmtree(day_dir, ignore_errors=True)
    try:
        day_dir.parent.rmdir()
    except OSError:
        pass  # other days of the same run are still staged
