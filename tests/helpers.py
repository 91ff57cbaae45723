"""Shared test helpers (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative path -> digest): 'unchanged' made exact."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def day_rows(frame, day: dt.date):
    return frame[frame["TX_DATETIME"].dt.date == day]


def publish_history(settings, frame, *, validate: bool = False) -> list[dt.date]:
    """Publish every day of ``frame`` to the lake through the ingestion stage functions
    (landing -> staging -> [GX gate] -> lake), without Airflow: for tests whose subject is
    downstream of ingestion (the DAG itself is tested in test_ingest_dag.py)."""
    from fraudflow import ingest
    from fraudflow.landing import find_landing_file
    from fraudflow.simulate import write_landing_files
    from fraudflow.validation import validate_batch

    write_landing_files(frame, settings.landing_dir)
    days = sorted(frame["TX_DATETIME"].dt.date.unique())
    for day in days:
        staged = ingest.load_landing_file(settings, day=day, source=find_landing_file(settings, day), run_id="test")
        validation_id = validate_batch(settings, staged=staged, run_id="test").validation_id if validate else None
        ingest.publish_partition(settings, staged=staged, run_id="test", validation_id=validation_id)
    return days
