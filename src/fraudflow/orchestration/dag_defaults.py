"""What every fraudflow DAG shares: owner, retries from settings, failure alerts, the configured
start date."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fraudflow.settings import Settings


def default_args(settings: Settings) -> dict[str, Any]:
    from fraudflow.orchestration.notifier import FraudflowAlertNotifier

    return {
        "owner": "fraudflow",
        "retries": settings.task_retries,
        "retry_delay": dt.timedelta(seconds=settings.task_retry_delay_seconds),
        "on_failure_callback": [FraudflowAlertNotifier()],
    }


def start_date(settings: Settings) -> dt.datetime:
    return dt.datetime.combine(settings.start_date, dt.time(), tzinfo=dt.UTC)
