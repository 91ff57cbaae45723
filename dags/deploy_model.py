"""
### Deploy model

Runs when `train_model` registers a challenger (Asset `fraudflow_model_challenger`), or by
hand. Stages the challenger through the live scoring service, judging each stage from the
prediction log; every decision also goes to `serving/decisions.jsonl`.

1. **build_bento**: imports the version from the MLflow registry into the BentoML model store
   and builds a versioned Bento (model version in its labels); recorded on the version.
2. **scoring_service**: the service at `FRAUDFLOW_SERVING_URL`, started if none answers.
3. **shadow**: the challenger scores every request beside the champion (only the champion's
   answer is returned); replayed traffic; checks: error rate, p99 latency, score PSI,
   decision agreement.
4. **canary**: a sticky share of customers is answered by the challenger; checks: error
   rate, p99 latency, score PSI against the champion's answers.
5. **decide** -> **promote** (`champion` alias moves, old one becomes `previous`) or
   **rollback** (champion alone again; the challenger loses its alias, keeps the reason).
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

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
        "drill": Param({}, type="object", description='rehearse a bad challenger: {"challenger_delay_ms": 80}'),
        "build_bento": Param(True, type="boolean"),
    },
    tags=["fraudflow", "deployment", "bentoml"],
    doc_md=__doc__,
)
def deploy_model():
    @task
    def build_bento(params: dict | None = None) -> dict:
        from fraudflow.registry import CHALLENGER, version_by_alias
        from fraudflow.settings import get_settings

        settings = get_settings()
        challenger = version_by_alias(settings, CHALLENGER)
        if challenger is None:
            raise ValueError("no fraud-detector version has the alias 'challenger': nothing to deploy")
        if not params["build_bento"]:
            return {"version": challenger.version, "bento": None}
        from fraudflow.deployment.bento import build_model_bento

        return {"version": challenger.version, "bento": build_model_bento(settings, challenger.version)}

    @task
    def scoring_service() -> str:
        from fraudflow.deployment.service_process import ensure_service
        from fraudflow.settings import get_settings

        return ensure_service(get_settings())

    @task
    def shadow(build: dict, url: str, params: dict | None = None) -> dict:
        from fraudflow.deployment.controller import run_stage
        from fraudflow.settings import get_settings

        return run_stage(
            get_settings(),
            url,
            stage="shadow",
            challenger=build["version"],
            requests=params["shadow_requests"],
            drill=params["drill"],
        )

    @task
    def canary(build: dict, url: str, shadow_decision: dict, params: dict | None = None) -> dict:
        from fraudflow.deployment.controller import run_stage
        from fraudflow.settings import get_settings

        if not shadow_decision["check"]["passed"]:
            return {"stage": "canary", "skipped": True, "check": {"passed": False, "reason": "shadow failed"}}
        return run_stage(
            get_settings(),
            url,
            stage="canary",
            challenger=build["version"],
            requests=params["canary_requests"],
            canary_share=params["canary_share"],
            drill=params["drill"],
        )

    @task.branch
    def decide(shadow_decision: dict, canary_decision: dict) -> str:
        import logging

        log = logging.getLogger("fraudflow.rollout")
        for d in (shadow_decision, canary_decision):
            log.info("%s: %s (%s)", d["stage"], "passed" if d["check"]["passed"] else "FAILED", d["check"]["reason"])
        return "promote" if shadow_decision["check"]["passed"] and canary_decision["check"]["passed"] else "rollback"

    @task
    def promote(url: str) -> dict:
        from fraudflow.deployment.controller import promote as promote_version
        from fraudflow.settings import get_settings

        return promote_version(get_settings(), url)

    @task
    def rollback(url: str, shadow_decision: dict, canary_decision: dict) -> dict:
        from fraudflow.deployment.controller import reject_challenger
        from fraudflow.settings import get_settings

        failed = [d for d in (shadow_decision, canary_decision) if not d["check"]["passed"]]
        reason = "; ".join(f"{d['stage']}: {d['check']['reason']}" for d in failed)
        return reject_challenger(get_settings(), reason, url)

    build = build_bento()
    url = scoring_service()
    shadow_decision = shadow(build, url)
    canary_decision = canary(build, url, shadow_decision)
    decide(shadow_decision, canary_decision) >> [promote(url), rollback(url, shadow_decision, canary_decision)]


deploy_model()
