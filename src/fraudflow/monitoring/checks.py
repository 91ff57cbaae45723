"""The three checks ``monitor_drift`` runs on the champion, each a typed verdict.

Evidently computes the drift (per-column methods: normed Wasserstein for amounts, PSI for
counts, ratios and flags, which stay stable on this data where normed Wasserstein on the
near-degenerate terminal-risk columns does not) and renders the HTML reports. Performance is
only measured on days whose labels have matured (older than the label delay): younger labels
are incomplete, not evidence.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

from fraudflow.features.compute import CUSTOMER_FEATURES, LABEL, MODEL_INPUTS
from fraudflow.schema import LABEL_DELAY_DAYS
from fraudflow.settings import Settings
from fraudflow.training.metrics import Metrics, evaluate_scores

SCORE = "score"


AMOUNT_COLUMNS = ["TX_AMOUNT", *[c for c in CUSTOMER_FEATURES if "AVG_AMOUNT" in c]]


class MonitoringWindows(BaseModel):
    as_of: dt.date
    recent_start: dt.date  # drift: the newest days
    recent_end: dt.date
    matured_start: dt.date  # performance: the newest days whose labels are older than the delay
    matured_end: dt.date


def monitoring_windows(as_of: dt.date, *, days: int = 7, delay_days: int = LABEL_DELAY_DAYS) -> MonitoringWindows:
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
    snapshot_json: str = ""  # the Evidently snapshot (added to the workspace, fraudflow.monitoring.workspace)
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


def drift_methods(settings: Settings) -> dict[str, str]:
    return {c: settings.drift_amount_method if c in AMOUNT_COLUMNS else settings.drift_method for c in MODEL_INPUTS}


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


def _stamp(as_of: dt.date | None, name: str) -> dict[str, Any]:
    """Snapshot timestamp = the judged day (the workspace plots drift over monitored days)."""
    if as_of is None:
        return {"name": name}
    return {"name": f"{name} {as_of}", "timestamp": dt.datetime.combine(as_of, dt.time(23, 59))}


def _save(snapshot: Any, out_dir: Path, name: str) -> tuple[str, str]:
    html, snap = out_dir / f"{name}.html", out_dir / f"{name}.json"
    snapshot.save_html(str(html))
    # Evidently 0.7.23: save_json() writes the metrics view, which Snapshot.load() cannot read
    # back; dumps() is the full form the workspace loads.
    snap.write_text(snapshot.dumps())
    return str(html), str(snap)


def check_input_drift(
    settings: Settings,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    out_dir: Path,
    source: str = "lake",
    as_of: dt.date | None = None,
) -> DriftCheck:
    """Evidently drift on the 15 model inputs; fails when more than
    ``drift_max_drifted_inputs`` columns drift (a condition on Evidently's column count).

    The preset's ``drift_share`` is set to the same rule (Evidently's default, half of the
    columns, would headline "Dataset Drift is NOT detected" on a run fraudflow failed)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import DriftedColumnsCount
    from evidently.presets import DataDriftPreset
    from evidently.tests import lte

    methods = drift_methods(settings)
    definition = DataDefinition(numerical_columns=MODEL_INPUTS)
    common = {"columns": MODEL_INPUTS, "per_column_method": methods, "threshold": settings.drift_threshold}
    drift_share = (settings.drift_max_drifted_inputs + 1) / len(MODEL_INPUTS)
    report = Report(
        [
            DataDriftPreset(**common, drift_share=drift_share),
            DriftedColumnsCount(**common, tests=[lte(settings.drift_max_drifted_inputs)]),
        ],
        include_tests=True,
    )
    snapshot = report.run(
        Dataset.from_pandas(current[MODEL_INPUTS].reset_index(drop=True), data_definition=definition),
        Dataset.from_pandas(reference[MODEL_INPUTS].reset_index(drop=True), data_definition=definition),
        **_stamp(as_of, "input_drift"),
    )
    html, snap = _save(snapshot, out_dir, "input_drift")
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
        report_html=html,
        snapshot_json=snap,
        reference_rows=len(reference),
        current_rows=len(current),
        current_source=source,
    )


def check_prediction_drift(
    settings: Settings,
    reference_scores: np.ndarray,
    current_scores: np.ndarray,
    source: str,
    out_dir: Path,
    as_of: dt.date | None = None,
) -> DriftCheck:
    """Evidently drift of the champion's score distribution (PSI by default)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    definition = DataDefinition(numerical_columns=[SCORE])
    metric = ValueDrift(column=SCORE, method=settings.prediction_drift_method, threshold=settings.drift_threshold)
    snapshot = Report([metric], include_tests=True).run(
        Dataset.from_pandas(pd.DataFrame({SCORE: current_scores}), data_definition=definition),
        Dataset.from_pandas(pd.DataFrame({SCORE: reference_scores}), data_definition=definition),
        **_stamp(as_of, "prediction_drift"),
    )
    html, snap = _save(snapshot, out_dir, "prediction_drift")
    columns = _evidently_columns(snapshot, {SCORE: settings.prediction_drift_method})
    passed = not _failed_tests(snapshot) and not any(c.drifted for c in columns)
    c = columns[0]
    reason = f"score {c.method} {c.score:.3f} {'>=' if c.drifted else '<'} {c.threshold:.2f} ({source})"
    return DriftCheck(
        name="prediction_drift",
        passed=passed,
        columns=columns,
        reason=reason,
        report_html=html,
        snapshot_json=snap,
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
