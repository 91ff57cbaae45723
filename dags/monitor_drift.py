"""
### Monitor drift

Runs when fresh features are materialized (Asset `fraudflow_online_features`, i.e. after
each day's ingestion), or by hand with `{"as_of": "YYYY-MM-DD"}`. Compares the newest
`FRAUDFLOW_MONITOR_WINDOW_DAYS` (7) with what the `champion` was trained on.

1. **check_champion**: Evidently input drift (15 model inputs, per-column methods) and
   prediction drift (scores from the prediction log, or the champion scoring the lake
   window), and AP / CP@100 on the newest window whose labels have matured (older than the
   7-day delay) against the champion's gate metrics. HTML reports + JSON summary under
   `monitoring/<day>/`, logged to the MLflow experiment `fraudflow-monitoring`. With no
   champion yet and at least `FRAUDFLOW_FIRST_MODEL_MIN_DAYS` (58) lake days, the failed check
   is `no_champion` and the first model is trained (skipped before that).
2. **raise_alerts**: performance loss -> daily alert, drift only -> weekly alert (log,
   `monitoring/alerts.jsonl`, optional webhook). Service outages are `watch_serving`'s.
3. **retraining_needed**: short-circuit: a check failed and no `train_model` run is queued
   or running (never two retrainings for one drift).
4. **trigger_train_model**: `train_model` with `conf` = reason, failed checks, report path;
   the new model still passes the gate and the staged rollout of `deploy_model`.
"""

from __future__ import annotations

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, dag, task

from fraudflow.orchestration.assets import ONLINE_FEATURES
from fraudflow.orchestration.dag_defaults import default_args, start_date
from fraudflow.settings import get_settings

SETTINGS = get_settings()


@dag(
    schedule=[ONLINE_FEATURES],
    start_date=start_date(SETTINGS),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(SETTINGS),
    params={
        "as_of": Param(None, type=["null", "string"], description="last day of the window (default: newest lake day)"),
        "retrain": Param(True, type="boolean", description="trigger train_model when a check fails"),
    },
    tags=["fraudflow", "monitoring", "evidently"],
    doc_md=__doc__,
)
def monitor_drift():
    @task(multiple_outputs=False)
    def check_champion(params: dict | None = None, run_id: str | None = None) -> dict:
        import datetime as dt
        import logging

        from airflow.sdk.exceptions import AirflowSkipException

        from fraudflow.lake import list_partitions
        from fraudflow.monitoring.drift import NoChampion, monitor_champion
        from fraudflow.settings import get_settings

        log = logging.getLogger("fraudflow.monitoring")
        settings = get_settings()
        days = list_partitions(settings)
        if params.get("as_of"):
            as_of = dt.date.fromisoformat(params["as_of"])
        elif days:
            as_of = days[-1]
        else:
            raise AirflowSkipException("the lake is empty: nothing to monitor")
        try:
            result = monitor_champion(settings, as_of=as_of, run_id=run_id)
        except NoChampion as exc:
            # Nothing in production yet: once the lake holds enough history, the "failed
            # check" is the missing champion and the first model is trained (a fresh system
            # bootstraps itself under the scheduler); before that there is nothing to do.
            if len(days) < settings.first_model_min_days:
                wait = f"{len(days)} lake days, the first model needs {settings.first_model_min_days}"
                raise AirflowSkipException(f"{exc}; {wait}") from exc
            log.warning("%s: triggering the first model (%d lake days)", exc, len(days))
            return {
                "no_champion": True,
                "as_of": as_of.isoformat(),
                "failed_checks": ["no_champion"],
                "reason": f"no champion yet: first model on {len(days)} lake days",
                "summary_json": None,
            }
        for check in (result.input_drift, result.prediction_drift, result.performance):
            log.info("%s: %s - %s", check.name, "passed" if check.passed else "FAILED", check.reason)
        log.info("input drift report: file://%s", result.input_drift.report_html)
        log.info("prediction drift report: file://%s", result.prediction_drift.report_html)
        log.info("summary: file://%s (MLflow run %s)", result.summary_json, result.mlflow_run_id)
        return result.model_dump(mode="json") | {"reason": result.reason()}

    @task
    def raise_alerts(result: dict) -> list[dict]:
        from fraudflow.monitoring.alerts import monitoring_alerts, send_alert
        from fraudflow.settings import get_settings

        if result.get("no_champion"):
            return []  # nothing was monitored
        settings = get_settings()
        return [send_alert(settings, a).model_dump(mode="json") for a in monitoring_alerts(result)]

    @task.short_circuit
    def retraining_needed(result: dict, params: dict | None = None, ti=None) -> bool:
        import logging

        log = logging.getLogger("fraudflow.monitoring")
        if not result["failed_checks"]:
            log.info("every check passed: no retraining")
            return False
        if not params["retrain"]:
            log.warning("checks failed but retrain=false: not triggering train_model")
            return False
        active = ti.get_dr_count(dag_id="train_model", states=["queued", "running"])
        if active:
            log.warning("checks failed but %d train_model run(s) already queued or running: no second trigger", active)
            return False
        return True

    @task(multiple_outputs=False)
    def retraining_conf(result: dict) -> dict:
        return {
            "reason": result["reason"],
            "failed_checks": result["failed_checks"],
            "report_path": result["summary_json"],
            "run_date": result["as_of"],
        }

    result = check_champion()
    raise_alerts(result)
    conf = retraining_conf(result)
    trigger_train_model = TriggerDagRunOperator(task_id="trigger_train_model", trigger_dag_id="train_model", conf=conf)
    retraining_needed(result) >> conf >> trigger_train_model


monitor_drift()
