"""Bring the registry and the serving state back to one champion-only picture after a failure.

A rollout can stop anywhere: a stage task fails or times out, the controller process is
killed, the machine reboots between two alias moves. Whatever point it stopped at, three
things must converge without a person: half-done alias moves are finished (their journal),
a service left in shadow or canary returns to the champion alone, and the state follows the
registry's ``champion``. Each repair is recorded with its reason in the decision log.
"""

from __future__ import annotations

from pydantic import BaseModel

from fraudflow.deployment.decisions import record_decision
from fraudflow.registry import CHAMPION, aliases, recover_alias_moves
from fraudflow.serving.state import DeploymentState, read_state, state_lock, write_state_holding_lock
from fraudflow.settings import Settings


class Repair(BaseModel):
    """What reconciliation changed (``changed`` is False when all was consistent)."""

    changed: bool
    reasons: list[str]
    revision: int


def return_to_champion(settings: Settings, *, why: str) -> Repair:
    """Champion alone again if the service is in shadow or canary (the rollout's teardown).

    Args:
        why: Who ended the rollout and how, for the decision log (e.g. "deploy_model run X
            ended with canary unfinished").
    """
    recovered = recover_alias_moves(settings)
    reasons = [f"finished alias moves left by a crash: {recovered.reason}"] if recovered else []
    with state_lock(settings):
        state = read_state(settings)
        if state.mode != "champion":
            reasons.append(f"{why}: {state.mode} of v{state.challenger} stopped, champion alone again")
            champion = aliases(settings).get(CHAMPION) or state.champion
            state = write_state_holding_lock(
                settings, DeploymentState(champion=champion, mode="champion", reason="; ".join(reasons))
            )
    return _recorded(settings, reasons, state.revision)


def reconcile_serving(settings: Settings) -> Repair:
    """Repair whatever a crashed or killed rollout left; call only when no rollout is running.

    Finishes journaled alias moves, ends a shadow/canary that nobody drives any more, and
    points the state at the registry's ``champion`` when they disagree (the registry is the
    decision of record: a crash between the alias moves and the state write leaves the state
    behind, never ahead).
    """
    repair = return_to_champion(settings, why="no deploy_model run is driving it")
    reasons = list(repair.reasons)
    with state_lock(settings):
        state = read_state(settings)
        champion = aliases(settings).get(CHAMPION)
        if champion and state.champion != champion:
            reasons.append(f"the service followed v{state.champion}, the registry's champion is v{champion}")
            state = write_state_holding_lock(
                settings, DeploymentState(champion=champion, mode="champion", reason=reasons[-1])
            )
    new = reasons[len(repair.reasons) :]
    if new:
        record_decision(settings, {"stage": "reconcile", "reasons": new, "revision": state.revision})
    return Repair(changed=bool(reasons), reasons=reasons, revision=state.revision)


def _recorded(settings: Settings, reasons: list[str], revision: int) -> Repair:
    if reasons:
        record_decision(settings, {"stage": "reconcile", "reasons": reasons, "revision": revision})
    return Repair(changed=bool(reasons), reasons=reasons, revision=revision)
