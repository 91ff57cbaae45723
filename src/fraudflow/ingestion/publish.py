"""Daily ingestion: snapshot a day's landing file into staging, then publish it to the lake."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq

from fraudflow.ingestion.landing import (
    LANDING_SUFFIXES,
    BatchParseError,
    StagedBatch,
    discard_staging,
    file_sha256,
    read_batch,
    safe_run_id,
)
from fraudflow.ingestion.quarantine import quarantine_landing_file
from fraudflow.lake import PARTITION_FILE, PARTITION_MANIFEST, PublishedPartition, write_atomically
from fraudflow.layout import partition_dir
from fraudflow.lineage import record_lineage
from fraudflow.schema import normalise_transactions, partition_id, to_arrow
from fraudflow.settings import Settings


def load_landing_file(settings: Settings, *, day: dt.date, source: Path, run_id: str | None) -> StagedBatch:
    """Snapshot the landing file into staging and check it parses as a table.

    Raises:
        BatchParseError: the bytes are not a readable table; the file is quarantined first
            with the parse error as its reason.
    """
    staged_dir = partition_dir(settings.staging_dir / safe_run_id(run_id), day)
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


def publish_partition(
    settings: Settings,
    *,
    staged: StagedBatch,
    run_id: str | None,
    validation_id: str | None,
) -> PublishedPartition:
    """Normalise the staged batch and make it the day's lake partition, replacing any earlier one."""
    frame = normalise_transactions(read_batch(Path(staged.staged_file)))
    folder = partition_dir(settings.transactions_dir, staged.day)
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
