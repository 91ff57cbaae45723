"""The rollout controller: drive shadow -> canary -> promote or rollback against the live service.

Each stage writes the deployment state (see ``fraudflow.serving.state``), waits until the
service reports that revision, replays real transactions at it (the newest lake day), and
judges the logged predictions with ``fraudflow.deployment.checks``.
"""

from __future__ import annotations

import datetime as dt
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

from fraudflow import tags
from fraudflow.deployment.checks import StageCheck, Thresholds, canary_check, shadow_check
from fraudflow.deployment.decisions import record_decision
from fraudflow.failpoints import failpoint
from fraudflow.lake import list_partitions, read_lake
from fraudflow.registry import CHAMPION, aliases, drop_challenger, get_version, promote_version, set_version_tags
from fraudflow.serving.prediction_log import read_predictions
from fraudflow.serving.state import (
    DeploymentState,
    StaleDeploymentState,
    read_state,
    state_lock,
    write_state,
    write_state_holding_lock,
)
from fraudflow.settings import Settings


class ReplayStats(BaseModel):
    sent: int
    ok: int
    failed: int
    statuses: dict[str, int]
    seconds: float


def score_bodies(transactions: pd.DataFrame) -> list[dict[str, Any]]:
    """Lake rows as ``/score`` request bodies (the API's field names), in the frame's order."""
    return [
        {
            "transaction_id": int(r.TRANSACTION_ID),
            "tx_datetime": pd.Timestamp(r.TX_DATETIME).isoformat(),
            "customer_id": str(r.CUSTOMER_ID),
            "terminal_id": str(r.TERMINAL_ID),
            "tx_amount": float(r.TX_AMOUNT),
        }
        for r in transactions.itertuples(index=False)
    ]


def replay_requests(
    url: str, transactions: pd.DataFrame, *, concurrency: int = 4, token: str | None = None
) -> ReplayStats:
    """POST each transaction to ``/score`` from ``concurrency`` keep-alive connections."""
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    bodies = score_bodies(transactions)
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
    expected_revision: int | None = None,
    canary_share: float = 0.2,
    thresholds: Thresholds | None = None,
    drill: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Put the service in ``stage`` (shadow or canary) for ``challenger``, replay traffic, judge.

    A first deployment has no champion to compare against: the stage is recorded as skipped
    and passes, so the challenger is promoted (the gate in train_model already judged it).

    Args:
        expected_revision: The deployment-state revision the rollout saw last (compare-and-
            swap: a state written meanwhile, e.g. a manual rollback, stops the rollout).

    Returns:
        The decision (also appended to the decision log), with ``revision``: the state this
        stage wrote, which the next step of the rollout must still find.
    """
    current = read_state(settings)
    if not (current.champion or aliases(settings).get(CHAMPION)):
        reason = "first deployment: no champion to compare against"
        decision = {
            "stage": stage,
            "challenger": challenger,
            "skipped": True,
            "revision": current.revision,
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
        expected_revision=expected_revision,
    )
    failpoint(f"{stage}_started")  # the service is switched; the stage has not been judged
    wait_for_revision(url, state.revision)
    since = dt.datetime.now(dt.UTC)
    thresholds = thresholds or Thresholds.from_settings(settings)
    if stage == "canary":  # enough traffic for the challenger's share to reach its minimum
        requests = max(requests, int(thresholds.min_canary_requests / canary_share * 1.5))
    replay = replay_requests(url, replay_sample(settings, requests, seed=state.revision), token=settings.api_token)
    logged = _logged_since(settings, since, replay.ok)
    judge = shadow_check if stage == "shadow" else canary_check
    check: StageCheck = judge(logged, thresholds, offline_scores=offline_test_scores(settings, challenger))
    decision = {
        "stage": stage,
        "challenger": challenger,
        "revision": state.revision,
        "replay": replay.model_dump(),
        "check": check.model_dump(),
    }
    record_decision(settings, decision)
    return decision


def offline_test_scores(settings: Settings, version: str) -> np.ndarray | None:
    """The version's scores on its held-out test window (what the gate certified), if recorded.

    A refit (tag ``REFIT_OF``) has no held-out week of its own: the scores it carries are the
    judged model's, and comparing a different model's live scores with them measures the refit,
    not online against offline (the full-size demo read 0.253 there). None: the check is skipped,
    and errors, latency and alert volume judge the refit.
    """
    version_tags = get_version(settings, version).tags
    path = version_tags.get(tags.TEST_SCORES)
    if tags.REFIT_OF in version_tags or not path or not Path(path).exists():
        return None
    return pd.read_parquet(path, columns=["score"])["score"].to_numpy(float)


def promote(
    settings: Settings, url: str | None = None, *, version: str, expected_revision: int | None
) -> dict[str, Any]:
    """Make ``version`` (the one that went through shadow and canary) the champion, serving alone.

    Under the state lock: the state must still be at ``expected_revision`` (else nothing moves
    and :class:`StaleDeploymentState` says what changed), then the aliases move as one journaled
    step, then the state follows. A crash in between is finished by ``recover_alias_moves`` and
    ``reconcile_serving``.
    """
    with state_lock(settings):
        _require_revision(settings, expected_revision)
        moved = promote_version(settings, version)
        state = write_state_holding_lock(
            settings, DeploymentState(champion=version, mode="champion", reason=f"promoted v{version}")
        )
    if url:
        wait_for_revision(url, state.revision)
    set_version_tags(settings, version, {tags.ROLLOUT: "promoted"})
    decision = {"stage": "promote", "version": version, "revision": state.revision, "aliases": moved}
    record_decision(settings, decision)
    return decision


def reject_challenger(
    settings: Settings, reason: str, url: str | None = None, *, version: str, expected_revision: int | None
) -> dict[str, Any]:
    """Automatic rollback of the staged ``version``: the champion serves alone again; the
    version loses the ``challenger`` alias (if it still has it) and keeps the reason as a tag."""
    with state_lock(settings):
        _require_revision(settings, expected_revision)
        drop_challenger(settings, version)
        champion_only = DeploymentState(
            champion=aliases(settings).get(CHAMPION), mode="champion", reason=f"rolled back v{version}"
        )
        state = write_state_holding_lock(settings, champion_only)
    if url:
        wait_for_revision(url, state.revision)
    set_version_tags(settings, version, {tags.ROLLOUT: "rolled_back", tags.ROLLOUT_REASON: reason[:4000]})
    decision = {
        "stage": "rollback",
        "version": version,
        "reason": reason,
        "revision": state.revision,
        "aliases": aliases(settings),
    }
    record_decision(settings, decision)
    return decision


def _require_revision(settings: Settings, expected_revision: int | None) -> None:
    current = read_state(settings)
    if expected_revision is not None and current.revision != expected_revision:
        raise StaleDeploymentState(
            f"the deployment state is at revision {current.revision} ({current.reason!r}), not "
            f"{expected_revision}: it changed during this rollout; leaving it as it is"
        )
