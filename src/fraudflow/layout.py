"""How fraudflow names its date-partitioned folders and files, in one place.

Every zone (landing, staging, quarantine, the lake, feature tables, the prediction log) keeps
one folder per day, ``date=YYYY-MM-DD`` (Hive-style, so DuckDB, Spark and pyarrow read the
folders as a partition column). Building and parsing those names anywhere else would let two
zones disagree about where a day lives.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

PARTITION_KEY = "date"
PARTITION_GLOB = f"{PARTITION_KEY}=*"
PART_FILE = "part-0.parquet"  # the one data file of a lake or feature-table partition
PART_GLOB = "part-*.parquet"  # every data file of a partition (the prediction log writes many)


def partition_name(day: dt.date) -> str:
    """``date=YYYY-MM-DD`` for ``day``."""
    return f"{PARTITION_KEY}={day.isoformat()}"


def partition_dir(root: Path, day: dt.date) -> Path:
    """The folder of ``day`` under a zone's root."""
    return Path(root) / partition_name(day)


def partition_day(folder: Path | str) -> dt.date:
    """The day a ``date=YYYY-MM-DD`` folder holds; ``ValueError`` for any other name."""
    name = Path(folder).name
    prefix = f"{PARTITION_KEY}="
    if not name.startswith(prefix):
        raise ValueError(f"not a partition folder: {name!r} (expected {prefix}YYYY-MM-DD)")
    return dt.date.fromisoformat(name.removeprefix(prefix))


def part_files(root: Path, pattern: str = PART_FILE) -> list[Path]:
    """Every data file of every partition under ``root``, oldest day first."""
    return sorted(Path(root).glob(f"{PARTITION_GLOB}/{pattern}"))


def part_file_name(stamp: str, pid: int, n: int) -> str:
    """A unique data file name for writers that append several files to one partition."""
    return f"part-{stamp}-{pid}-{n}.parquet"
