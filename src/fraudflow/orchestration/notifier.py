"""Airflow failures as fraudflow alerts: a red task must reach a person, not wait in the UI.

``FraudflowAlertNotifier`` is an Airflow notifier (``BaseNotifier``) that every DAG sets as its
tasks' ``on_failure_callback`` (``fraudflow.orchestration.dag_defaults``). It sends the failure
through ``fraudflow.monitoring.alerts``: the same ``alerts.jsonl``, tiers and webhook as
monitoring. Airflow calls it once a task has failed for good (after its retries); a
quarantined day arrives as the ``validate_batch`` failure, whose message names the file, the
broken rules and the report.
"""

from __future__ import annotations

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
