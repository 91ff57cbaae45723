"""Register the gate-approved candidate as the ``challenger`` version, tagged with its verdict
and lineage, and write its model card."""

from __future__ import annotations

from fraudflow import tags
from fraudflow.lineage import record_lineage
from fraudflow.registry import VersionRef, register_challenger, set_version_tags
from fraudflow.settings import Settings
from fraudflow.training.judge import GateDecision
from fraudflow.training.refit import Refit
from fraudflow.training.training_set import TrainingSet


def register_best(
    settings: Settings,
    *,
    decision: GateDecision,
    training_set: TrainingSet,
    run_id: str | None = None,
    reason: str = "",
    refit: Refit | None = None,
) -> VersionRef:
    """Register the gate-approved candidate as ``fraud-detector`` with alias ``challenger``,
    tagged with its verdict and lineage; write its model card.

    With ``refit`` the registered model is the refit on the freshest labelled days
    (``fraudflow.training.refit``): its run and model, tagged with the judged run it refits;
    the gate's metrics, threshold and test scores stay those of the judged model.
    """
    from fraudflow.training.model_card import write_model_card

    if not decision.passed:
        raise ValueError(f"refusing to register a candidate the gate failed: {decision.reason}")
    best = decision.best
    version_tags = {
        tags.CANDIDATE: best.candidate,
        tags.GATE: "passed",
        tags.GATE_REASON: decision.reason,
        tags.THRESHOLD: f"{best.threshold:.6f}",
        tags.AVERAGE_PRECISION: f"{best.metrics.average_precision:.4f}",
        tags.AUC_ROC: f"{best.metrics.auc_roc:.4f}",
        tags.CARD_PRECISION_AT_100: f"{best.metrics.card_precision_at_100:.4f}",
        tags.TRAINING_PARENT_RUN: training_set.parent_run_id,
        tags.TRAINING_WINDOW: f"{training_set.window.train_start}..{training_set.window.train_end}",
        tags.TEST_WINDOW: f"{training_set.window.test_start}..{training_set.window.test_end}",
        tags.FEATURE_SERVICE: training_set.feature_service,
        tags.DATA_FINGERPRINT: training_set.fingerprint,
        tags.TRAINING_SET: training_set.folder,
        tags.TEST_SCORES: best.scores_path,
        tags.REASON: (reason or "scheduled")[:4000],
    }
    if training_set.trigger.get("failed_checks"):
        version_tags[tags.FAILED_CHECKS] = "; ".join(training_set.trigger["failed_checks"])[:4000]
    if training_set.trigger.get("report_path"):
        version_tags[tags.DRIFT_REPORT] = training_set.trigger["report_path"]
    if refit is not None:
        version_tags |= {tags.REFIT_OF: refit.of_run_id, tags.REFIT_WINDOW: f"{refit.window_start}..{refit.window_end}"}
    model_uri, model_run = (refit.model_uri, refit.run_id) if refit else (best.model_uri, best.run_id)
    version = register_challenger(settings, model_uri=model_uri, run_id=model_run, tags=version_tags)
    card = write_model_card(
        settings, version=version, decision=decision, training_set=training_set, reason=reason, refit=refit
    )
    set_version_tags(settings, version.version, {tags.MODEL_CARD: card})
    record_lineage(
        settings,
        stage="register_challenger",
        run_id=run_id,
        read={"candidate_run": best.run_id, "training_parent_run": training_set.parent_run_id},
        wrote={"model": version.name, "version": version.version, "alias": "challenger", "model_card": card},
    )
    return version
