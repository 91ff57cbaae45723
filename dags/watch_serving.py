"""
### Watch serving

Every 5 minutes (`FRAUDFLOW_SERVING_WATCH_SCHEDULE`): probes the scoring service at
`FRAUDFLOW_SERVING_URL` (`/healthz`) and reads its Prometheus `/metrics`. Raises an
**immediate** alert when the service is down (once a champion exists: before a first model
nothing is expected to answer) or when more than `FRAUDFLOW_ALERT_ERROR_RATE`
of the requests answered since the previous check failed (4xx/5xx). Alerts go to the task
log, `monitoring/alerts.jsonl` and the optional webhook `FRAUDFLOW_ALERT_WEBHOOK_URL`.
The task itself succeeds: an outage is reported by the alert, not by a red task; with
`FRAUDFLOW_SERVING_AUTOSTART` (default on) and a champion, a service that is down is started
again (a first deployment has no service to keep, a crashed one is restarted).

**reconcile_rollout**: when no `deploy_model` run is queued or running, a service left in
shadow or canary (a killed controller), half-done alias moves (a crash between two registry
calls) or a state behind the registry's `champion` are repaired, the service returns to the
champion alone, and an **immediate** alert says what was repaired and why.
"""

from __future__ import annotations

from airflow.sdk import dag, task

from fraudflow.orchestration.dag_defaults import default_args, start_date
from fraudflow.settings import get_settings

SETTINGS = get_settings()


@dag(
    schedule=SETTINGS.serving_watch_schedule,
    start_date=start_date(SETTINGS),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(SETTINGS),
    tags=["fraudflow", "monitoring", "alerts"],
    doc_md=__doc__,
)
def watch_serving():
    @task(multiple_outputs=False)
    def check_service() -> dict:
        from fraudflow import registry
        from fraudflow.monitoring.alerts import check_service as probe
        from fraudflow.monitoring.alerts import send_alert
        from fraudflow.settings import get_settings

        settings = get_settings()
        health, alerts = probe(settings, settings.serving_url)
        if not health.up and registry.version_by_alias(settings, registry.CHAMPION) is None:
            alerts = []  # nothing was ever promoted: no service is expected to answer yet
        sent = [send_alert(settings, a).model_dump(mode="json") for a in alerts]
        restarted = None
        if not health.up and settings.serving_autostart:
            from fraudflow.deployment.service_process import ensure_service

            # A champion with no service answering (never started after a first deployment,
            # or crashed): start it, as deploy_model's autostart does. Nothing without one.
            restarted = ensure_service(settings) or None
        return {"health": health.model_dump(), "alerts": sent, "started_service": restarted}

    @task(multiple_outputs=False)
    def reconcile_rollout(ti=None) -> dict:
        from fraudflow.deployment.reconcile import reconcile_serving
        from fraudflow.monitoring.alerts import Alert, Tier, send_alert
        from fraudflow.settings import get_settings

        active = ti.get_dr_count(dag_id="deploy_model", states=["queued", "running"])
        if active:
            return {"skipped": f"{active} deploy_model run(s) queued or running"}
        settings = get_settings()
        repair = reconcile_serving(settings)
        if repair.changed:
            summary = "deployment repaired: " + "; ".join(repair.reasons)
            send_alert(settings, Alert(tier=Tier.immediate, check="rollout_reconciled", summary=summary))
        return repair.model_dump()

    check_service()
    reconcile_rollout()


watch_serving()
