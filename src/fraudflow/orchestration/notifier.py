"""Airflow failures as fraudflow alerts: a red task must reach a person, not wait in the UI.

``FraudflowAlertNotifier`` is an Airflow notifier (``BaseNotifier``) that every DAG sets as its
tasks' ``on_failure_callback`` (``fraudflow.orchestration.dag_defaults``). It sends the failure
through ``fraudflow.monitoring.alerts``: the same ``alerts.jsonl``, tiers and webhook as
monitoring. Airflow calls it once a task has failed for good (after its retries); a
quarantined day arrives as the ``validate_batch`` failure, whose message names the file, the
broken rules and the report.

``deadline_missed`` is the callback of the DAGs' ``DeadlineAlert``s (``ingest_deadline``: day
D not published in time; ``training_deadline``: a nightly training still not finished). The
scheduler fires it through the executor when a run has not succeeded by its deadline.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import BaseNotifier


class FraudflowAlertNotifier(BaseNotifier):
    """Send a failed task as an ``immediate`` alert (check ``task_failed``)."""

    def __init__(self, tier: str = "immediate") -> None:
        super().__init__()
        self.tier = tier

    def notify(self, context: Any) -> None:
        from fraudflow.monitoring.alerts import Alert, Tier, send_alert
        from fraudflow.settings import get_settings

        ti = context.get("ti") or context.get("task_instance")
        dag_run = context.get("dag_run")
        exception = context.get("exception")
        dag_id = getattr(ti, "dag_id", None) or getattr(dag_run, "dag_id", "?")
        task_id = getattr(ti, "task_id", "?")
        run_id = getattr(dag_run, "run_id", None) or getattr(ti, "run_id", None)
        error = f"{type(exception).__name__}: {exception}" if exception is not None else "failed"
        send_alert(
            get_settings(),
            Alert(
                tier=Tier(self.tier),
                check=f"task_failed:{dag_id}.{task_id}",
                summary=f"{dag_id}.{task_id} failed in run {run_id}: {error}"[:2000],
                details={
                    "dag_id": dag_id,
                    "task_id": task_id,
                    "run_id": run_id,
                    "logical_date": str(context.get("logical_date")),
                    "try_number": getattr(ti, "try_number", None),
                    "error": error[:4000],
                },
            ),
        )


def deadline_missed(check: str, what: str, context: dict[str, Any] | None = None) -> None:
    """``SyncCallback`` of a missed ``DeadlineAlert``: an ``immediate`` alert naming the run.

    A run queued after its deadline had already passed (a catch-up or backfill of old days:
    ``make up`` creates 40 at once) did not miss anything by running late; it gets a ``daily``
    alert under ``<check>_catchup``, sent once a day, instead of one page per day caught up.

    Airflow passes ``context`` as ``{"dag_run": <the run as the REST API shows it>,
    "deadline": {"id", "deadline_time"}}``.
    """
    from fraudflow.monitoring.alerts import Alert, Tier, send_alert
    from fraudflow.settings import get_settings

    run = (context or {}).get("dag_run") or {}
    deadline = (context or {}).get("deadline") or {}
    interval_end = run.get("data_interval_end")
    summary = (
        f"{what}: {run.get('dag_id')} run {run.get('dag_run_id') or run.get('run_id')} "
        f"(data interval end {interval_end}) is {run.get('state')} at its deadline {deadline.get('deadline_time')}"
    )
    tier = Tier.immediate
    if _queued_after_deadline(run.get("queued_at"), deadline.get("deadline_time")):
        tier, check = Tier.daily, f"{check}_catchup"
        summary = f"catch-up run, queued at {run.get('queued_at')} after its deadline had passed: {summary}"
    send_alert(
        get_settings(),
        Alert(
            tier=tier,
            check=check,
            summary=summary[:2000],
            details={
                "dag_id": run.get("dag_id"),
                "run_id": run.get("dag_run_id") or run.get("run_id"),
                "logical_date": run.get("logical_date"),
                "data_interval_end": interval_end,
                "state": run.get("state"),
                "deadline_time": str(deadline.get("deadline_time")),
            },
        ),
    )


def deadline_alert(check: str, what: str, *, reference: str, after: dt.timedelta):
    """A ``DeadlineAlert`` that calls :func:`deadline_missed` (``reference``: ``logical_date``
    or ``queued_at`` of the run)."""
    from airflow.sdk.definitions.callback import SyncCallback
    from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

    references = {
        "logical_date": DeadlineReference.DAGRUN_LOGICAL_DATE,
        "queued_at": DeadlineReference.DAGRUN_QUEUED_AT,
    }
    return DeadlineAlert(
        reference=references[reference],
        interval=after,
        callback=SyncCallback(deadline_missed, kwargs={"check": check, "what": what}),
        name=check,
    )


def _queued_after_deadline(queued_at: Any, deadline_time: Any) -> bool:
    def instant(value: Any) -> dt.datetime | None:
        try:
            when = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
        except ValueError:
            return None
        return when if when.tzinfo else when.replace(tzinfo=dt.UTC)  # Airflow stores UTC

    if not queued_at or not deadline_time:
        return False

    queued, due = instant(queued_at), instant(deadline_time)
    return queued is not None and due is not None and queued >= due
