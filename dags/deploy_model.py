"""
### Deploy model

Runs when `train_model` registers a challenger (Asset `fraudflow_model_challenger`), or by
hand. Stages the challenger through the live scoring service, judging each stage from the
prediction log; every decision also goes to `serving/decisions.jsonl`.

1. **open_rollout** (setup): finishes whatever a crashed rollout left (journaled alias moves,
   a shadow/canary nobody drives), pins the version to stage (the `challenger` now) and the
   deployment-state revision every later step must still find, starts the service if none
   answers at `FRAUDFLOW_SERVING_URL`.
2. **build_bento**: imports the version from the MLflow registry into the BentoML model store
   and builds a versioned Bento (model version in its labels); recorded on the version.
3. **shadow**: the challenger scores every request beside the champion (only the champion's
   answer is returned); replayed traffic; checks: error rate, p99 latency, score PSI,
   decision agreement.
4. **canary**: a sticky share of customers is answered by the challenger; checks: error
   rate (a challenger failure the champion covered still counts), p99 latency, score PSI.
5. **approve_promotion**: with `FRAUDFLOW_REQUIRE_APPROVAL` (on in the production profile) and
   both stages passed, a person approves or rejects in the Airflow UI (Required actions), shown
   the gate and canary evidence; no answer within `FRAUDFLOW_APPROVAL_TIMEOUT_SECONDS` rejects.
   The canary keeps its share meanwhile. Otherwise it returns at once.
6. **decide** -> **promote** (`champion` alias moves to the staged version, old one becomes
   `previous`) or **rollback** (champion alone again; the version keeps the reason). Both act
   only on the pinned version and only if the state is still at the stage's revision (a
   manual `fraudflow rollback` meanwhile is never overwritten); both record who approved or
   rejected on the version.
7. **close_rollout** (teardown, runs whatever failed): a service still in shadow or canary
   returns to the champion alone, with the reason in the decision log.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, setup, task, teardown

from fraudflow.orchestration.approval import PromotionApproval
from fraudflow.orchestration.assets import MODEL_CHALLENGER
from fraudflow.orchestration.dag_defaults import default_args, start_date
from fraudflow.settings import get_settings

SETTINGS = get_settings()


@dag(
    schedule=[MODEL_CHALLENGER],
    start_date=start_date(SETTINGS),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(SETTINGS),
    params={
        "shadow_requests": Param(SETTINGS.shadow_requests, type="integer", minimum=1),
        "canary_requests": Param(SETTINGS.canary_requests, type="integer", minimum=1),
        "canary_share": Param(SETTINGS.canary_share, type="number", minimum=0.01, maximum=1),
        "drill": Param(
            {},
            type="object",
            description='rehearse a bad challenger: {"stage": "canary", "challenger_delay_ms": 80}; '
            "also challenger_score_shift, challenger_fail_every",
        ),
        "build_bento": Param(True, type="boolean"),
    },
    tags=["fraudflow", "deployment", "bentoml"],
    doc_md=__doc__,
)
def deploy_model():
    @setup
    @task(multiple_outputs=False)
    def open_rollout() -> dict:
        from fraudflow.deployment.reconcile import reconcile_serving
        from fraudflow.deployment.service_process import ensure_service
        from fraudflow.orchestration.failures import fail_without_retry
        from fraudflow.registry import CHALLENGER, version_by_alias
        from fraudflow.serving.state import read_state
        from fraudflow.settings import get_settings

        settings = get_settings()
        repair = reconcile_serving(settings)  # max_active_runs=1: no other rollout is running
        with fail_without_retry(LookupError):  # a manual trigger with nothing registered: say so, once
            challenger = version_by_alias(settings, CHALLENGER)
            if challenger is None:
                raise LookupError("no fraud-detector version has the alias 'challenger': nothing to deploy")
        url = ensure_service(settings)
        return {
            "version": challenger.version,
            "url": url,
            "revision": read_state(settings).revision,
            "repaired": repair.reasons,
        }

    @task
    def build_bento(rollout: dict, params: dict | None = None) -> str | None:
        from fraudflow.deployment.bento import build_model_bento
        from fraudflow.settings import get_settings

        return build_model_bento(get_settings(), rollout["version"]) if params["build_bento"] else None

    @task(multiple_outputs=False)
    def shadow(rollout: dict, bento: str | None, params: dict | None = None) -> dict:
        from fraudflow.deployment.controller import run_stage
        from fraudflow.settings import get_settings

        return run_stage(
            get_settings(),
            rollout["url"],
            stage="shadow",
            challenger=rollout["version"],
            requests=params["shadow_requests"],
            expected_revision=rollout["revision"],
            drill=params["drill"],
        )

    @task(multiple_outputs=False)
    def canary(rollout: dict, shadow_decision: dict, params: dict | None = None) -> dict:
        from fraudflow.deployment.controller import run_stage
        from fraudflow.settings import get_settings

        if not shadow_decision["check"]["passed"]:
            return {
                "stage": "canary",
                "skipped": True,
                "revision": shadow_decision["revision"],
                "check": {"passed": False, "reason": "shadow failed"},
            }
        return run_stage(
            get_settings(),
            rollout["url"],
            stage="canary",
            challenger=rollout["version"],
            requests=params["canary_requests"],
            expected_revision=shadow_decision["revision"],
            canary_share=params["canary_share"],
            drill=params["drill"],
        )

    @task.branch
    def decide(shadow_decision: dict, canary_decision: dict, approval: dict | None) -> str:
        import logging

        from fraudflow.deployment.approval import approval_outcome
        from fraudflow.settings import get_settings

        log = logging.getLogger("fraudflow.rollout")
        for d in (shadow_decision, canary_decision):
            log.info("%s: %s (%s)", d["stage"], "passed" if d["check"]["passed"] else "FAILED", d["check"]["reason"])
        outcome = approval_outcome(get_settings(), approval)
        log.info("approval: %s (%s)", outcome.answer, outcome.reason)
        passed = shadow_decision["check"]["passed"] and canary_decision["check"]["passed"]
        return "promote" if passed and outcome.approved else "rollback"

    @task(multiple_outputs=False)
    def promote(rollout: dict, canary_decision: dict, approval: dict | None) -> dict:
        from fraudflow.deployment.approval import approval_outcome, record_approval
        from fraudflow.deployment.controller import promote as promote_version
        from fraudflow.orchestration.failures import fail_without_retry
        from fraudflow.serving.state import StaleDeploymentState
        from fraudflow.settings import get_settings

        settings = get_settings()
        record_approval(settings, rollout["version"], approval_outcome(settings, approval))
        with fail_without_retry(StaleDeploymentState):
            return promote_version(
                settings,
                rollout["url"],
                version=rollout["version"],
                expected_revision=canary_decision["revision"],
            )

    @task(multiple_outputs=False)
    def rollback(rollout: dict, shadow_decision: dict, canary_decision: dict, approval: dict | None) -> dict:
        from fraudflow.deployment.approval import approval_outcome, record_approval
        from fraudflow.deployment.controller import reject_challenger
        from fraudflow.orchestration.failures import fail_without_retry
        from fraudflow.serving.state import StaleDeploymentState
        from fraudflow.settings import get_settings

        settings = get_settings()
        outcome = approval_outcome(settings, approval)
        record_approval(settings, rollout["version"], outcome)
        failed = [d for d in (shadow_decision, canary_decision) if not d["check"]["passed"]]
        reason = "; ".join(f"{d['stage']}: {d['check']['reason']}" for d in failed) or f"approval: {outcome.reason}"
        with fail_without_retry(StaleDeploymentState):
            return reject_challenger(
                settings,
                reason,
                rollout["url"],
                version=rollout["version"],
                expected_revision=canary_decision["revision"],
            )

    @teardown
    @task(multiple_outputs=False)
    def close_rollout(rollout: dict, run_id: str | None = None) -> dict:
        import logging

        from fraudflow.deployment.reconcile import return_to_champion
        from fraudflow.settings import get_settings

        repair = return_to_champion(get_settings(), why=f"deploy_model run {run_id} ended before promote or rollback")
        for reason in repair.reasons:
            logging.getLogger("fraudflow.rollout").warning("%s", reason)
        return repair.model_dump()

    rollout = open_rollout()
    shadow_decision = shadow(rollout, build_bento(rollout))
    canary_decision = canary(rollout, shadow_decision)
    approval = PromotionApproval(task_id="approve_promotion")
    canary_decision >> approval
    ends = [
        promote(rollout, canary_decision, approval.output),
        rollback(rollout, shadow_decision, canary_decision, approval.output),
    ]
    decide(shadow_decision, canary_decision, approval.output) >> ends
    ends >> close_rollout(rollout)


deploy_model()
