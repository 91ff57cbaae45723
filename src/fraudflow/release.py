"""From candidates to a registered challenger: pick the best, judge it against the gate, register.

The gate's verdict is logged on the parent MLflow run (``gate.json``, ``gate.md`` and the
``fraudflow.gate`` tag) whether it passes or not, so a refused model is as visible as an
accepted one. Only a passing verdict creates a model version.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel

from fraudflow.evaluation import Metrics, evaluate_scores, slice_metrics
from fraudflow.features import MODEL_INPUTS
from fraudflow.gates import GateConfig, evaluate_gate
from fraudflow.lineage import record_lineage
from fraudflow.registry import CHAMPION, VersionRef, register_challenger, set_version_tags, version_by_alias
from fraudflow.settings import Settings
from fraudflow.tracking import configure_mlflow
from fraudflow.training import CandidateRun, TrainingSet


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
    against the current champion scored on the same test window."""
    import mlflow

    from fraudflow.models.candidates import load_candidate_model

    config = config or GateConfig(
        min_average_precision=settings.gate_min_average_precision,
        min_auc_roc=settings.gate_min_auc_roc,
        ap_tolerance=settings.gate_ap_tolerance,
        slice_tolerance=settings.gate_slice_tolerance,
    )
    test = pd.read_parquet(training_set.test_path)
    best = max(candidates, key=lambda c: c.metrics.average_precision)
    scores = pd.read_parquet(best.scores_path)["score"].to_numpy()

    champion = version_by_alias(settings, CHAMPION)
    champion_scores = champion_metrics = None
    if champion is not None:
        spec, model = load_candidate_model(champion.uri)
        champion_scores = spec.predict_proba(model, test[MODEL_INPUTS])
        champion_metrics = evaluate_scores(test, champion_scores)
    verdict = evaluate_gate(
        candidate=best.candidate, frame=test, challenger_scores=scores, champion_scores=champion_scores, config=config
    )
    slices = {"challenger": slice_metrics(test, scores)}
    if champion_scores is not None:
        slices["champion"] = slice_metrics(test, champion_scores)

    report = Path(training_set.folder) / "gate.md"
    report.write_text(verdict.to_markdown())
    configure_mlflow(settings)
    with mlflow.start_run(run_id=training_set.parent_run_id):
        mlflow.log_dict(json.loads(verdict.model_dump_json()), "gate/gate.json")
        mlflow.log_text(verdict.to_markdown(), "gate/gate.md")
        mlflow.log_dict(slices, "gate/slices.json")
        mlflow.set_tags(
            {
                "fraudflow.gate": "passed" if verdict.passed else "failed",
                "fraudflow.gate_reason": verdict.reason[:4000],
                "fraudflow.best_candidate": best.candidate,
                "fraudflow.champion_version": champion.version if champion else "none",
            }
        )
        mlflow.log_metrics({f"best.{k}": v for k, v in best.metrics.model_dump().items()})
    decision = GateDecision(
        passed=verdict.passed,
        reason=verdict.reason,
        best=best,
        candidates=candidates,
        champion_version=champion.version if champion else None,
        champion_metrics=champion_metrics,
        verdict=json.loads(verdict.model_dump_json()),
        slices=slices,
        report_path=str(report),
    )
    record_lineage(
        settings,
        stage="evaluation_gate",
        run_id=run_id,
        read={"candidates": [c.run_id for c in candidates], "champion_version": decision.champion_version},
        wrote={"gate": "passed" if verdict.passed else "failed", "reason": verdict.reason, "report": str(report)},
    )
    return decision


def register_best(
    settings: Settings,
    *,
    decision: GateDecision,
    training_set: TrainingSet,
    run_id: str | None = None,
    reason: str = "",
) -> VersionRef:
    """Register the gate-approved candidate as ``fraud-detector`` with alias ``challenger``,
    tagged with its verdict and lineage; write its model card."""
    from fraudflow.model_card import write_model_card

    if not decision.passed:
        raise ValueError(f"refusing to register a candidate the gate failed: {decision.reason}")
    best = decision.best
    tags = {
        "fraudflow.candidate": best.candidate,
        "fraudflow.gate": "passed",
        "fraudflow.gate_reason": decision.reason,
        "fraudflow.threshold": f"{best.threshold:.6f}",
        "fraudflow.average_precision": f"{best.metrics.average_precision:.4f}",
        "fraudflow.auc_roc": f"{best.metrics.auc_roc:.4f}",
        "fraudflow.card_precision_at_100": f"{best.metrics.card_precision_at_100:.4f}",
        "fraudflow.training_parent_run": training_set.parent_run_id,
        "fraudflow.training_window": f"{training_set.window.train_start}..{training_set.window.train_end}",
        "fraudflow.test_window": f"{training_set.window.test_start}..{training_set.window.test_end}",
        "fraudflow.feature_service": training_set.feature_service,
        "fraudflow.data_fingerprint": training_set.fingerprint,
        "fraudflow.training_set": training_set.folder,
        "fraudflow.reason": (reason or "scheduled")[:4000],
    }
    if training_set.trigger.get("failed_checks"):
        tags["fraudflow.failed_checks"] = "; ".join(training_set.trigger["failed_checks"])[:4000]
    if training_set.trigger.get("report_path"):
        tags["fraudflow.drift_report"] = training_set.trigger["report_path"]
    version = register_challenger(settings, model_uri=best.model_uri, run_id=best.run_id, tags=tags)
    card = write_model_card(settings, version=version, decision=decision, training_set=training_set, reason=reason)
    set_version_tags(settings, version.version, {"fraudflow.model_card": card})
    record_lineage(
        settings,
        stage="register_challenger",
        run_id=run_id,
        read={"candidate_run": best.run_id, "training_parent_run": training_set.parent_run_id},
        wrote={"model": version.name, "version": version.version, "alias": "challenger", "model_card": card},
    )
    return version
