"""
### Train model

Nightly (cron `FRAUDFLOW_TRAIN_SCHEDULE`, default 02:00) and on demand, e.g. by
`monitor_drift` with `conf={"reason", "failed_checks", "report_path", "run_date"}` (recorded
as MLflow tags and in the model card). One run at a time.

1. **build_training_set**: the handbook's split ending on the newest published day up to
   the logical date (7 train days, 7-day label-delay gap, 7 test days; known-compromised
   cards removed from test), features by Feast point-in-time join (`fraud_detection_v1`);
   opens the MLflow parent run with the lineage (partitions, GX validation ids).
2. **validate_training_set**: GX suite `training_set`.
3. **train_candidate** (mapped: `xgboost`, `mlp`): one nested MLflow run each, with metrics
   (AUC ROC, AP, CP@100), ROC/PR plots and the calibrated model in its MLflow flavour. Its
   parameters are first chosen by prequential validation (`FRAUDFLOW_SELECTION_TRIALS` per
   family, 0 = defaults) on folds before the test window, each trial a nested run with its
   fold scores.
4. **train_ensemble**: the families' probability average, judged on the same folds; trained
   as a third candidate only if it beat each family there.
5. **evaluate_gate**: floors, then non-inferiority and slices against the `champion`.
6. **gate_passed**: short-circuit: a failed gate ends here, reason in the log and in MLflow
   (tag `fraudflow.gate`), nothing registered, aliases untouched.
7. **register_challenger**: new `fraud-detector` version, alias `challenger`, model card;
   emits `fraudflow_model_challenger`.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, dag, task

from fraudflow.orchestration.assets import MODEL_CHALLENGER
from fraudflow.orchestration.dag_defaults import default_args, start_date
from fraudflow.orchestration.notifier import deadline_alert
from fraudflow.settings import get_settings

SETTINGS = get_settings()


@dag(
    schedule=SETTINGS.train_schedule or None,  # empty: drift-triggered and manual runs only
    start_date=start_date(SETTINGS),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(SETTINGS),
    deadline=deadline_alert(
        "training_deadline",
        "train_model not finished by its deadline",
        reference="queued_at",
        after=dt.timedelta(seconds=SETTINGS.training_deadline_seconds),
    ),
    params={
        "reason": Param("scheduled", type="string", description="why this run (drift checks set it)"),
        "run_date": Param(None, type=["null", "string"], description="last test day (default: newest lake day)"),
        "candidate_params": Param({}, type="object", description='per family, e.g. {"xgboost": {"n_estimators": 1}}'),
        "shuffle_labels": Param(False, type="boolean", description="gate drill: train on shuffled labels"),
        "failed_checks": Param([], type="array", description="set by monitor_drift: the checks that failed"),
        "report_path": Param(None, type=["null", "string"], description="set by monitor_drift: its summary JSON"),
    },
    tags=["fraudflow", "training", "mlflow"],
    doc_md=__doc__,
)
def train_model():
    @task(multiple_outputs=False)
    def build_training_set(
        params: dict | None = None, logical_date=None, run_id: str | None = None, dag_run=None
    ) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from fraudflow.lake import list_partitions
        from fraudflow.orchestration.failures import fail_without_retry
        from fraudflow.settings import get_settings
        from fraudflow.training.training_set import TrainingSetRejected, resolve_run_date, training_window
        from fraudflow.training.training_set import build_training_set as build

        settings = get_settings()
        # The nightly run on a lake still filling (a fresh system catching up) waits, quietly:
        # Airflow fires the last missed nightly tick on unpause. Manual and triggered runs fail
        # with the reason instead.
        days = len(list_partitions(settings))
        if getattr(dag_run, "run_type", None) == "scheduled" and days < settings.first_model_min_days:
            raise AirflowSkipException(
                f"nightly retraining waits for {settings.first_model_min_days} lake days (the lake has {days})"
            )
        with fail_without_retry(TrainingSetRejected):
            run_date = resolve_run_date(settings, requested=params.get("run_date"), logical_date=logical_date)
            window = training_window(run_date, train_days=settings.train_days, test_days=settings.test_days)
            ts = build(
                settings,
                run_date=run_date,
                run_id=run_id,
                reason=params["reason"],
                window=window,
                trigger={"failed_checks": params["failed_checks"], "report_path": params["report_path"]},
            )
        return ts.model_dump(mode="json")

    @task(multiple_outputs=False)
    def validate_training_set(training_set: dict, run_id: str | None = None) -> dict:
        from fraudflow.orchestration.failures import fail_without_retry
        from fraudflow.settings import get_settings
        from fraudflow.training.training_set import TrainingSet, TrainingSetRejected
        from fraudflow.training.training_set import validate_training_set as validate

        with fail_without_retry(TrainingSetRejected):
            validate(get_settings(), TrainingSet.model_validate(training_set), run_id=run_id)
        return training_set

    @task(multiple_outputs=False)
    def train_candidate(candidate: str, training_set: dict, params: dict | None = None) -> dict:
        from fraudflow.settings import get_settings
        from fraudflow.training.prequential import select_parameters
        from fraudflow.training.train import train_candidate as train
        from fraudflow.training.training_set import TrainingSet

        settings = get_settings()
        ts = TrainingSet.model_validate(training_set)
        chosen, selection = params["candidate_params"].get(candidate), None  # a person's explicit choice wins
        if chosen is None and settings.selection_trials > 0:
            selection = select_parameters(
                settings,
                candidate=candidate,
                training_set=ts,
                n_folds=settings.selection_folds,
                budget=settings.selection_trials,
            )
            chosen = selection.best_params
        run = train(
            settings,
            candidate=candidate,
            training_set=ts,
            params=chosen or {},
            shuffle_labels=params["shuffle_labels"],
            selection=selection,
        )
        return run.model_dump(mode="json")

    @task
    def candidate_families() -> list[str]:
        """The model families trained side by side (``fraudflow.models.candidates.FAMILIES``)."""
        from fraudflow.models.candidates import FAMILIES

        return list(FAMILIES)

    @task
    def train_ensemble(training_set: dict, candidates: list[dict], params: dict | None = None) -> dict | None:
        """The families' probability average, trained only if it beat each family on the
        prequential folds (``judge_ensemble``); nothing without selection or in a gate drill."""
        import logging

        from fraudflow.settings import get_settings
        from fraudflow.training.prequential import judge_ensemble
        from fraudflow.training.train import CandidateRun
        from fraudflow.training.train import train_candidate as train
        from fraudflow.training.training_set import TrainingSet

        log = logging.getLogger("fraudflow.selection")
        settings = get_settings()
        runs = [CandidateRun.model_validate(c) for c in candidates]
        selections = [r.selection for r in runs if r.selection is not None]
        if not settings.selection_ensemble or params["shuffle_labels"] or len(selections) < 2:
            log.info("no ensemble: needs FRAUDFLOW_SELECTION_ENSEMBLE and two families chosen by selection")
            return None
        ts = TrainingSet.model_validate(training_set)
        verdict = judge_ensemble(settings, training_set=ts, selections=selections)
        log.info("ensemble %s: %s", "kept" if verdict.kept else "dropped", verdict.reason)
        if not verdict.kept:
            return None
        run = train(
            settings,
            candidate="ensemble",
            training_set=ts,
            params=verdict.selection.best_params,
            selection=verdict.selection,
        )
        return run.model_dump(mode="json")

    @task(multiple_outputs=False)
    def evaluate_gate(
        training_set: dict, candidates: list[dict], ensemble: dict | None, run_id: str | None = None
    ) -> dict:
        from fraudflow.settings import get_settings
        from fraudflow.training.judge import judge_candidates
        from fraudflow.training.train import CandidateRun
        from fraudflow.training.training_set import TrainingSet

        decision = judge_candidates(
            get_settings(),
            training_set=TrainingSet.model_validate(training_set),
            candidates=[CandidateRun.model_validate(c) for c in [*candidates, *([ensemble] if ensemble else [])]],
            run_id=run_id,
        )
        return decision.model_dump(mode="json")

    @task.short_circuit
    def gate_passed(decision: dict) -> bool:
        import logging

        log = logging.getLogger("fraudflow.gate")
        if decision["passed"]:
            log.info("gate passed for %s: %s", decision["best"]["candidate"], decision["reason"])
        else:
            log.warning("GATE FAILED, nothing registered: %s (report %s)", decision["reason"], decision["report_path"])
        return decision["passed"]

    @task
    def refit_challenger(decision: dict, training_set: dict, run_id: str | None = None) -> dict | None:
        """The gated candidate refit on the freshest labelled days (FRAUDFLOW_REFIT_ON_FRESHEST_LABELS)."""
        from fraudflow.settings import get_settings
        from fraudflow.training.refit import refit_candidate
        from fraudflow.training.train import CandidateRun
        from fraudflow.training.training_set import TrainingSet

        settings = get_settings()
        if not settings.refit_on_freshest_labels:
            return None
        refit = refit_candidate(
            settings,
            judged=CandidateRun.model_validate(decision["best"]),
            training_set=TrainingSet.model_validate(training_set),
            run_id=run_id,
        )
        return refit.model_dump(mode="json")

    @task(outlets=[MODEL_CHALLENGER], multiple_outputs=False)
    def register_challenger(
        decision: dict, training_set: dict, refit: dict | None, params: dict | None = None, run_id=None
    ) -> dict:
        from fraudflow.settings import get_settings
        from fraudflow.training.judge import GateDecision
        from fraudflow.training.refit import Refit
        from fraudflow.training.register import register_best
        from fraudflow.training.training_set import TrainingSet

        version = register_best(
            get_settings(),
            decision=GateDecision.model_validate(decision),
            training_set=TrainingSet.model_validate(training_set),
            run_id=run_id,
            reason=params["reason"],
            refit=Refit.model_validate(refit) if refit else None,
        )
        return version.model_dump(mode="json")

    training_set = validate_training_set(build_training_set())
    candidates = train_candidate.partial(training_set=training_set).expand(candidate=candidate_families())
    decision = evaluate_gate(training_set, candidates, train_ensemble(training_set, candidates))
    refit = refit_challenger(decision, training_set)
    gate_passed(decision) >> refit
    register_challenger(decision, training_set, refit)


train_model()
