"""A person's go/no-go between a passed canary and promotion (regulated teams require one).

``deploy_model`` asks through Airflow's human-in-the-loop ``ApprovalOperator``
(``fraudflow.orchestration.approval``): the request carries :func:`approval_request`'s subject
and Markdown body (the gate's verdict and metrics, the shadow and canary checks, the model
card), a person answers Approve or Reject in the Airflow UI, and :func:`approval_outcome` turns
the answer into what ``decide`` branches on. No answer within ``approval_timeout_seconds``
counts as a rejection (the operator's default option, applied by the scheduler with no
responder). Every answer is a decision-log line and a tag on the version, naming who answered.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel

from fraudflow import tags
from fraudflow.deployment.decisions import record_decision
from fraudflow.registry import get_version, set_version_tags
from fraudflow.settings import Settings

APPROVE, REJECT = "Approve", "Reject"


class ApprovalOutcome(BaseModel):
    required: bool
    approved: bool
    answer: str  # "approved" | "rejected" | "timed_out" | "not_required" | "not_asked"
    by: str | None = None  # the Airflow user who answered
    at: str | None = None
    reason: str


def approval_request(settings: Settings, version: str, shadow: dict, canary: dict) -> tuple[str, str]:
    """Subject and Markdown body of the approval prompt: the evidence a reviewer needs."""
    v = get_version(settings, version)
    t = v.tags
    lines = [
        f"**fraud-detector v{version}** ({t.get(tags.CANDIDATE, '?')}) passed shadow and canary and waits "
        "for your decision. Approve promotes it to champion; Reject (or no answer in "
        f"{settings.approval_timeout_seconds // 3600} h) rolls it back.",
        "",
        "| evidence | detail |",
        "|---|---|",
        f"| why trained | {t.get(tags.REASON, 'scheduled')} |",
        f"| gate | {t.get(tags.GATE, '?')}: {t.get(tags.GATE_REASON, '')} |",
        f"| test metrics | AP {t.get(tags.AVERAGE_PRECISION, '?')}, AUC ROC {t.get(tags.AUC_ROC, '?')}, "
        f"CP@100 {t.get(tags.CARD_PRECISION_AT_100, '?')} (window {t.get(tags.TEST_WINDOW, '?')}) |",
    ]
    for decision in (shadow, canary):
        check = decision.get("check", {})
        verdict = "passed" if check.get("passed") else "FAILED"
        lines.append(f"| {decision.get('stage')} | {verdict}: {check.get('reason')} |")
    if t.get(tags.MODEL_CARD):
        lines.append(
            f"| model card | [fraud-detector v{version}](/fraudflow/versions/{version}/card) "
            "(also the version's description in MLflow) |"
        )
    return f"Promote fraud-detector v{version} to champion?", "\n".join(lines)


def approval_outcome(settings: Settings, answer: dict[str, Any] | None) -> ApprovalOutcome:
    """What the approval task returned, as a decision.

    ``answer`` is the operator's result: ``{"required": False, ...}`` when it did not ask, else
    HITL's ``{"chosen_options": [...], "responded_by_user": {...} | None, "responded_at": ...}``
    (``responded_by_user`` is None when the scheduler applied the timeout default).
    """
    if not answer or not answer.get("required", True):
        why = (answer or {}).get("reason", "approval not required")
        return ApprovalOutcome(required=False, approved=True, answer="not_required", reason=why)
    chosen = (answer.get("chosen_options") or [REJECT])[0]
    user = answer.get("responded_by_user") or {}
    by = user.get("name") or user.get("id")
    at = answer.get("responded_at")
    at = at.isoformat() if isinstance(at, dt.datetime) else (str(at) if at else None)
    if by is None:
        hours = settings.approval_timeout_seconds / 3600
        return ApprovalOutcome(
            required=True, approved=False, answer="timed_out", at=at, reason=f"no approval within {hours:g} h"
        )
    approved = chosen == APPROVE
    return ApprovalOutcome(
        required=True,
        approved=approved,
        answer="approved" if approved else "rejected",
        by=by,
        at=at,
        reason=f"{'approved' if approved else 'rejected'} by {by}",
    )


def record_approval(settings: Settings, version: str, outcome: ApprovalOutcome) -> None:
    """The answer on the version (tags) and in the decision log; nothing when none was asked."""
    if not outcome.required:
        return
    set_version_tags(settings, version, {tags.APPROVAL: outcome.answer, tags.APPROVED_BY: outcome.by or "-"})
    record_decision(settings, {"stage": "approval", "version": version, **outcome.model_dump()})
