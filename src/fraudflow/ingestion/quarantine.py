"""Quarantine: rejected landing files kept whole, beside a report a person can act on.

A rejected file is *moved* (byte for byte) out of landing, so the day's DAG run cannot pick
it up again by accident, into ``quarantine/transactions/date=YYYY-MM-DD/`` with
``reason.json``. Nothing is ever deleted: quarantining the same day twice keeps the earlier
attempt beside it (``date=...~<utc time>``), and releasing a file keeps its report under
``_released/``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from fraudflow.ingestion.landing import StagedBatch, discard_staging, file_sha256, find_landing_file, landing_folder
from fraudflow.lake import write_atomically
from fraudflow.layout import PARTITION_GLOB, partition_dir
from fraudflow.lineage import record_lineage
from fraudflow.settings import Settings

REASON_FILE = "reason.json"
log = logging.getLogger(__name__)


class QuarantineRecord(BaseModel):
    day: dt.date
    folder: str
    file: str
    sha256: str
    stage: Literal["parse", "validation"]
    summary: str
    failures: list[dict[str, Any]]
    data_docs: list[str]
    validation_id: str | None
    run_id: str | None
    quarantined_at: dt.datetime


class ReleaseError(RuntimeError):
    """A quarantined day cannot be released (nothing there, or landing already has a file)."""


def _stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")


def quarantine_folder(settings: Settings, day: dt.date) -> Path:
    return partition_dir(settings.quarantine_dir, day)


def quarantine_landing_file(
    settings: Settings,
    *,
    staged: StagedBatch,
    stage: Literal["parse", "validation"],
    summary: str,
    failures: list[dict[str, Any]],
    data_docs: list[str],
    validation_id: str | None,
    run_id: str | None,
) -> QuarantineRecord:
    """Move the judged bytes out of landing next to ``reason.json``; return the record.

    If the landing file changed since it was staged, the staged snapshot (the bytes that were
    judged) is quarantined and the newer landing file is left for the next run.
    """
    folder = quarantine_folder(settings, staged.day)
    if folder.exists():
        folder.rename(folder.with_name(f"{folder.name}~{_stamp()}"))
    folder.mkdir(parents=True)
    source = Path(staged.source_file)
    target = folder / source.name
    if source.exists() and file_sha256(source) == staged.sha256:
        shutil.move(source, target)
    else:
        shutil.copyfile(staged.staged_file, target)
    record = QuarantineRecord(
        day=staged.day,
        folder=str(folder),
        file=str(target),
        sha256=file_sha256(target),
        stage=stage,
        summary=summary,
        failures=failures,
        data_docs=data_docs,
        validation_id=validation_id,
        run_id=run_id,
        quarantined_at=dt.datetime.now(dt.UTC),
    )
    reason_json = json.dumps(record.model_dump(mode="json"), indent=2, default=str)
    write_atomically(folder / REASON_FILE, lambda tmp: tmp.write_text(reason_json))  # never a torn report
    discard_staging(staged)
    record_lineage(
        settings,
        stage="quarantine",
        run_id=run_id,
        read={"source_file": staged.source_file, "sha256": staged.sha256, "validation_id": validation_id},
        wrote={"quarantine": str(folder), "reason": summary},
    )
    return record


def list_quarantined(settings: Settings) -> list[QuarantineRecord]:
    """Current quarantined days (earlier attempts of the same day are kept but not listed)."""
    if not settings.quarantine_dir.is_dir():
        return []
    records = []
    for reason in sorted(settings.quarantine_dir.glob(f"{PARTITION_GLOB}/{REASON_FILE}")):
        if "~" in reason.parent.name:
            continue
        try:
            records.append(QuarantineRecord.model_validate_json(reason.read_text()))
        except ValueError as exc:  # a torn or hand-edited report: list the rest, say which one
            log.warning("%s is unreadable, skipped (the quarantined file is still there): %s", reason, exc)
    return records


def release_quarantined(settings: Settings, day: dt.date, *, run_id: str | None = None) -> Path:
    """Move a quarantined file back to landing so the day's DAG run can re-admit it.

    Fix the file first (in quarantine or after release, in landing); validation runs again.

    Raises:
        ReleaseError: nothing quarantined for ``day``, or landing already holds a file for it.
    """
    folder = quarantine_folder(settings, day)
    reason = folder / REASON_FILE
    if not reason.exists():
        raise ReleaseError(f"nothing quarantined for {day} (looked in {folder})")
    existing = find_landing_file(settings, day)
    if existing is not None:
        raise ReleaseError(f"landing already has {existing} for {day}; move it away before releasing")
    record = QuarantineRecord.model_validate_json(reason.read_text())
    data_file = folder / Path(record.file).name
    landing = landing_folder(settings, day)
    landing.mkdir(parents=True, exist_ok=True)
    target = landing / data_file.name
    shutil.move(data_file, target)
    archive = settings.quarantine_dir / "_released" / f"{folder.name}~{_stamp()}"
    archive.parent.mkdir(parents=True, exist_ok=True)
    folder.rename(archive)
    record_lineage(
        settings,
        stage="quarantine_release",
        run_id=run_id,
        read={"quarantine": str(folder), "sha256_at_quarantine": record.sha256},
        wrote={"landing_file": str(target), "sha256": file_sha256(target), "report_archive": str(archive)},
    )
    return target


def review_request(settings: Settings, day: dt.date) -> dict[str, str]:
    """Subject and Markdown body of the release-or-keep prompt (``review_quarantine`` DAG): what
    was rejected and why, and what Release does."""
    reason = quarantine_folder(settings, day) / REASON_FILE
    if not reason.exists():
        raise ReleaseError(f"nothing quarantined for {day} (looked in {reason.parent})")
    record = QuarantineRecord.model_validate_json(reason.read_text())
    rules = "\n".join(
        f"| {f.get('expectation', '?')} | {f.get('column') or '-'} | "
        f"{f.get('unexpected_count') if f.get('unexpected_count') is not None else f.get('observed_value', '')} |"
        for f in record.failures[:20]
    )
    body = (
        f"**{Path(record.file).name}** for {day} was quarantined at the {record.stage} stage: {record.summary}\n\n"
        f"| rule | column | unexpected rows / observed |\n|---|---|---|\n{rules}\n\n"
        f"The file is in `{record.folder}`. **Release** moves it back to landing and ingests the day again "
        "(the gate judges it again: replace the file there first if the sender corrected it); **Keep** leaves it "
        "quarantined. No answer keeps it."
    )
    return {"subject": f"Release the quarantined file of {day}?", "body": body}
