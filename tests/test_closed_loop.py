"""The whole closed loop at small scale (about 2,700 transactions a day), exactly as `make demo`
runs it: every day ingested through Airflow, first model gated, registered and deployed, a live
`bentoml serve` answering the drifted days, monitor_drift failing and triggering train_model,
and the new model gated and staged (shadow, canary, promote or rollback)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from fraudflow import tags
from fraudflow.registry import CHAMPION, MODEL_NAME, aliases
from fraudflow.serving.prediction_log import read_predictions
from tests.helpers import CLOSED_LOOP as CONFIG

pytestmark = pytest.mark.e2e


@pytest.fixture()
def loop(closed_loop):
    return closed_loop


def test_every_stage_ran_and_the_demo_reports_ok(loop):
    settings, report, text = loop
    assert report.ok, text[-4000:]
    assert all(run.state == "success" for run in report.dag_runs), [r for r in report.dag_runs if r.state != "success"]
    # The history in one backfill run, the drifted days one daily run each.
    ingests = [r for r in report.dag_runs if r.dag_id == "ingest_transactions"]
    assert len(ingests) == CONFIG.drift_days
    assert [r.dag_id for r in report.dag_runs if r.dag_id != "ingest_transactions"][:4] == [
        "backfill_transactions",
        "build_features",
        "train_model",
        "deploy_model",
    ]
    assert "demo OK" in text and "monitor_drift" in text


def test_monitor_drift_failed_on_the_injected_columns_only(loop):
    settings, report, _ = loop
    summary = json.loads(Path(report.monitoring_summary).read_text())
    drifted = {c["column"] for c in summary["input_drift"]["columns"] if c["drifted"]}
    assert {"TX_AMOUNT", "TX_DURING_NIGHT"} <= drifted
    assert not {"CUSTOMER_ID_NB_TX_1DAY_WINDOW", "CUSTOMER_ID_NB_TX_7DAY_WINDOW", "TX_DURING_WEEKEND"} & drifted
    assert summary["prediction_drift"]["current_source"] == "prediction_log"  # the live service's answers
    assert report.failed_checks == summary["failed_checks"]
    for html in ("input_drift.html", "prediction_drift.html"):
        assert (Path(report.monitoring_summary).parent / html).is_file()


def test_train_model_was_triggered_once_with_the_reason(loop):
    settings, report, _ = loop
    assert report.triggered_training == 1
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    runs = mlflow.search_runs(
        experiment_names=["fraudflow-training"],
        filter_string=f"tags.`{tags.REASON}` LIKE 'drift checks failed%'",
        output_format="list",
    )
    (parent,) = [r for r in runs if tags.FAILED_CHECKS in r.data.tags]
    assert "input_drift: TX_AMOUNT" in parent.data.tags[tags.FAILED_CHECKS]
    assert parent.data.tags[tags.DRIFT_REPORT] == report.monitoring_summary


def test_the_retrained_model_went_through_the_gate_and_the_staged_rollout(loop):
    settings, report, _ = loop
    client = MlflowClient(settings.mlflow_tracking_uri)
    versions = {str(v.version): v for v in client.search_model_versions(f"name='{MODEL_NAME}'")}
    decisions = [json.loads(x) for x in (settings.serving_dir / "decisions.jsonl").read_text().splitlines()]
    assert sorted(versions) == ["1", "2", "3"], report.retrain_outcome  # 3: the drilled bad challenger
    retrained = versions["2"]
    assert retrained.tags[tags.REASON].startswith("drift checks failed")
    card = Path(retrained.tags[tags.MODEL_CARD]).read_text()
    assert "| failed checks | input_drift: TX_AMOUNT" in card and report.monitoring_summary in card
    staged = [d["stage"] for d in decisions if str(d.get("challenger") or d.get("version")) == str(retrained.version)]
    assert staged[:2] == ["shadow", "canary"] and staged[2] in ("promote", "rollback")
    shadow = next(d for d in decisions if d["stage"] == "shadow" and d["challenger"] == str(retrained.version))
    assert not shadow.get("skipped") and shadow["replay"]["failed"] == 0
    expected = "promoted" if staged[2] == "promote" else "rolled back"
    assert report.retrain_outcome.startswith(expected)
    assert aliases(settings)[CHAMPION] == ("2" if staged[2] == "promote" else "1")
    assert retrained.tags[tags.REFIT_OF]  # registered as the refit on the freshest labelled week


def test_a_drilled_bad_challenger_is_rolled_back_by_the_canary(loop):
    """A challenger failing every second call: the champion covered every answer, yet the
    canary counts the failures and the rollout undoes itself."""
    settings, report, text = loop
    assert report.drill_outcome.startswith("rolled back") and "error_rate" in report.drill_outcome
    decisions = [json.loads(x) for x in (settings.serving_dir / "decisions.jsonl").read_text().splitlines()]
    canary = [d for d in decisions if d["stage"] == "canary" and d.get("challenger") == "3"][-1]
    assert not canary["check"]["passed"] and canary["replay"]["failed"] == 0  # no customer saw a failure
    assert 0.3 < canary["check"]["checks"]["error_rate"]["value"] < 0.7
    assert "3" not in aliases(settings).values()
    assert "drilled bad challenger: rolled back" in text


def test_the_prediction_log_holds_every_live_answer(loop):
    settings, report, _ = loop
    log = read_predictions(settings.predictions_dir)
    assert len(log) >= CONFIG.replay_per_day * CONFIG.drift_days
    assert log["features"].notna().all() and log["score"].between(0, 1).all()
