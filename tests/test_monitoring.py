"""monitor_drift through real Airflow, Feast, MLflow and Evidently, on a simulated world whose
last week drifts (bigger amounts, more night-time spending) while the weeks before do not."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraudflow import registry, tags
from fraudflow.demo.simulate import DriftSpec, SimulationConfig, simulate_transactions
from fraudflow.features.compute import LABEL
from fraudflow.monitoring.checks import SCORE, check_performance, monitoring_windows
from fraudflow.monitoring.drift import champion_reference_metrics, score_frame, window_features
from fraudflow.orchestration.runtime import as_logical_date, load_dag, run_dag
from fraudflow.schema import LABEL_DELAY_DAYS, normalise_transactions
from tests.webhook import WebhookReceiver

pytestmark = pytest.mark.e2e

START = dt.date(2018, 4, 1)
DRIFT_START = START + dt.timedelta(days=68)
WORLD = SimulationConfig(
    days=75,
    customers=1500,
    terminals=3000,
    seed=21,
    drift=DriftSpec(start=DRIFT_START, amount_scale=1.5, night_share=0.2),
)
CHAMPION_RUN_DATE = START + dt.timedelta(days=52)  # trains on days 32-38: every 30-day window is full
CLEAN_AS_OF = DRIFT_START - dt.timedelta(days=1)  # window 61-67: undrifted
DRIFTED_AS_OF = START + dt.timedelta(days=74)  # window 68-74: all drifted


@pytest.fixture(scope="module")
def monitored_home(airflow_db, tmp_path_factory):
    """Lake, features, Feast online store, and a champion trained on undrifted days."""
    from fraudflow.features.compute import build_features
    from fraudflow.features.store import apply_feature_repo, materialize_online
    from fraudflow.settings import get_settings
    from fraudflow.training.judge import judge_candidates
    from fraudflow.training.register import register_best
    from fraudflow.training.train import train_candidate
    from fraudflow.training.training_set import build_training_set
    from tests.helpers import publish_history

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FRAUDFLOW_HOME", str(tmp_path_factory.mktemp("monitor") / "home"))
        mp.setenv("FRAUDFLOW_GATE_MIN_AVERAGE_PRECISION", "0.3")
        settings = get_settings()
        publish_history(settings, normalise_transactions(simulate_transactions(WORLD)))
        build_features(settings)
        apply_feature_repo(settings)
        materialize_online(settings, end=as_logical_date(DRIFTED_AS_OF + dt.timedelta(days=1)))
        training_set = build_training_set(settings, run_date=CHAMPION_RUN_DATE, run_id="champion", reason="test")
        run = train_candidate(settings, candidate="xgboost", training_set=training_set, params={})
        decision = judge_candidates(settings, training_set=training_set, candidates=[run])
        assert decision.passed, decision.reason
        register_best(settings, decision=decision, training_set=training_set, run_id="champion", reason="test")
        registry.promote_challenger(settings)
        yield settings


def _train_model_runs(settings) -> list:
    """train_model runs triggered for this test's home (the Airflow DB is shared by the session)."""
    from airflow.models import DagRun

    runs = DagRun.find(dag_id="train_model")
    return [r for r in runs if str(settings.root) in str((r.conf or {}).get("report_path"))]


def _monitor(as_of: dt.date):
    """One asset-style run (no logical date). dag.test() replaces any earlier run with the same
    logical date, here NULL: read a run's task states before starting the next."""
    return run_dag(load_dag("monitor_drift"), logical_date=None, conf={"as_of": as_of.isoformat()})


def _task_states(outcome) -> dict[str, str]:
    from airflow.models import DagRun

    (dr,) = DagRun.find(dag_id="monitor_drift", run_id=outcome.run_id)
    return {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in dr.get_task_instances()}


def _summary(settings, as_of: dt.date, outcome) -> dict:
    from fraudflow.ingestion.landing import safe_run_id

    path = settings.root / "monitoring" / as_of.isoformat() / safe_run_id(outcome.run_id) / "summary.json"
    return json.loads(path.read_text())


def test_monitoring_windows_respect_the_label_delay():
    w = monitoring_windows(dt.date(2018, 6, 30), days=7, delay_days=7)
    assert (w.recent_start, w.recent_end) == (dt.date(2018, 6, 24), dt.date(2018, 6, 30))
    assert (w.matured_start, w.matured_end) == (dt.date(2018, 6, 17), dt.date(2018, 6, 23))


def test_clean_window_raises_no_alarm_and_triggers_nothing(monitored_home, monkeypatch):
    settings = monitored_home
    with WebhookReceiver() as receiver:
        monkeypatch.setenv("FRAUDFLOW_ALERT_WEBHOOK_URL", receiver.url)
        outcome = _monitor(CLEAN_AS_OF)
    assert outcome.state == "success", outcome
    states = _task_states(outcome)
    assert states["check_champion"] == "success" and states["raise_alerts"] == "success"
    assert states["trigger_train_model"] == "skipped"
    summary = _summary(settings, CLEAN_AS_OF, outcome)
    assert summary["failed_checks"] == [], summary["failed_checks"]
    assert summary["input_drift"]["passed"] and summary["prediction_drift"]["passed"]
    assert summary["performance"]["passed"] and not summary["performance"]["skipped"]
    assert max(c["score"] for c in summary["input_drift"]["columns"]) < 0.1
    assert receiver.received == []
    assert _train_model_runs(settings) == []
    for html in (summary["input_drift"]["report_html"], summary["prediction_drift"]["report_html"]):
        assert Path(html).stat().st_size > 10_000  # Evidently's rendered report
    assert "Dataset Drift is NOT detected" in Path(summary["input_drift"]["report_html"]).read_text()


def test_drifted_window_names_the_columns_and_triggers_training_once(monitored_home, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    settings = monitored_home
    with WebhookReceiver() as receiver:
        monkeypatch.setenv("FRAUDFLOW_ALERT_WEBHOOK_URL", receiver.url)
        first = _monitor(DRIFTED_AS_OF)
        assert first.state == "success" and _task_states(first)["trigger_train_model"] == "success"
        second = _monitor(DRIFTED_AS_OF)  # the triggered train_model run is still queued
        assert second.state == "success" and _task_states(second)["trigger_train_model"] == "skipped"

    summary = _summary(settings, DRIFTED_AS_OF, first)
    drifted = {c["column"] for c in summary["input_drift"]["columns"] if c["drifted"]}
    assert {"TX_AMOUNT", "TX_DURING_NIGHT", "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW"} <= drifted
    assert not any(c.startswith("TERMINAL_ID") for c in drifted)  # what the drift did not touch
    assert any(f.startswith("input_drift: TX_AMOUNT") for f in summary["failed_checks"])
    # Evidently's own headline says what fraudflow decided (its default 0.5 share would not).
    report = Path(summary["input_drift"]["report_html"]).read_text()
    assert "Dataset Drift is detected" in report and "Dataset Drift is NOT detected" not in report
    assert len(drifted) < len(summary["input_drift"]["columns"]) / 2  # the case the default got wrong

    # both runs' snapshots are in the Evidently workspace, stamped with the judged day
    from evidently.ui.workspace import Workspace

    from fraudflow.monitoring.workspace import PROJECT, workspace_dir

    workspace = Workspace(str(workspace_dir(settings)))
    (project,) = workspace.search_project(PROJECT)
    runs = [workspace.get_run(project.id, run_id) for run_id in workspace.list_runs(project.id)]
    assert len(runs) >= 4 and DRIFTED_AS_OF in {r.timestamp.date() for r in runs}

    (run,) = _train_model_runs(settings)
    assert str(getattr(run.state, "value", run.state)) == "queued"
    assert run.conf["reason"].startswith("drift checks failed: input_drift: TX_AMOUNT")
    assert run.conf["failed_checks"] == summary["failed_checks"]
    assert run.conf["run_date"] == DRIFTED_AS_OF.isoformat()
    assert Path(run.conf["report_path"]).is_file()

    # drift without performance loss: one weekly alert, the second run's is throttled
    assert [(r["tier"], r["check"]) for r in receiver.received] == [("weekly", "drift")]
    assert "TX_AMOUNT" in receiver.received[0]["summary"]

    # the monitoring run in MLflow carries the reports
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    client = MlflowClient(settings.mlflow_tracking_uri)
    logged = client.get_run(summary["mlflow_run_id"])
    assert logged.data.tags[tags.MONITORING] == "failed"
    assert logged.data.metrics["input_drift.TX_AMOUNT"] > 0.1
    artifacts = {a.path for a in client.list_artifacts(summary["mlflow_run_id"], "reports")}
    assert {"reports/input_drift.html", "reports/prediction_drift.html", "reports/summary.json"} <= artifacts
    _forget_queued(run)


def _forget_queued(run) -> None:
    """Leave the shared Airflow DB without this test's queued run."""
    from airflow.settings import Session

    with Session() as session:
        session.delete(session.merge(run))
        session.commit()


def test_performance_uses_only_matured_labels(monitored_home):
    """Labels younger than the delay never count; degraded matured labels fail the check."""
    settings = monitored_home
    as_of = CLEAN_AS_OF
    windows = monitoring_windows(as_of, days=7, delay_days=LABEL_DELAY_DAYS)
    champion = registry.version_by_alias(settings, registry.CHAMPION)
    frame = window_features(settings, windows.matured_start, windows.recent_end)
    frame[SCORE] = score_frame(champion, frame)
    reference = champion_reference_metrics(champion)
    tolerance = {"average_precision": 0.1, "card_precision_at_100": 0.1}

    def check(scored: pd.DataFrame):
        return check_performance(scored, windows=windows, reference=reference, tolerance=tolerance)

    baseline = check(frame)
    assert baseline.passed and not baseline.skipped
    assert (baseline.window_start, baseline.window_end) == (as_of - dt.timedelta(days=13), as_of - dt.timedelta(days=7))
    matured = frame["event_timestamp"].dt.date <= windows.matured_end
    assert baseline.metrics.n_transactions == int(matured.sum())

    young = frame.copy()  # every young label flipped: as if the recent week were all fraud
    young.loc[~matured, LABEL] = 1
    assert check(young).metrics == baseline.metrics

    rng = np.random.default_rng(0)
    degraded = frame.copy()  # the matured week's labels no longer follow the scores
    degraded.loc[matured, LABEL] = rng.permutation(degraded.loc[matured, LABEL].to_numpy())
    failed = check(degraded)
    assert not failed.passed and "average_precision" in failed.failed_metrics
    assert failed.metrics.average_precision < reference["average_precision"] - 0.1

    nothing_matured = check(frame[~matured])
    assert nothing_matured.passed and nothing_matured.skipped


def test_no_champion_trains_the_first_model_once_the_lake_has_history(monitored_home, monkeypatch):
    """A fresh system bootstraps itself: with no champion, monitor_drift's failed check is
    ``no_champion`` and it triggers train_model once the lake holds
    FRAUDFLOW_FIRST_MODEL_MIN_DAYS days; before that it skips."""
    settings = monitored_home
    champion = registry.aliases(settings)[registry.CHAMPION]
    registry.delete_alias(settings, registry.CHAMPION)
    try:
        monkeypatch.setenv("FRAUDFLOW_FIRST_MODEL_MIN_DAYS", "1000")
        waiting = _monitor(CLEAN_AS_OF)
        assert waiting.state == "success" and _task_states(waiting)["check_champion"] == "skipped"
        assert _first_model_runs() == []

        monkeypatch.setenv("FRAUDFLOW_FIRST_MODEL_MIN_DAYS", "35")
        first = _monitor(CLEAN_AS_OF)
        assert first.state == "success", first
        states = _task_states(first)
        assert states["raise_alerts"] == "success" and states["trigger_train_model"] == "success"
        (run,) = _first_model_runs()
        assert run.conf["reason"].startswith("no champion yet: first model on ")
        assert run.conf["failed_checks"] == ["no_champion"]
        _forget_queued(run)
    finally:
        registry.promote_version(settings, champion)
    assert registry.aliases(settings)[registry.CHAMPION] == champion


def _first_model_runs() -> list:
    from airflow.models import DagRun

    runs = DagRun.find(dag_id="train_model")
    return [r for r in runs if str((r.conf or {}).get("reason", "")).startswith("no champion yet")]
