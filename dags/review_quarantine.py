"""
### Review quarantine

A person decides, in the Airflow UI, what happens to a quarantined day's file. Triggered by
`ingest_transactions` when it quarantines a file and `FRAUDFLOW_REVIEW_QUARANTINE` is on (the
production profile's default), or by hand (Trigger, with the day).

1. **describe**: the day's quarantine record (file, stage, reason, broken rules) as the prompt.
2. **release_or_keep**: Airflow's `HITLOperator` (Required Action): **Release** or **Keep**; no
   answer within `FRAUDFLOW_APPROVAL_TIMEOUT_SECONDS` keeps it.
3. **release**: Release moves the file back to landing (replace it in the quarantine folder first
   if the sender corrected it; the report is archived under `_released/`) and names who
   released it in the task log and the lineage; Keep ends the run here.
4. **reingest_day**: triggers `ingest_transactions` for that day: the gate judges the file again.
"""

from __future__ import annotations

import datetime as dt

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, dag, task

from fraudflow.orchestration.dag_defaults import default_args, start_date
from fraudflow.settings import get_settings

SETTINGS = get_settings()
RELEASE, KEEP = "Release", "Keep"


@dag(
    schedule=None,
    start_date=start_date(SETTINGS),
    catchup=False,
    params={"day": Param(type="string", format="date", description="the quarantined day (YYYY-MM-DD)")},
    default_args=default_args(SETTINGS),
    tags=["fraudflow", "ingestion"],
    doc_md=__doc__,
)
def review_quarantine():
    @task(multiple_outputs=False)
    def describe(params: dict | None = None) -> dict:
        from fraudflow.ingestion.quarantine import ReleaseError, review_request
        from fraudflow.orchestration.failures import fail_without_retry

        with fail_without_retry(ReleaseError):
            return review_request(get_settings(), dt.date.fromisoformat(params["day"]))

    release_or_keep = HITLOperator(
        task_id="release_or_keep",
        subject="{{ ti.xcom_pull(task_ids='describe')['subject'] }}",
        body="{{ ti.xcom_pull(task_ids='describe')['body'] }}",
        options=[RELEASE, KEEP],
        defaults=[KEEP],
        response_timeout=dt.timedelta(seconds=SETTINGS.approval_timeout_seconds),
    )

    @task.short_circuit
    def release(answer: dict, params: dict | None = None, run_id: str | None = None) -> bool:
        import logging

        from fraudflow.ingestion.quarantine import release_quarantined

        user = answer.get("responded_by_user") or {}
        who = user.get("name") or "nobody (timeout)"
        log = logging.getLogger("fraudflow.ingestion")
        if answer["chosen_options"] != [RELEASE]:
            log.info("%s keeps %s quarantined", who, params["day"])
            return False
        target = release_quarantined(get_settings(), dt.date.fromisoformat(params["day"]), run_id=run_id)
        log.info("%s released %s: %s is back in landing; ingesting the day again", who, params["day"], target)
        return True

    reingest_day = TriggerDagRunOperator(
        task_id="reingest_day", trigger_dag_id="ingest_transactions", conf={"day": "{{ params.day }}"}
    )
    describe() >> release_or_keep
    release(release_or_keep.output) >> reingest_day


review_quarantine()
