"""
### Ingest transactions

One run per day of card transactions, from the landing zone to the lake. Scheduled runs cover
one day's data interval and start when that day has ended (`CronDataIntervalTimetable`): the
run for day D starts at D+1 00:00 UTC with `ds` = D.

0. **resolve_day**: the day to ingest: the `day` param, else the run's logical date, else (a run
   triggered without one, e.g. the UI's Trigger button) the oldest landed day not yet
   published; with none of these the run fails at once saying how to name a day.
1. **wait_for_landing_file**: waits (grace: `FRAUDFLOW_LANDING_TIMEOUT_SECONDS`, 6 h) for
   `landing/transactions/date=<day>/` to hold one `.parquet` or `.csv` file; on timeout the
   error names the folder.
2. **load_landing_file**: snapshots the file into staging (sha256) and checks it parses;
   an unreadable file is quarantined with the parse error as its reason.
3. **validate_batch**: the gate. A Great Expectations checkpoint runs the committed suite
   `landing_transactions` (the file's schema and rows, then bands around recent history) and
   builds Data Docs (link in the task log). On failure the file is moved to
   `quarantine/transactions/date=<ds>/` with `reason.json`; nothing reaches the lake.
4. **publish_partition**: normalises to the raw schema and atomically replaces
   `lake/transactions/date=<ds>/`, then emits the `fraudflow_lake_transactions` Asset
   that downstream DAGs are scheduled on.

5. **request_review** (only when 2 or 3 quarantined the file and `FRAUDFLOW_REVIEW_QUARANTINE`
   is on): triggers `review_quarantine` for the day, where a person releases or keeps the file
   in the UI.

Re-running a date replaces its partition (never duplicates); dates may run in any order.
Data errors fail the run at once (no retry: bad bytes do not heal); the lake is untouched.
"""

from __future__ import annotations

import datetime as dt

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

from fraudflow.orchestration.assets import LAKE_TRANSACTIONS
from fraudflow.orchestration.dag_defaults import default_args, start_date
from fraudflow.orchestration.notifier import deadline_alert
from fraudflow.orchestration.sensors import LandingFileSensor
from fraudflow.settings import get_settings

SETTINGS = get_settings()


@dag(
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=start_date(SETTINGS),
    catchup=SETTINGS.ingest_catchup,
    max_active_runs=4,
    params={
        "day": Param(None, type=["null", "string"], description="YYYY-MM-DD to (re-)ingest (default: the run's day)"),
    },
    default_args=default_args(SETTINGS),
    # The run for day D starts when D ends (logical date D 00:00, data interval [D, D+1)).
    deadline=deadline_alert(
        "ingest_deadline",
        "day not published by its deadline",
        reference="logical_date",
        after=dt.timedelta(days=1, seconds=SETTINGS.ingest_deadline_seconds),
    ),
    tags=["fraudflow", "ingestion"],
    doc_md=__doc__,
)
def ingest_transactions():
    @task
    def resolve_day(params: dict | None = None, logical_date=None) -> str:
        from fraudflow.ingestion.landing import LandingError, resolve_ingest_day
        from fraudflow.orchestration.failures import fail_without_retry
        from fraudflow.settings import get_settings

        with fail_without_retry(LandingError):
            day = resolve_ingest_day(get_settings(), requested=(params or {}).get("day"), logical_date=logical_date)
        return day.isoformat()

    day = resolve_day()
    wait_for_landing_file = LandingFileSensor(
        task_id="wait_for_landing_file",
        day="{{ ti.xcom_pull(task_ids='resolve_day') }}",
        poke_interval=SETTINGS.landing_poke_seconds,
        timeout=SETTINGS.landing_timeout_seconds,
        mode="reschedule",
    )

    @task(multiple_outputs=False)
    def load_landing_file(source: str, day: str, run_id: str | None = None) -> dict:
        from pathlib import Path

        from fraudflow.ingestion import publish
        from fraudflow.ingestion.landing import BatchParseError
        from fraudflow.orchestration.failures import fail_without_retry
        from fraudflow.settings import get_settings

        with fail_without_retry(BatchParseError):
            staged = publish.load_landing_file(
                get_settings(), day=dt.date.fromisoformat(day), source=Path(source), run_id=run_id
            )
        return staged.model_dump(mode="json")

    @task(multiple_outputs=False)
    def validate_batch(staged: dict, run_id: str | None = None) -> dict:
        from fraudflow.ingestion import validation
        from fraudflow.ingestion.landing import StagedBatch
        from fraudflow.orchestration.failures import fail_without_retry
        from fraudflow.settings import get_settings

        with fail_without_retry(validation.BatchRejected):
            result = validation.validate_batch(get_settings(), staged=StagedBatch.model_validate(staged), run_id=run_id)
        return result.model_dump(mode="json")

    @task(outlets=[LAKE_TRANSACTIONS], multiple_outputs=False)
    def publish_partition(staged: dict, validation: dict, run_id: str | None = None, outlet_events=None) -> dict:
        from fraudflow.ingestion import publish
        from fraudflow.ingestion.landing import StagedBatch
        from fraudflow.settings import get_settings

        published = publish.publish_partition(
            get_settings(),
            staged=StagedBatch.model_validate(staged),
            run_id=run_id,
            validation_id=validation["validation_id"],
        )
        outlet_events[LAKE_TRANSACTIONS].extra = {
            "partition_id": published.partition_id,
            "rows": published.rows,
            "validation_id": published.validation_id,
        }
        return published.model_dump(mode="json")

    @task.short_circuit(trigger_rule="one_failed")
    def review_wanted() -> bool:
        """A file was quarantined (the only way 2 or 3 fail); ask a person only if configured."""
        return get_settings().quarantine_review_required

    day >> wait_for_landing_file
    staged = load_landing_file(wait_for_landing_file.output, day)
    validation = validate_batch(staged)
    publish_partition(staged, validation)
    request_review = TriggerDagRunOperator(
        task_id="request_review", trigger_dag_id="review_quarantine", conf={"day": "{{ ti.xcom_pull('resolve_day') }}"}
    )
    [staged, validation] >> review_wanted() >> request_review


ingest_transactions()
