"""The rollout controller: drive shadow -> canary -> promote or rollback against the live service.

Each stage writes the deployment state (see ``fraudflow.serving.state``), waits until the
service reports that revision, replays real transactions at it (the newest lake day), and
judges the logged predictions with ``fraudflow.deployment.checks``.
"""

from __future__ import annotations

import datetime as dt
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd
from pydantic import BaseModel

from fraudflow import tags
from fraudflow.deployment.checks import StageCheck, Thresholds, canary_check, shadow_check
from fraudflow.deployment.decisions import record_decision
from fraudflow.lake import list_partitions, read_lake
from fraudflow.registry import CHALLENGER, CHAMPION, aliases, delete_alias, promote_challenger, set_version_tags
from fraudflow.serving.prediction_log import read_predictions
from fraudflow.serving.state import DeploymentState, read_state, write_state
from fraudflow.settings import Settings


class ReplayStats(BaseModel):
    sent: int
    ok: int
    failed: int
    statuses: dict[str, int]
    seconds: float


def replay_requests(
    url: str, transactions: pd.DataFrame, *, concurrency: int = 4, token: str | None = None
) -> ReplayStats:
    """POST each transaction to ``/score`` from ``concurrency`` keep-alive connections."""
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    bodies = [
        {
            "transaction_id": int(r.TRANSACTION_ID),
            "tx_datetime": pd.Timestamp(r.TX_DATETIME).isoformat(),
            "customer_id": str(r.CUSTOMER_ID),
            "terminal_id": str(r.TERMINAL_ID),
            "tx_amount": float(r.TX_AMOUNT),
        }
        for r in transactions.itertuples(index=False)
    ]
    chunks = [bodies[i::concurrency] for i in range(concurrency)]
    started = time.perf_counter()

    def send(chunk: list[dict[str, Any]]) -> list[str]:
        codes = []
        with httpx.Client(base_url=url, headers=headers, timeout=10) as client:
            for body in chunk:
                try:
                    codes.append(str(client.post("/score", json=body).status_code))
                except httpx.HTTPError as exc:
                    codes.append(type(exc).__name__)
        return codes

    with ThreadPoolExecutor(concurrency) as pool:
        codes = [c for part in pool.map(send, chunks) for c in part]
    statuses = {c: codes.count(c) for c in sorted(set(codes))}
    ok = statuses.get("200", 0)
    return ReplayStats(
        sent=len(codes), ok=ok, failed=len(codes) - ok, statuses=statuses, seconds=time.perf_counter() - started
    )


def replay_sample(settings: Settings, n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` transactions of the newest lake day (the shadow/canary traffic when none is live)."""
    days = list_partitions(settings)
    if not days:
        raise LookupError("the lake is empty: nothing to replay")
    frame = read_lake(settings, start=days[-1], end=days[-1])
    return frame.sample(n=min(n, len(frame)), random_state=seed).sort_values("TX_DATETIME")


def wait_for_revision(url: str, revision: int, timeout: float = 60) -> None:
    """Block until the service reports it follows deployment state ``revision``."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            body = httpx.get(f"{url}/healthz", timeout=2).json()
            if int(body.get("deployment_revision", -1)) >= revision:
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"service at {url} did not apply deployment revision {revision} within {timeout}s")


def _logged_since(settings: Settings, since: dt.datetime, expected: int, timeout: float = 30) -> pd.DataFrame:
    deadline = time.monotonic() + timeout
    while True:
        frame = read_predictions(settings.predictions_dir, since=since)
        if len(frame) >= expected or time.monotonic() > deadline:
            return frame
        time.sleep(0.5)


def run_stage(
    settings: Settings,
    url: str,
    *,
    stage: str,
    challenger: str,
    requests: int,
    canary_share: float = 0.2,
    thresholds: Thresholds | None = None,
    drill: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Put the service in ``stage`` (shadow or canary) for ``challenger``, replay traffic, judge.

    A first deployment has no champion to compare against: the stage is recorded as skipped
    and passes, so the challenger is promoted (the gate in train_model already judged it).
    """
    current = read_state(settings)
    if not (current.champion or aliases(settings).get(CHAMPION)):
        reason = "first deployment: no champion to compare against"
        decision = {
            "stage": stage,
            "challenger": challenger,
            "skipped": True,
            "check": {"passed": True, "reason": reason, "checks": {}},
        }
        record_decision(settings, decision)
        return decision
    drill = dict(drill or {})
    drill_stage = drill.pop("stage", None)  # a drill may target one stage only
    state = write_state(
        settings,
        DeploymentState(
            champion=current.champion or aliases(settings).get(CHAMPION),
            challenger=challenger,
            mode=stage,
            canary_share=canary_share if stage == "canary" else 0.0,
            reason=f"{stage} of v{challenger}",
            **(drill if drill_stage in (None, stage) else {}),
        ),
    )
    wait_for_revision(url, state.revision)
    since = dt.datetime.now(dt.UTC)
    if stage == "canary":  # enough traffic for the challenger's share to reach its minimum
        minimum = (thresholds or Thresholds()).min_canary_requests
        requests = max(requests, int(minimum / canary_share * 1.5))
    replay = replay_requests(url, replay_sample(settings, requests, seed=state.revision), token=settings.api_token)
    logged = _logged_since(settings, since, replay.ok)
    check: StageCheck = (shadow_check if stage == "shadow" else canary_check)(logged, thresholds)
    decision = {"stage": stage, "challenger": challenger, "replay": replay.model_dump(), "check": check.model_dump()}
    record_decision(settings, decision)
    return decision


def promote(settings: Settings, url: str | None = None) -> dict[str, Any]:
    """Move ``champion`` to the challenger (old champion -> ``previous``) and serve it alone."""
    version = aliases(settings).get(CHALLENGER)
    moved = promote_challenger(settings)
    state = write_state(
        settings, DeploymentState(champion=moved[CHAMPION], mode="champion", reason=f"promoted v{version}")
    )
    if url:
        wait_for_revision(url, state.revision)
    set_version_tags(settings, moved[CHAMPION], {tags.ROLLOUT: "promoted"})
    decision = {"stage": "promote", "version": version, "aliases": moved}
    record_decision(settings, decision)
    return decision


def reject_challenger(settings: Settings, reason: str, url: str | None = None) -> dict[str, Any]:
    """Automatic rollback of a staged challenger: the champion serves alone again; the
    challenger loses its alias and keeps the reason as a tag."""
    current = aliases(settings)
    version = current.get(CHALLENGER)
    state = write_state(
        settings, DeploymentState(champion=current.get(CHAMPION), mode="champion", reason=f"rolled back v{version}")
    )
    if url:
        wait_for_revision(url, state.revision)
    if version:
        set_version_tags(
            settings, version, {tags.ROLLOUT: "rolled_back", tags.ROLLOUT_REASON: reason[:4000]}
        )
        delete_alias(settings, CHALLENGER)
    decision = {"stage": "rollback", "version": version, "reason": reason, "aliases": aliases(settings)}
    record_decision(settings, decision)
    return decision
