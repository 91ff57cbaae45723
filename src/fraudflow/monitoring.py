"""Watch the champion in production: input drift, prediction drift and matured performance.

The reference is what the champion learnt from: the training-set snapshot recorded on its
registry version (``fraudflow.training_set``). The current window is the last
``monitor_window_days`` of the lake, joined with the same Feast feature service as training,
so a drift signal can never come from two feature code paths disagreeing. Scores come from
the prediction log when the service answered enough requests in the window, else from the
champion scoring the lake window. Performance is only measured on days whose labels have
matured (older than the label delay): younger labels are incomplete, not evidence.

Evidently computes the drift (per-column methods: normed Wasserstein for amounts, PSI for
counts, ratios and flags, which stay stable on this data where normed Wasserstein on the
near-degenerate terminal-risk columns does not) and renders the HTML reports.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

from fraudflow.evaluation import Metrics, evaluate_scores
from fraudflow.features import CUSTOMER_FEATURES, LABEL, MODEL_INPUTS
from fraudflow.landing import safe_run_id
from fraudflow.lineage import record_lineage
from fraudflow.registry import CHAMPION, VersionRef, version_by_alias
from fraudflow.settings import Settings
from fraudflow.tracking import MONITORING_EXPERIMENT, configure_mlflow

log = logging.getLogger("fraudflow.monitoring")

SCORE = "score"
AMOUNT_COLUMNS = ["TX_AMOUNT", *[c for c in CUSTOMER_FEATURES if "AVG_AMOUNT" in c]]


class NoChampion(LookupError):
    """Nothing is in production yet: there is nothing to monitor."""


class MonitoringWindows(BaseModel):
    as_of: dt.date
    recent_start: dt.date  # drift: the newest days
    recent_end: dt.date
    matured_start: dt.date  # performance: the newest days whose labels are older than the delay
    matured_end: dt.date


def monitoring_windows(as_of: dt.date, *, days: int = 7, delay_days: int = 7) -> MonitoringWindows:
    """The drift window ends on ``as_of``; the performance window ends ``delay_days`` earlier,
    so no label younger than the delay is ever used."""
    matured_end = as_of - dt.timedelta(days=delay_days)
    return MonitoringWindows(
        as_of=as_of,
        recent_start=as_of - dt.timedelta(days=days - 1),
        recent_end=as_of,
        matured_start=matured_end - dt.timedelta(days=days - 1),
        matured_end=matured_end,
    )


class ColumnDrift(BaseModel):
    column: str
    method: str
    score: float
    threshold: float
    drifted: bool


class DriftCheck(BaseModel):
    name: str  # input_drift | prediction_drift
    passed: bool
    columns: list[ColumnDrift]
    reason: str
    report_html: str
    reference_rows: int
    current_rows: int
    current_source: str  # lake | prediction_log

    @property
    def drifted(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]


class PerformanceCheck(BaseModel):
    name: str = "performance"
    passed: bool
    skipped: bool = False
    window_start: dt.date
    window_end: dt.date
    metrics: Metrics | None = None
    reference: dict[str, float]  # the champion's gate metrics
    tolerance: dict[str, float]
    failed_metrics: list[str] = []
    reason: str


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


def drift_methods(settings: Settings) -> dict[str, str]:
    return {c: settings.drift_amount_method if c in AMOUNT_COLUMNS else settings.drift_method for c in MODEL_INPUTS}


def score_frame(champion: VersionRef, frame: pd.DataFrame) -> np.ndarray:
    from fraudflow.models.candidates import load_candidate_model

    spec, model = load_candidate_model(champion.uri)
    return np.asarray(spec.predict_proba(model, frame[MODEL_INPUTS]), dtype=np.float64)


def load_reference(champion: VersionRef) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The champion's training-set snapshot: (train rows, held-out test rows).

    Inputs are compared with the rows it was trained on; its scores with its scores on the
    held-out rows (in-sample scores are more confident than any live score would be).
    """
    folder = champion.tags.get("fraudflow.training_set")
    if not folder or not Path(folder).is_dir():
        raise FileNotFoundError(
            f"fraud-detector v{champion.version} records no training-set snapshot "
            f"(tag fraudflow.training_set={folder!r}): cannot build the drift reference"
        )
    return pd.read_parquet(Path(folder) / "train.parquet"), pd.read_parquet(Path(folder) / "test.parquet")


def window_features(settings: Settings, start: dt.date, end: dt.date) -> pd.DataFrame:
    """Lake rows of ``[start, end]`` with their point-in-time features from the feature service."""
    from fraudflow.feature_store import historical_features
    from fraudflow.ingest import read_lake

    rows = read_lake(settings, start=start, end=end)
    if rows.empty:
        return rows
    return historical_features(settings, rows)


def logged_scores(settings: Settings, champion: VersionRef, start: dt.date, end: dt.date) -> pd.Series:
    """The champion's live scores for transactions dated in ``[start, end]`` (prediction log)."""
    from fraudflow.prediction_log import read_predictions

    log_frame = read_predictions(settings.predictions_dir)
    if log_frame.empty:
        return pd.Series(dtype=float)
    day = pd.to_datetime(log_frame["tx_datetime"], utc=True, format="ISO8601").dt.date
    mine = log_frame[(day >= start) & (day <= end) & (log_frame["champion_version"].astype(str) == champion.version)]
    return mine["champion_score"].dropna().astype(float).reset_index(drop=True)


def _evidently_columns(snapshot: Any, methods: dict[str, str]) -> list[ColumnDrift]:
    out = []
    for metric in snapshot.dict()["metrics"]:
        config = metric.get("config", {})
        if config.get("type", "").endswith("ValueDrift"):
            column = config["column"]
            threshold = float(config.get("threshold") or 0.1)
            score = float(metric["value"])
            out.append(
                ColumnDrift(
                    column=column,
                    method=config.get("method") or methods.get(column, "?"),
                    score=score,
                    threshold=threshold,
                    drifted=score >= threshold,
                )
            )
    return out


def _failed_tests(snapshot: Any) -> list[str]:
    return [t["name"] for t in snapshot.dict()["tests"] if "FAIL" in str(t["status"]).upper()]


def check_input_drift(settings: Settings, reference: pd.DataFrame, current: pd.DataFrame, out_dir: Path) -> DriftCheck:
    """Evidently drift on the 15 model inputs; fails when more than
    ``drift_max_drifted_inputs`` columns drift (a condition on Evidently's column count)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import DriftedColumnsCount
    from evidently.presets import DataDriftPreset
    from evidently.tests import lte

    methods = drift_methods(settings)
    definition = DataDefinition(numerical_columns=MODEL_INPUTS)
    common = {"columns": MODEL_INPUTS, "per_column_method": methods, "threshold": settings.drift_threshold}
    report = Report(
        [
            DataDriftPreset(**common),
            DriftedColumnsCount(**common, tests=[lte(settings.drift_max_drifted_inputs)]),
        ],
        include_tests=True,
    )
    snapshot = report.run(
        Dataset.from_pandas(current[MODEL_INPUTS].reset_index(drop=True), data_definition=definition),
        Dataset.from_pandas(reference[MODEL_INPUTS].reset_index(drop=True), data_definition=definition),
    )
    html = out_dir / "input_drift.html"
    snapshot.save_html(str(html))
    columns = _evidently_columns(snapshot, methods)
    drifted = [c for c in columns if c.drifted]
    failed_tests = [t for t in _failed_tests(snapshot) if "Drifted Columns" in t or "drifted columns" in t.lower()]
    passed = not failed_tests and len(drifted) <= settings.drift_max_drifted_inputs
    listing = ", ".join(f"{c.column} ({c.method} {c.score:.2f} >= {c.threshold:.2f})" for c in drifted)
    reason = (
        f"{len(drifted)} of {len(columns)} inputs drifted: {listing}"
        if drifted
        else f"no input drifted ({len(columns)} columns)"
    )
    return DriftCheck(
        name="input_drift",
        passed=passed,
        columns=columns,
        reason=reason,
        report_html=str(html),
        reference_rows=len(reference),
        current_rows=len(current),
        current_source="lake",
    )


def check_prediction_drift(
    settings: Settings, reference_scores: np.ndarray, current_scores: np.ndarray, source: str, out_dir: Path
) -> DriftCheck:
    """Evidently drift of the champion's score distribution (PSI by default)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    definition = DataDefinition(numerical_columns=[SCORE])
    metric = ValueDrift(column=SCORE, method=settings.prediction_drift_method, threshold=settings.drift_threshold)
    snapshot = Report([metric], include_tests=True).run(
        Dataset.from_pandas(pd.DataFrame({SCORE: current_scores}), data_definition=definition),
        Dataset.from_pandas(pd.DataFrame({SCORE: reference_scores}), data_definition=definition),
    )
    html = out_dir / "prediction_drift.html"
    snapshot.save_html(str(html))
    columns = _evidently_columns(snapshot, {SCORE: settings.prediction_drift_method})
    passed = not _failed_tests(snapshot) and not any(c.drifted for c in columns)
    c = columns[0]
    reason = f"score {c.method} {c.score:.3f} {'>=' if c.drifted else '<'} {c.threshold:.2f} ({source})"
    return DriftCheck(
        name="prediction_drift",
        passed=passed,
        columns=columns,
        reason=reason,
        report_html=str(html),
        reference_rows=len(reference_scores),
        current_rows=len(current_scores),
        current_source=source,
    )


def check_performance(
    scored: pd.DataFrame,
    *,
    windows: MonitoringWindows,
    reference: dict[str, float],
    tolerance: dict[str, float],
) -> PerformanceCheck:
    """AP and CP@100 of ``scored`` rows (feature-service rows with ``score`` and labels) dated in
    the matured window, against the champion's gate metrics minus ``tolerance``. Rows outside
    the matured window are ignored, whatever their labels say."""
    day = scored["event_timestamp"].dt.date
    matured = scored[(day >= windows.matured_start) & (day <= windows.matured_end)]
    base = {"window_start": windows.matured_start, "window_end": windows.matured_end}
    base |= {"reference": reference, "tolerance": tolerance}
    frauds = int(matured[LABEL].sum()) if len(matured) else 0
    if frauds == 0 or frauds == len(matured):
        span = f"{windows.matured_start}..{windows.matured_end}"
        reason = f"skipped: {len(matured)} matured rows with {frauds} frauds in {span}"
        return PerformanceCheck(passed=True, skipped=True, reason=reason, **base)
    metrics = evaluate_scores(matured, matured[SCORE].to_numpy())
    observed = {"average_precision": metrics.average_precision, "card_precision_at_100": metrics.card_precision_at_100}
    failed = [k for k, floor in reference.items() if observed[k] < floor - tolerance[k]]
    parts = [
        f"{k} {observed[k]:.3f} {'<' if k in failed else '>='} {reference[k]:.3f} - {tolerance[k]:.2f}"
        for k in reference
    ]
    return PerformanceCheck(passed=not failed, metrics=metrics, failed_metrics=failed, reason="; ".join(parts), **base)


def champion_reference_metrics(champion: VersionRef) -> dict[str, float]:
    tags = champion.tags
    try:
        return {
            "average_precision": float(tags["fraudflow.average_precision"]),
            "card_precision_at_100": float(tags["fraudflow.card_precision_at_100"]),
        }
    except KeyError as exc:
        raise ValueError(f"fraud-detector v{champion.version} has no gate metric tag {exc}") from None


def monitor_champion(settings: Settings, *, as_of: dt.date, run_id: str | None = None) -> MonitoringResult:
    """Run the three checks for the window ending ``as_of``; write the HTML reports and a JSON
    summary under ``monitoring/``, log them to an MLflow run, and record lineage."""
    import mlflow

    champion = version_by_alias(settings, CHAMPION)
    if champion is None:
        raise NoChampion("no fraud-detector version has the alias 'champion': nothing to monitor")
    windows = monitoring_windows(as_of, days=settings.monitor_window_days, delay_days=settings.delay_days)
    out_dir = settings.root / "monitoring" / as_of.isoformat() / safe_run_id(run_id)
    out_dir.mkdir(parents=True, exist_ok=True)

    train_ref, test_ref = load_reference(champion)
    frame = window_features(settings, windows.matured_start, windows.recent_end)
    if frame.empty:
        raise LookupError(f"no published transactions in {windows.matured_start}..{windows.recent_end}")
    frame[SCORE] = score_frame(champion, frame)
    day = frame["event_timestamp"].dt.date
    recent = frame[(day >= windows.recent_start) & (day <= windows.recent_end)]
    if recent.empty:
        raise LookupError(f"no published transactions in the drift window {windows.recent_start}..{as_of}")

    input_drift = check_input_drift(settings, train_ref, recent, out_dir)
    live = logged_scores(settings, champion, windows.recent_start, windows.recent_end)
    if len(live) >= settings.monitor_min_logged_predictions:
        current_scores, source = live.to_numpy(), "prediction_log"
    else:
        current_scores, source = recent[SCORE].to_numpy(), "lake"
    reference_scores = score_frame(champion, test_ref)
    prediction_drift = check_prediction_drift(settings, reference_scores, current_scores, source, out_dir)
    performance = check_performance(
        frame,
        windows=windows,
        reference=champion_reference_metrics(champion),
        tolerance={
            "average_precision": settings.performance_ap_tolerance,
            "card_precision_at_100": settings.performance_cp_tolerance,
        },
    )

    failed = []
    if not input_drift.passed:
        failed.append(f"input_drift: {', '.join(input_drift.drifted)}")
    if not prediction_drift.passed:
        failed.append(f"prediction_drift: {prediction_drift.reason}")
    if not performance.passed:
        failed.append(f"performance: {', '.join(performance.failed_metrics)} ({performance.reason})")

    configure_mlflow(settings, MONITORING_EXPERIMENT)
    tags = {
        "fraudflow.as_of": as_of.isoformat(),
        "fraudflow.champion_version": champion.version,
        "fraudflow.airflow_run_id": run_id or "adhoc",
        "fraudflow.monitoring": "failed" if failed else "passed",
    }
    with mlflow.start_run(run_name=f"monitor_drift {as_of}", tags=tags) as run:
        metrics = {
            "input_drift.drifted_columns": len(input_drift.drifted),
            "prediction_drift.score": prediction_drift.columns[0].score,
        }
        metrics |= {f"input_drift.{c.column}": c.score for c in input_drift.columns}
        if performance.metrics is not None:
            metrics |= {
                "performance.average_precision": performance.metrics.average_precision,
                "performance.card_precision_at_100": performance.metrics.card_precision_at_100,
            }
        mlflow.log_metrics(metrics)
        mlflow.log_artifact(input_drift.report_html, "reports")
        mlflow.log_artifact(prediction_drift.report_html, "reports")
        result = MonitoringResult(
            as_of=as_of,
            champion_version=champion.version,
            windows=windows,
            input_drift=input_drift,
            prediction_drift=prediction_drift,
            performance=performance,
            failed_checks=failed,
            summary_json=str(out_dir / "summary.json"),
            mlflow_run_id=run.info.run_id,
        )
        summary = json.loads(result.model_dump_json())
        Path(result.summary_json).write_text(json.dumps(summary, indent=2))
        mlflow.log_dict(summary, "reports/summary.json")

    partitions = sorted({d.isoformat() for d in frame["event_timestamp"].dt.date})
    record_lineage(
        settings,
        stage="monitor_drift",
        run_id=run_id,
        read={
            "partitions": partitions,
            "champion_version": champion.version,
            "reference_training_set": champion.tags.get("fraudflow.training_set"),
            "scores": source,
        },
        wrote={"summary": result.summary_json, "mlflow_run": run.info.run_id, "failed_checks": failed},
    )
    return result
