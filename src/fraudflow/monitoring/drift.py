"""Watch the champion in production: run the checks on a window, log them, record lineage.

The reference is what the champion learnt from: the training-set snapshot recorded on its
registry version (tag ``TRAINING_SET``). The current window is the last
``monitor_window_days`` of the lake, joined with the same Feast feature service as training,
so a drift signal can never come from two feature code paths disagreeing. Scores come from
the prediction log when the service answered enough requests in the window, else from the
champion scoring the lake window. The checks themselves are in ``fraudflow.monitoring.checks``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel

from fraudflow import tags
from fraudflow.features.compute import MODEL_INPUTS
from fraudflow.ingestion.landing import safe_run_id
from fraudflow.lineage import record_lineage
from fraudflow.monitoring.checks import (
    SCORE,
    DriftCheck,
    MonitoringWindows,
    PerformanceCheck,
    check_input_drift,
    check_performance,
    check_prediction_drift,
    monitoring_windows,
)
from fraudflow.monitoring.workspace import add_monitoring_snapshots
from fraudflow.registry import CHAMPION, VersionRef, version_by_alias
from fraudflow.settings import Settings
from fraudflow.tracking import MONITORING_EXPERIMENT, configure_mlflow
from fraudflow.training.refit import REFIT_FILE
from fraudflow.training.sampling import unbiased_rows

log = logging.getLogger(__name__)


class NoChampion(LookupError):
    """Nothing is in production yet: there is nothing to monitor."""


class MonitoringResult(BaseModel):
    as_of: dt.date
    champion_version: str
    windows: MonitoringWindows
    input_drift: DriftCheck
    prediction_drift: DriftCheck
    performance: PerformanceCheck
    failed_checks: list[str]  # e.g. "input_drift: TX_AMOUNT, TX_DURING_NIGHT"
    summary_json: str
    mlflow_run_id: str

    @property
    def passed(self) -> bool:
        return not self.failed_checks

    def reason(self) -> str:
        return "drift checks failed: " + "; ".join(self.failed_checks) if self.failed_checks else "all checks passed"


def score_frame(champion: VersionRef, frame: pd.DataFrame) -> np.ndarray:
    from fraudflow.models.candidates import load_candidate_model

    spec, model = load_candidate_model(champion.uri)
    return np.asarray(spec.predict_proba(model, frame[MODEL_INPUTS]), dtype=np.float64)


def load_reference(champion: VersionRef) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The champion's training-set snapshot: (train rows, held-out test rows).

    Inputs are compared with the rows it was trained on (their uniform share, if the window's
    negatives were sampled); its scores with its scores on the
    held-out rows (in-sample scores are more confident than any live score would be).
    """
    folder = champion.tags.get(tags.TRAINING_SET)
    if not folder or not Path(folder).is_dir():
        raise FileNotFoundError(
            f"fraud-detector v{champion.version} records no training-set snapshot "
            f"(tag fraudflow.training_set={folder!r}): cannot build the drift reference"
        )
    trained_on = Path(folder) / (REFIT_FILE if tags.REFIT_OF in champion.tags else "train.parquet")
    return unbiased_rows(pd.read_parquet(trained_on)), pd.read_parquet(Path(folder) / "test.parquet")


def reference_scores(champion: VersionRef, test_ref: pd.DataFrame) -> np.ndarray:
    """The champion's scores on held-out rows. A refit champion has none (it was fit on the
    newest labelled days, its test week included): its reference is the held-out scores of
    the judged model it refits (tag ``TEST_SCORES``), the behaviour the gate certified."""
    path = champion.tags.get(tags.TEST_SCORES)
    if tags.REFIT_OF in champion.tags and path and Path(path).exists():
        return pd.read_parquet(path, columns=["score"])["score"].to_numpy(float)
    return score_frame(champion, test_ref)


def window_features(settings: Settings, start: dt.date, end: dt.date) -> pd.DataFrame:
    """Lake rows of ``[start, end]`` with their point-in-time features from the feature service."""
    from fraudflow.features.point_in_time import historical_features
    from fraudflow.lake import read_lake

    rows = read_lake(settings, start=start, end=end)
    if rows.empty:
        return rows
    return historical_features(settings, rows)


def _logged(settings: Settings, champion: VersionRef, start: dt.date, end: dt.date) -> pd.DataFrame:
    """Prediction-log rows of transactions dated in ``[start, end]`` that the champion scored."""
    from fraudflow.serving.prediction_log import read_predictions

    log_frame = read_predictions(settings.predictions_dir)
    if log_frame.empty:
        return log_frame
    day = pd.to_datetime(log_frame["tx_datetime"], utc=True, format="ISO8601").dt.date
    mine = log_frame[(day >= start) & (day <= end) & (log_frame["champion_version"].astype(str) == champion.version)]
    return mine[mine["champion_score"].notna()].reset_index(drop=True)


def logged_scores(settings: Settings, champion: VersionRef, start: dt.date, end: dt.date) -> pd.Series:
    """The champion's live scores for transactions dated in ``[start, end]`` (prediction log)."""
    mine = _logged(settings, champion, start, end)
    return mine["champion_score"].astype(float) if len(mine) else pd.Series(dtype=float)


def logged_inputs(settings: Settings, champion: VersionRef, start: dt.date, end: dt.date) -> pd.DataFrame:
    """The 15 model inputs the service served for transactions dated in ``[start, end]``
    (prediction log; one row per transaction, the last answer when a client retried)."""
    mine = _logged(settings, champion, start, end)
    if mine.empty:
        return pd.DataFrame(columns=MODEL_INPUTS)
    mine = mine.drop_duplicates("transaction_id", keep="last")
    rows = [json.loads(f) if isinstance(f, str) else f for f in mine["features"]]
    return pd.DataFrame(rows, columns=MODEL_INPUTS).astype(float)


def champion_reference_metrics(champion: VersionRef) -> dict[str, float]:
    try:
        return {
            "average_precision": float(champion.tags[tags.AVERAGE_PRECISION]),
            "card_precision_at_100": float(champion.tags[tags.CARD_PRECISION_AT_100]),
        }
    except KeyError as exc:
        raise ValueError(f"fraud-detector v{champion.version} has no gate metric tag {exc}") from None


def monitor_champion(settings: Settings, *, as_of: dt.date, run_id: str | None = None) -> MonitoringResult:
    """Run the three checks for the window ending ``as_of``; write the HTML reports and a JSON
    summary under ``monitoring/``, log them to an MLflow run, and record lineage."""
    champion = version_by_alias(settings, CHAMPION)
    if champion is None:
        raise NoChampion("no fraud-detector version has the alias 'champion': nothing to monitor")
    windows = monitoring_windows(as_of, days=settings.monitor_window_days)
    out_dir = settings.root / "monitoring" / as_of.isoformat() / safe_run_id(run_id)
    out_dir.mkdir(parents=True, exist_ok=True)

    train_ref, test_ref = load_reference(champion)
    frame, recent = _scored_windows(settings, champion, windows)
    current_scores, source = _current_scores(settings, champion, windows, recent)
    # What the service fed the model (equal to the offline features since serving computes the
    # windows per request); the lake's point-in-time features when the log is too thin.
    served = logged_inputs(settings, champion, windows.recent_start, windows.recent_end) if source != "lake" else None
    input_drift = (
        check_input_drift(settings, train_ref, recent, out_dir, as_of=as_of)
        if served is None
        else check_input_drift(settings, train_ref, served, out_dir, source="prediction_log", as_of=as_of)
    )
    prediction_drift = check_prediction_drift(
        settings, reference_scores(champion, test_ref), current_scores, source, out_dir, as_of=as_of
    )
    performance = check_performance(
        frame,
        windows=windows,
        reference=champion_reference_metrics(champion),
        tolerance={
            "average_precision": settings.performance_ap_tolerance,
            "card_precision_at_100": settings.performance_cp_tolerance,
        },
    )
    result = MonitoringResult(
        as_of=as_of,
        champion_version=champion.version,
        windows=windows,
        input_drift=input_drift,
        prediction_drift=prediction_drift,
        performance=performance,
        failed_checks=_failed_checks(input_drift, prediction_drift, performance),
        summary_json=str(out_dir / "summary.json"),
        mlflow_run_id="",
    )
    result.mlflow_run_id = _log_monitoring_run(settings, result, run_id=run_id)
    Path(result.summary_json).write_text(result.model_dump_json(indent=2))
    add_monitoring_snapshots(settings, [input_drift.snapshot_json, prediction_drift.snapshot_json], MODEL_INPUTS)

    record_lineage(
        settings,
        stage="monitor_drift",
        run_id=run_id,
        read={
            "partitions": sorted({d.isoformat() for d in frame["event_timestamp"].dt.date}),
            "champion_version": champion.version,
            "reference_training_set": champion.tags.get(tags.TRAINING_SET),
            "scores": source,
        },
        wrote={
            "summary": result.summary_json,
            "mlflow_run": result.mlflow_run_id,
            "failed_checks": result.failed_checks,
        },
    )
    return result


def _scored_windows(
    settings: Settings, champion: VersionRef, windows: MonitoringWindows
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The lake from the matured window's start to ``as_of`` with Feast features and the
    champion's scores, and its drift-window part."""
    frame = window_features(settings, windows.matured_start, windows.recent_end)
    if frame.empty:
        raise LookupError(f"no published transactions in {windows.matured_start}..{windows.recent_end}")
    frame[SCORE] = score_frame(champion, frame)
    day = frame["event_timestamp"].dt.date
    recent = frame[(day >= windows.recent_start) & (day <= windows.recent_end)]
    if recent.empty:
        raise LookupError(f"no published transactions in the drift window {windows.recent_start}..{windows.as_of}")
    return frame, recent


def _current_scores(
    settings: Settings, champion: VersionRef, windows: MonitoringWindows, recent: pd.DataFrame
) -> tuple[np.ndarray, str]:
    """Live scores from the prediction log when the service answered enough requests in the
    window, else the champion's scores of the lake window; with where they came from."""
    live = logged_scores(settings, champion, windows.recent_start, windows.recent_end)
    if len(live) >= settings.monitor_min_logged_predictions:
        return live.to_numpy(), "prediction_log"
    return recent[SCORE].to_numpy(), "lake"


def _failed_checks(input_drift: DriftCheck, prediction_drift: DriftCheck, performance: PerformanceCheck) -> list[str]:
    failed = []
    if not input_drift.passed:
        failed.append(f"input_drift: {', '.join(input_drift.drifted)}")
    if not prediction_drift.passed:
        failed.append(f"prediction_drift: {prediction_drift.reason}")
    if not performance.passed:
        failed.append(f"performance: {', '.join(performance.failed_metrics)} ({performance.reason})")
    return failed


def _log_monitoring_run(settings: Settings, result: MonitoringResult, *, run_id: str | None) -> str:
    """One MLflow run in the monitoring experiment: scores as metrics, reports as artifacts."""
    import mlflow

    configure_mlflow(settings, MONITORING_EXPERIMENT)
    run_tags = {
        tags.AS_OF: result.as_of.isoformat(),
        tags.CHAMPION_VERSION: result.champion_version,
        tags.AIRFLOW_RUN_ID: run_id or "adhoc",
        tags.MONITORING: "failed" if result.failed_checks else "passed",
    }
    input_drift, performance = result.input_drift, result.performance
    metrics = {
        "input_drift.drifted_columns": len(input_drift.drifted),
        "prediction_drift.score": result.prediction_drift.columns[0].score,
    }
    metrics |= {f"input_drift.{c.column}": c.score for c in input_drift.columns}
    if performance.metrics is not None:
        metrics |= {
            "performance.average_precision": performance.metrics.average_precision,
            "performance.card_precision_at_100": performance.metrics.card_precision_at_100,
        }
    with mlflow.start_run(run_name=f"monitor_drift {result.as_of}", tags=run_tags) as run:
        mlflow.log_metrics(metrics)
        mlflow.log_artifact(input_drift.report_html, "reports")
        mlflow.log_artifact(result.prediction_drift.report_html, "reports")
        summary = json.loads(result.model_copy(update={"mlflow_run_id": run.info.run_id}).model_dump_json())
        mlflow.log_dict(summary, "reports/summary.json")
        return run.info.run_id
