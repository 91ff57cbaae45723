"""The evaluation gate: may a trained candidate replace the champion?

A plain function of scores on one evaluation frame, returning a typed verdict that lists every
check, so the DAG task only decides what to do with it, and a rejection says which rule failed
and by how much. Three kinds of check:

- absolute floors, so a candidate is never promoted just because the champion is also bad;
- non-inferiority on AP against the champion, judged on the lower bound of a paired bootstrap
  interval rather than the point difference, so noise alone neither blocks nor admits a model,
  while a real loss beyond the margin does block it;
- per-slice guards, because an average can hide a model that stops catching one fraud
  scenario or one amount range entirely.

Without a champion (the first model) only the floors decide; the champion checks are still
listed, as skipped, so every verdict has the same shape.

:func:`evaluate_gate` is that plain function; :func:`judge_candidates` is the ``train_model``
DAG's step around it: it picks the best candidate, scores the champion on the same test window,
and writes the verdict to ``gate.md``, the MLflow parent run and the lineage log.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

from fraudflow import tags
from fraudflow.features.compute import LABEL, MODEL_INPUTS
from fraudflow.lineage import record_lineage
from fraudflow.registry import CHAMPION, version_by_alias
from fraudflow.settings import Settings
from fraudflow.tracking import configure_mlflow
from fraudflow.training.bootstrap import bootstrap_ap_difference
from fraudflow.training.metrics import Metrics, evaluate_scores, slice_metrics
from fraudflow.training.train import CandidateRun
from fraudflow.training.training_set import TrainingSet

FLOOR_AP = "min_average_precision"
FLOOR_AUC = "min_auc_roc"
NON_INFERIORITY = "ap_non_inferiority"
SLICES = "slices"
NO_CHAMPION = "no champion"


class GateConfig(BaseModel):
    """The gate's rules. The thresholds are settings (``FRAUDFLOW_GATE_*``): build one with
    :meth:`from_settings` so the defaults live in one place."""

    min_average_precision: float
    min_auc_roc: float
    ap_tolerance: float
    """Non-inferiority margin: the CI lower bound of AP(challenger) - AP(champion) must exceed -this."""
    slice_tolerance: float
    """A slice may lose at most this much against the champion (AUC or AP, as the slice defines)."""
    bootstrap_confidence: float = 0.90
    n_boot: int = 200
    seed: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> GateConfig:
        return cls(
            min_average_precision=settings.gate_min_average_precision,
            min_auc_roc=settings.gate_min_auc_roc,
            ap_tolerance=settings.gate_ap_tolerance,
            slice_tolerance=settings.gate_slice_tolerance,
        )


class Check(BaseModel):
    name: str
    passed: bool
    detail: str
    values: dict[str, Any] = {}
    skipped: bool = False


class GateVerdict(BaseModel):
    passed: bool
    candidate: str
    checks: list[Check]
    reason: str
    metrics: Metrics
    champion_metrics: Metrics | None = None
    config: GateConfig

    def failed_checks(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def to_markdown(self) -> str:
        """A readable report: verdict, reason, the table of checks and the headline metrics."""

        def cell(text: object) -> str:
            return str(text).replace("|", "\\|").replace("\n", " ")

        lines = [
            f"## Evaluation gate: {'PASSED' if self.passed else 'FAILED'} for `{self.candidate}`",
            "",
            f"**{'Passed' if self.passed else 'Rejected'}:** {self.reason}",
            "",
            "| check | result | detail |",
            "|---|---|---|",
        ]
        for check in self.checks:
            result = "skipped" if check.skipped else ("pass" if check.passed else "**FAIL**")
            lines.append(f"| {cell(check.name)} | {result} | {cell(check.detail)} |")
        lines += ["", "| metric | candidate | champion |", "|---|---|---|"]
        for field in ("auc_roc", "average_precision", "card_precision_at_100", "n_transactions", "n_frauds"):
            new = getattr(self.metrics, field)
            old = getattr(self.champion_metrics, field) if self.champion_metrics else None
            fmt = (lambda v: f"{v:.4f}") if isinstance(new, float) else str
            lines.append(f"| {field} | {fmt(new)} | {'-' if old is None else fmt(old)} |")
        return "\n".join(lines) + "\n"


def _floor_checks(metrics: Metrics, config: GateConfig) -> list[Check]:
    ap, auc = metrics.average_precision, metrics.auc_roc
    return [
        Check(
            name=FLOOR_AP,
            passed=ap >= config.min_average_precision,
            detail=f"AP {ap:.4f} {'>=' if ap >= config.min_average_precision else '<'} "
            f"{config.min_average_precision:.4f}",
            values={"average_precision": ap, "threshold": config.min_average_precision},
        ),
        Check(
            name=FLOOR_AUC,
            passed=auc >= config.min_auc_roc,
            detail=f"AUC ROC {auc:.4f} {'>=' if auc >= config.min_auc_roc else '<'} {config.min_auc_roc:.4f}",
            values={"auc_roc": auc, "threshold": config.min_auc_roc},
        ),
    ]


def _non_inferiority_check(y: np.ndarray, challenger: np.ndarray, champion: np.ndarray, config: GateConfig) -> Check:
    boot = bootstrap_ap_difference(
        y, challenger, champion, n_boot=config.n_boot, seed=config.seed, confidence=config.bootstrap_confidence
    )
    passed = boot.lower > -config.ap_tolerance
    return Check(
        name=NON_INFERIORITY,
        passed=passed,
        detail=f"AP difference {boot.point_difference:+.4f} (challenger - champion), "
        f"{boot.confidence:.0%} CI [{boot.lower:+.4f}, {boot.upper:+.4f}] over {boot.n_boot} resamples; "
        f"lower bound {'>' if passed else '<='} -{config.ap_tolerance:.4f}",
        values=boot.model_dump() | {"margin": config.ap_tolerance},
    )


def _slice_check(frame: pd.DataFrame, challenger: np.ndarray, champion: np.ndarray, config: GateConfig) -> Check:
    new = slice_metrics(frame, challenger)
    old = slice_metrics(frame, champion)
    compared: dict[str, dict[str, Any]] = {}
    dropped = []
    for name in [n for n in new if n in old]:
        delta = new[name]["value"] - old[name]["value"]
        compared[name] = {
            "metric": new[name]["metric"],
            "challenger": new[name]["value"],
            "champion": old[name]["value"],
            "delta": delta,
            "n": new[name]["n"],
            "n_frauds": new[name]["n_frauds"],
        }
        if new[name]["value"] < old[name]["value"] - config.slice_tolerance:
            dropped.append(
                f"{name} ({new[name]['metric']} {old[name]['value']:.4f} -> {new[name]['value']:.4f}, {delta:+.4f})"
            )
    if dropped:
        detail = f"dropped more than {config.slice_tolerance:.4f}: " + "; ".join(dropped)
    else:
        detail = f"all {len(compared)} slices within {config.slice_tolerance:.4f} of the champion"
    return Check(name=SLICES, passed=not dropped, detail=detail, values=compared)


def _reason(checks: list[Check]) -> str:
    failed = [c for c in checks if not c.passed]
    if not failed:
        return "all checks passed"
    return "failed " + "; ".join(f"{c.name} ({c.detail})" for c in failed) + "."


def evaluate_gate(
    *,
    candidate: str,
    frame: pd.DataFrame,
    challenger_scores: np.ndarray,
    champion_scores: np.ndarray | None,
    config: GateConfig,
) -> GateVerdict:
    """Judge a candidate on one evaluation frame, against the floors and the champion if any.

    Checks, all listed in the verdict:
        - ``min_average_precision`` / ``min_auc_roc``: the challenger's pooled AP and AUC ROC
          reach the configured floors.
        - ``ap_non_inferiority`` (champion only): the lower bound of the paired bootstrap
          interval of AP(challenger) - AP(champion) is above ``-ap_tolerance``.
        - ``slices`` (champion only): on every slice of :func:`slice_metrics` present for
          both, challenger >= champion - ``slice_tolerance``.

    Args:
        candidate: the candidate's name (a model version or run id), for the report.
        frame: evaluation rows with ``TX_FRAUD``, ``CUSTOMER_ID``, ``TX_TIME_DAYS`` and, for
            the slices, ``TX_FRAUD_SCENARIO`` and ``TX_AMOUNT``.
        challenger_scores: the candidate's scores, aligned with the rows of ``frame``.
        champion_scores: the current champion's scores on the same rows, or None.
        config: thresholds, margins and bootstrap settings.

    Raises:
        ValueError: as :func:`fraudflow.training.metrics.evaluate_scores` (missing columns,
            misaligned scores, one class only).
    """
    metrics = evaluate_scores(frame, challenger_scores)
    checks = _floor_checks(metrics, config)
    champion_metrics = None
    if champion_scores is None:
        checks += [
            Check(name=NON_INFERIORITY, passed=True, detail=NO_CHAMPION, skipped=True),
            Check(name=SLICES, passed=True, detail=NO_CHAMPION, skipped=True),
        ]
    else:
        champion_metrics = evaluate_scores(frame, champion_scores)
        y = frame[LABEL].to_numpy()
        challenger = np.asarray(challenger_scores, dtype=float)
        champion = np.asarray(champion_scores, dtype=float)
        checks += [
            _non_inferiority_check(y, challenger, champion, config),
            _slice_check(frame, challenger, champion, config),
        ]
    return GateVerdict(
        passed=all(c.passed for c in checks),
        candidate=candidate,
        checks=checks,
        reason=_reason(checks),
        metrics=metrics,
        champion_metrics=champion_metrics,
        config=config,
    )


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
    slices = {"challenger": slice_metrics(test, scores)}
    if champion_scores is not None:
        slices["champion"] = slice_metrics(test, champion_scores)

    champion_version = champion.version if champion else None
    report = _log_verdict(settings, training_set, verdict, slices, best, champion_version)
    decision = GateDecision(
        passed=verdict.passed,
        reason=verdict.reason,
        best=best,
        candidates=candidates,
        champion_version=champion_version,
        champion_metrics=verdict.champion_metrics,
        verdict=json.loads(verdict.model_dump_json()),
        slices=slices,
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

    markdown = verdict.to_markdown()
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
    return report
