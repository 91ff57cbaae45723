"""Run the evaluation gate on a training run: pick the best candidate, score the champion on
the same test window, judge (``fraudflow.training.gate``), and log the verdict to MLflow.

The verdict is logged on the parent MLflow run (``gate/gate.json``, ``gate/gate.md`` and the
gate tags) whether it passes or not, so a refused model is as visible as an accepted one.
Only a passing verdict goes on to registration (``fraudflow.training.register``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

from fraudflow import tags
from fraudflow.features.compute import MODEL_INPUTS
from fraudflow.lineage import record_lineage
from fraudflow.registry import CHAMPION, version_by_alias
from fraudflow.settings import Settings
from fraudflow.tracking import configure_mlflow
from fraudflow.training.gate import GateConfig, GateVerdict, evaluate_gate
from fraudflow.training.metrics import Metrics, slice_metrics
from fraudflow.training.train import CandidateRun
from fraudflow.training.training_set import TrainingSet


class GateDecision(BaseModel):
    passed: bool
    reason: str
    best: CandidateRun
    candidates: list[CandidateRun]
    champion_version: str | None
    champion_metrics: Metrics | None
    verdict: dict[str, Any]
    slices: dict[str, Any]
    report_path: str


def judge_candidates(
    settings: Settings,
    *,
    training_set: TrainingSet,
    candidates: list[CandidateRun],
    config: GateConfig | None = None,
    run_id: str | None = None,
) -> GateDecision:
    """Gate the best candidate (highest test AP): floors, then non-inferiority and slices
    against the current champion scored on the same test window.

    The verdict is written to ``gate.md`` in the training-set folder, logged to the training
    parent run (``gate/`` artifacts, gate tags, the best candidate's metrics) and recorded in
    the lineage log.
    """
    config = config or GateConfig.from_settings(settings)
    test = pd.read_parquet(training_set.test_path)
    best = max(candidates, key=lambda c: c.metrics.average_precision)
    scores = pd.read_parquet(best.scores_path)["score"].to_numpy()
    champion = version_by_alias(settings, CHAMPION)
    champion_scores = None if champion is None else _score_champion(champion.uri, test)
    verdict = evaluate_gate(
        candidate=best.candidate, frame=test, challenger_scores=scores, champion_scores=champion_scores, config=config
    )
    slice_report = {"challenger": slice_metrics(test, scores)}
    if champion_scores is not None:
        slice_report["champion"] = slice_metrics(test, champion_scores)

    champion_version = champion.version if champion else None
    report = _log_verdict(settings, training_set, verdict, slice_report, best, champion_version)
    decision = GateDecision(
        passed=verdict.passed,
        reason=verdict.reason,
        best=best,
        candidates=candidates,
        champion_version=champion_version,
        champion_metrics=verdict.champion_metrics,
        verdict=json.loads(verdict.model_dump_json()),
        slices=slice_report,
        report_path=str(report),
    )
    record_lineage(
        settings,
        stage="evaluation_gate",
        run_id=run_id,
        read={"candidates": [c.run_id for c in candidates], "champion_version": champion_version},
        wrote={"gate": "passed" if verdict.passed else "failed", "reason": verdict.reason, "report": str(report)},
    )
    return decision


def _score_champion(model_uri: str, test: pd.DataFrame) -> np.ndarray:
    """The registered champion's scores on the test rows, so both models are judged on the
    same window (not on the champion's own, older test window)."""
    from fraudflow.models.candidates import load_candidate_model

    spec, model = load_candidate_model(model_uri)
    return spec.predict_proba(model, test[MODEL_INPUTS])


def _log_verdict(
    settings: Settings,
    training_set: TrainingSet,
    verdict: GateVerdict,
    slices: dict[str, Any],
    best: CandidateRun,
    champion_version: str | None,
) -> Path:
    """Write ``gate.md`` beside the training set and log the verdict to the training parent run
    (``gate/gate.json``, ``gate/gate.md``, ``gate/slices.json``, the gate tags and the best
    candidate's metrics as ``best.*``); the report's path."""
    import mlflow

    markdown = verdict.to_markdown() + _calibration_markdown(best)
    report = Path(training_set.folder) / "gate.md"
    report.write_text(markdown)
    configure_mlflow(settings)
    with mlflow.start_run(run_id=training_set.parent_run_id):
        mlflow.log_dict(json.loads(verdict.model_dump_json()), "gate/gate.json")
        mlflow.log_text(markdown, "gate/gate.md")
        mlflow.log_dict(slices, "gate/slices.json")
        mlflow.set_tags(
            {
                tags.GATE: "passed" if verdict.passed else "failed",
                tags.GATE_REASON: verdict.reason[:4000],
                tags.BEST_CANDIDATE: best.candidate,
                tags.CHAMPION_VERSION: champion_version or "none",
            }
        )
        mlflow.log_metrics({f"best.{k}": v for k, v in best.metrics.model_dump().items()})
        if best.test_brier is not None:
            mlflow.log_metrics({"best.test_brier": best.test_brier, "best.test_ece": best.test_ece or 0.0})
    return report


def _calibration_markdown(best: CandidateRun) -> str:
    """The served probabilities' calibration beside the ranking metrics: Brier and ECE on the
    test window (where the calibration was not fit), and how the threshold was chosen."""
    if best.test_brier is None:
        return ""
    fit = best.validation
    how = (
        f"Platt calibration fit on {best.calibration.fitted_rows} out-of-sample training transactions"
        if best.calibration
        else f"uncalibrated ({fit.reason if fit else 'no validation fit'})"
    )
    lines = [
        "",
        f"Probabilities: {how}; threshold {best.threshold:.4f} = best F1 of the out-of-sample training scores, "
        "not the test window.",
        "",
        "| calibration | test window | out-of-sample training, raw | out-of-sample training, calibrated |",
        "|---|---|---|---|",
    ]
    for name, test, raw, calibrated in (
        ("Brier", best.test_brier, fit and fit.brier_raw, fit and fit.brier_calibrated),
        ("ECE", best.test_ece, fit and fit.ece_raw, fit and fit.ece_calibrated),
    ):
        cells = ["-" if v is None else f"{v:.5f}" for v in (test, raw, calibrated)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
