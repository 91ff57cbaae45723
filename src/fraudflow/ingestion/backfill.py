"""Ingest many landed days in one task: a first load of history, or a catch-up after an outage.

``ingest_transactions`` runs once per day, as a day's data interval should. Loading six months of
history that way costs a DAG run per day (Airflow's own overhead was ~1.1 s of a ~1.9 s day
through ``dag.test()``, more under the scheduler, where every task is a new process). Here one
task walks the days in order through the same three steps (snapshot, the GX gate, publish), so
each day is judged exactly as a daily run would judge it: against the bands of the days
published before it. A file that fails is quarantined with its report and the walk goes on; the
report lists it, and the DAG run then fails naming every quarantined file. The passing days'
Data Docs pages are built several days at a time, and the index once after the walk (a failing
day's page at once: its quarantine report links it).
"""

from __future__ import annotations

import datetime as dt
import time

from pydantic import BaseModel

from fraudflow.ingestion import publish
from fraudflow.ingestion.landing import (
    BatchParseError,
    LandingError,
    find_landing_file,
    landing_file_settled,
    waiting_days,
)
from fraudflow.ingestion.validation import BatchRejected, validate_batch
from fraudflow.lineage import record_lineage
from fraudflow.settings import Settings


class NothingToBackfill(LandingError):
    """No landed, unpublished day in the requested range; the message says what is there."""


class SkippedDay(BaseModel):
    day: dt.date
    reason: str


class QuarantinedDay(BaseModel):
    day: dt.date
    file: str
    reason: str  # the gate's message: the file, each broken rule, the report


class BackfillReport(BaseModel):
    """What one backfill did, day by day."""

    published: list[dt.date]
    rows: int
    quarantined: list[QuarantinedDay]
    skipped: list[SkippedDay]
    validate_seconds: dict[str, float]  # the gate's time per published or rejected day
    data_docs: list[str] = []  # the Data Docs index, built once after the walk
    data_docs_seconds: float = 0.0  # that build: the passing days' pages and the index
    seconds: float

    def describe(self) -> str:
        return (
            f"{len(self.published)} days published ({self.rows:,} rows), {len(self.quarantined)} quarantined, "
            f"{len(self.skipped)} skipped in {self.seconds:.1f} s"
        )


def plan_backfill(settings: Settings, *, start: str | None, end: str | None) -> list[dt.date]:
    """The days in ``[start, end]`` (ISO dates; either open) with a landing file and no published
    partition (a quarantined day has no landing file until it is released).

    Raises:
        NothingToBackfill: the range is inverted, or it holds no such day.
    """
    first, last = (dt.date.fromisoformat(v) if v else None for v in (start, end))
    if first and last and first > last:
        raise NothingToBackfill(f"start {first} is after end {last}")
    days = [d for d in waiting_days(settings, start=first, end=last) if find_landing_file(settings, d)]
    if not days:
        span = f"between {first or 'the first day'} and {last or 'the last day'}"
        raise NothingToBackfill(
            f"nothing to backfill {span}: every day landed in {settings.landing_dir} there is published "
            "(ingest_transactions re-ingests a single day)"
        )
    return days


def backfill_days(settings: Settings, *, days: list[dt.date], run_id: str | None) -> BackfillReport:
    """Snapshot, gate and publish each of ``days`` in order; quarantine what fails and go on.

    A day without a landing file, or whose file is still being written (not settled), is
    skipped and left for its daily run.
    """
    from fraudflow.ingestion.gx_checkpoints import DeferredDataDocs

    started = time.perf_counter()
    docs = DeferredDataDocs(settings)
    report = BackfillReport(published=[], rows=0, quarantined=[], skipped=[], validate_seconds={}, seconds=0.0)
    try:
        for day in sorted(days):
            source = find_landing_file(settings, day)
            if source is None:
                report.skipped.append(SkippedDay(day=day, reason="no landing file"))
                continue
            settled, why = landing_file_settled(source, settings.landing_settle)
            if not settled:
                report.skipped.append(SkippedDay(day=day, reason=why))
                continue
            try:
                staged = publish.load_landing_file(settings, day=day, source=source, run_id=run_id)
                gate_started = time.perf_counter()
                try:
                    result = validate_batch(settings, staged=staged, run_id=run_id, defer_docs=docs)
                finally:
                    report.validate_seconds[day.isoformat()] = round(time.perf_counter() - gate_started, 3)
            except (BatchParseError, BatchRejected) as exc:
                report.quarantined.append(QuarantinedDay(day=day, file=str(source), reason=str(exc)))
                continue
            published = publish.publish_partition(
                settings, staged=staged, run_id=run_id, validation_id=result.validation_id
            )
            report.published.append(day)
            report.rows += published.rows
    finally:  # pages of the days already published, even if the walk stopped on an error
        docs_started = time.perf_counter()
        report.data_docs = docs.build()
        report.data_docs_seconds = round(time.perf_counter() - docs_started, 3)
    report.seconds = round(time.perf_counter() - started, 3)
    record_lineage(
        settings,
        stage="backfill_transactions",
        run_id=run_id,
        read={"days": [d.isoformat() for d in sorted(days)]},
        wrote=report.model_dump(mode="json", include={"published", "rows", "quarantined", "skipped", "seconds"}),
    )
    return report
