"""
### Ingest transactions

One run per day of card transactions, from the landing zone to the lake:

1. **wait_for_landing_file**: waits for `landing/transactions/date=<ds>/` to hold one
   `.parquet` or `.csv` file; on timeout the error names the folder.
2. **load_landing_file**: snapshots the file into staging (sha256) and checks it parses;
   an unreadable file is quarantined with the parse error as its reason.
3. **validate_batch**: the gate. A Great Expectations checkpoint runs the committed suites
   `raw_transactions` and `batch_statistics` (bands around recent history) and builds Data
   Docs (link in the task log). On failure the file is moved to
   `quarantine/transactions/date=<ds>/` with `reason.json`; nothing reaches the lake.
4. **publish_partition**: normalises to the raw schema and atomically replaces
   `lake/transactions/date=<ds>/`, then emits the `fraudflow_lake_transactions` Asset
   that downstream DAGs are scheduled on.

Re-running a date replaces its partition (never duplicates); dates may run in any order.
Data errors fail the run at once (no retry: bad bytes do not heal); the lake is untouched.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import dag, task

from fraudflow.orchestration.assets import LAKE_TRANSACTIONS
from fraudflow.orchestration.dag_defaults import default_args, start_date
from fraudflow.orchestration.sensors import LandingFileSensor
from fraudflow.settings import get_settings

SETTINGS = get_settings()


@dag(
    schedule="@daily",
    start_date=start_date(SETTINGS),
    catchup=True,
    max_active_runs=4,
    default_args=default_args(SETTINGS),
    tags=["fraudflow", "ingestion"],
    doc_md=__doc__,
)
def ingest_transactions():
    wait_for_landing_file = LandingFileSensor(
        task_id="wait_for_landing_file",
        poke_interval=SETTINGS.landing_poke_seconds,
        timeout=SETTINGS.landing_timeout_seconds,
        mode="reschedule",
    )

    @task
    def load_landing_file(source: str, ds: str | None = None, run_id: str | None = None) -> dict:
        from pathlib import Path

        from fraudflow.ingestion import publish
        from fraudflow.ingestion.landing import BatchParseError
        from fraudflow.orchestration.failures import fail_without_retry
        from fraudflow.settings import get_settings

        with fail_without_retry(BatchParseError):
            staged = publish.load_landing_file(
                get_settings(), day=dt.date.fromisoformat(ds), source=Path(source), run_id=run_id
            )
        return staged.model_dump(mode="json")

    @task
    def validate_batch(staged: dict, run_id: str | None = None) -> dict:
        from fraudflow.ingestion import validation
        from fraudflow.ingestion.landing import StagedBatch
        from fraudflow.orchestration.failures import fail_without_retry
        from fraudflow.settings import get_settings

        with fail_without_retry(validation.BatchRejected):
            result = validation.validate_batch(get_settings(), staged=StagedBatch.model_validate(staged), run_id=run_id)
        return result.model_dump(mode="json")

    @task(outlets=[LAKE_TRANSACTIONS])
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

    staged = load_landing_file(wait_for_landing_file.output)
    publish_partition(staged, validate_batch(staged))


ingest_transactions()
