"""``deploy_model``'s approval step: Airflow's ``ApprovalOperator``, asked only when it matters.

It asks (the task waits in ``awaiting_input`` until someone answers in the Airflow UI, or the
scheduler applies the timeout default, Reject) only when ``FRAUDFLOW_REQUIRE_APPROVAL`` is on
and both shadow and canary passed; otherwise it returns at once with ``required: False``.
Its answer goes to ``decide``, which branches to promote or rollback: the stock operator's
reject path (skip the direct downstream task) would skip ``decide`` and so the rollback.
It also returns the answer on reject (the stock one skips before returning, so a reject would
leave no XCom naming who rejected: Airflow 3.3.2 / standard provider 1.21.0).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator


class PromotionApproval(ApprovalOperator):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("subject", "Promote the challenger to champion?")
        super().__init__(defaults=self.REJECT, **kwargs)

    def execute(self, context: Any) -> Any:
        from fraudflow.deployment.approval import approval_request
        from fraudflow.settings import get_settings

        settings = get_settings()
        ti = context["ti"]
        rollout = ti.xcom_pull(task_ids="open_rollout")
        shadow, canary = ti.xcom_pull(task_ids="shadow"), ti.xcom_pull(task_ids="canary")
        if not settings.approval_required:
            return {"required": False, "reason": "approval not required (FRAUDFLOW_REQUIRE_APPROVAL off)"}
        if not (shadow["check"]["passed"] and canary["check"]["passed"]):
            return {"required": False, "reason": "not asked: the staged checks failed"}
        self.subject, self.body = approval_request(settings, rollout["version"], shadow, canary)
        self.response_timeout = dt.timedelta(seconds=settings.approval_timeout_seconds)
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        answer = HITLOperator.execute_complete(self, context=context, event=event)
        self.log.info("approval answer: %s by %s", answer["chosen_options"], answer.get("responded_by_user"))
        return {"required": True, **answer}
