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

from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

from fraudflow.features.compute import LABEL
from fraudflow.settings import Settings
from fraudflow.training.bootstrap import bootstrap_difference
from fraudflow.training.metrics import CARD, Metrics, Slice, evaluate_scores, slices

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
    """Per slice, the CI lower bound of the metric difference (AUC or AP, as the slice
    defines) must exceed -this."""
    slice_min_frauds: int
    """Slices with fewer frauds are reported with their interval but do not block."""
    n_boot: int
    """Resamples of every bootstrap (1,000: each 5% tail of a 90% interval holds 50 draws)."""
    bootstrap_confidence: float = 0.90
    seed: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> GateConfig:
        return cls(
            min_average_precision=settings.gate_min_average_precision,
            min_auc_roc=settings.gate_min_auc_roc,
            ap_tolerance=settings.gate_ap_tolerance,
            slice_tolerance=settings.gate_slice_tolerance,
            slice_min_frauds=settings.gate_slice_min_frauds,
            n_boot=settings.gate_bootstrap_resamples,
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


def _card_clusters(frame: pd.DataFrame) -> np.ndarray | None:
    """Each row's card as a cluster index (the bootstrap draws whole cards), if known."""
    return pd.factorize(frame[CARD])[0] if CARD in frame.columns else None


def _non_inferiority_check(
    frame: pd.DataFrame, challenger: np.ndarray, champion: np.ndarray, config: GateConfig
) -> Check:
    boot = bootstrap_difference(
        frame[LABEL].to_numpy(),
        challenger,
        champion,
        metric="average_precision",
        clusters=_card_clusters(frame),
        n_boot=config.n_boot,
        seed=config.seed,
        confidence=config.bootstrap_confidence,
    )
    passed = boot.lower > -config.ap_tolerance
    return Check(
        name=NON_INFERIORITY,
        passed=passed,
        detail=f"AP difference {boot.point_difference:+.4f} (challenger - champion), "
        f"{boot.confidence:.0%} CI [{boot.lower:+.4f}, {boot.upper:+.4f}] over {boot.n_boot} card resamples; "
        f"lower bound {'>' if passed else '<='} -{config.ap_tolerance:.4f}",
        values=boot.model_dump() | {"margin": config.ap_tolerance},
    )


def _judge_slice(name: str, part: Slice, frame, challenger, champion, config: GateConfig) -> dict[str, Any]:
    """One slice: its paired card-bootstrap interval, and whether it counts (enough frauds)."""
    clusters = _card_clusters(frame[part.rows])
    boot = bootstrap_difference(
        part.positives,
        challenger[part.rows],
        champion[part.rows],
        metric=part.metric,
        clusters=clusters,
        n_boot=config.n_boot,
        seed=config.seed,
        confidence=config.bootstrap_confidence,
    )
    n_frauds = int(part.positives.sum())
    judged = n_frauds >= config.slice_min_frauds
    return {
        "metric": part.metric,
        "delta": boot.point_difference,
        "lower": boot.lower,
        "upper": boot.upper,
        "n": int(part.rows.sum()),
        "n_frauds": n_frauds,
        "judged": judged,
        "passed": (boot.lower > -config.slice_tolerance) if judged else True,
    }


def _slice_check(frame: pd.DataFrame, challenger: np.ndarray, champion: np.ndarray, config: GateConfig) -> Check:
    """Every slice with at least ``slice_min_frauds`` frauds must be non-inferior (the lower
    bound of its paired card-bootstrap interval above ``-slice_tolerance``); smaller slices are
    reported with their interval. A point estimate on 60 frauds moves by more than the
    tolerance between two draws of the same week, so it cannot block a model alone."""
    challenger, champion = np.asarray(challenger, float), np.asarray(champion, float)
    compared = {
        name: _judge_slice(name, part, frame, challenger, champion, config) for name, part in slices(frame).items()
    }
    failed = [name for name, v in compared.items() if not v["passed"]]
    small = [name for name, v in compared.items() if not v["judged"]]

    def describe(name: str) -> str:
        v = compared[name]
        interval = f"CI [{v['lower']:+.4f}, {v['upper']:+.4f}]"
        return f"{name} ({v['metric']} {v['delta']:+.4f}, {interval}, {v['n_frauds']} frauds)"

    if failed:
        detail = f"CI lower bound <= -{config.slice_tolerance:.4f}: " + "; ".join(map(describe, failed))
    else:
        detail = f"{len(compared) - len(small)} slices non-inferior within {config.slice_tolerance:.4f}"
    if small:
        detail += f"; reported only (< {config.slice_min_frauds} frauds): " + "; ".join(map(describe, small))
    return Check(name=SLICES, passed=not failed, detail=detail, values=compared)


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
          interval (cards resampled whole) of AP(challenger) - AP(champion) is above
          ``-ap_tolerance``.
        - ``slices`` (champion only): every slice of :func:`slices` with at least
          ``slice_min_frauds`` frauds is non-inferior: the lower bound of the paired bootstrap
          interval (cards resampled whole) of its metric difference is above
          ``-slice_tolerance``; smaller slices are reported, not judged.

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
        challenger = np.asarray(challenger_scores, dtype=float)
        champion = np.asarray(champion_scores, dtype=float)
        checks += [
            _non_inferiority_check(frame, challenger, champion, config),
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
