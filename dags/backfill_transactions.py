"""
### Backfill transactions

Ingest many landed days in one run: a first load of history, or a catch-up after an outage.
`ingest_transactions` stays the daily path (one run per day's data interval); this DAG is
triggered by hand (the UI's Trigger button, `fraudflow run backfill_transactions`).

1. **backfill_landed_days**: every landed day in [`start`, `end`] (both optional) that is not
   published yet, oldest first, through the same steps and the same GX gate as a daily run:
   snapshot, `landing_gate` checkpoint (bands from the days published before it), publish. A
   file that fails is quarantined with its report and the walk goes on; a file still being
   written is skipped. Emits the `fraudflow_lake_transactions` Asset once, so `build_features`
   runs once over all the new days.
2. **report_quarantined**: fails (no retry) naming every quarantined file and its broken rules
   when there is one; the failure alert carries the message. Release a file with
   `review_quarantine`, then re-ingest its day with `ingest_transactions`.
3. **request_review** (one per quarantined day, only when `FRAUDFLOW_REVIEW_QUARANTINE` is on):
   triggers `review_quarantine` for the day, as a daily run does, so each file waits in the
   UI's Required Actions for a person to release or keep it.
"""

from __future__ import annotations

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, dag, task

from fraudflow.orchestration.assets import LAKE_TRANSACTIONS
from fraudflow.orchestration.dag_defaults import default_args, start_date
from fraudflow.settings import get_settings

SETTINGS = get_settings()


@dag(
    schedule=None,
    start_date=start_date(SETTINGS),
    catchup=False,
    max_active_runs=1,  # two walks over the same days would race for their partitions
    params={
        "start": Param(None, type=["null", "string"], format="date", description="first day (default: the oldest)"),
        "end": Param(None, type=["null", "string"], format="date", description="last day (default: the newest)"),
    },
    default_args=default_args(SETTINGS),
    tags=["fraudflow", "ingestion"],
    doc_md=__doc__,
)
def backfill_transactions():
    @task(outlets=[LAKE_TRANSACTIONS], multiple_outputs=False)
    def backfill_landed_days(params: dict | None = None, run_id: str | None = None, outlet_events=None) -> dict:
        from fraudflow.ingestion.backfill import NothingToBackfill, backfill_days, plan_backfill
        from fraudflow.orchestration.failures import fail_without_retry

        settings, params = get_settings(), params or {}
        with fail_without_retry(NothingToBackfill, ValueError):
            days = plan_backfill(settings, start=params.get("start"), end=params.get("end"))
        report = backfill_days(settings, days=days, run_id=run_id)
        outlet_events[LAKE_TRANSACTIONS].extra = {
            "days": [d.isoformat() for d in report.published],
            "rows": report.rows,
        }
        return report.model_dump(mode="json")

    @task
    def report_quarantined(report: dict) -> str:
        from airflow.sdk.exceptions import AirflowFailException

        from fraudflow.ingestion.backfill import BackfillReport

        report = BackfillReport.model_validate(report)
        if report.quarantined:
            lines = "\n".join(f"- {q.day}: {q.reason}" for q in report.quarantined)
            raise AirflowFailException(f"{report.describe()}; quarantined:\n{lines}")
        return report.describe()

    @task
    def days_to_review(report: dict) -> list[dict]:
        """One ``review_quarantine`` conf per quarantined day, if a person is to be asked."""
        if not get_settings().quarantine_review_required:
            return []
        return [{"day": q["day"]} for q in report["quarantined"]]

    report = backfill_landed_days()
    report_quarantined(report)
    TriggerDagRunOperator.partial(task_id="request_review", trigger_dag_id="review_quarantine").expand(
        conf=days_to_review(report)
    )


backfill_transactions()
