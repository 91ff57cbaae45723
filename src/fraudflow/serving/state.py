"""The deployment state every scoring process follows, and the sticky canary routing rule.

The traffic split is a small JSON state file under the fraudflow home. Every scoring
process watches it and, when it changes, loads the named model versions in the background
and swaps them in atomically, so no request fails during a switch. Modes:

- ``champion``: the champion answers everything.
- ``shadow``: the champion answers; the challenger scores the same request off the response
  path; both scores are logged.
- ``canary``: a share of customers (sticky: a hash of the customer id) is answered by the
  challenger, the rest by the champion.

The controller (``deploy_model`` DAG, ``fraudflow.deployment.controller``) writes the state,
replays traffic, judges each stage from the prediction log, then promotes or rolls back.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from fraudflow.settings import Settings

Mode = Literal["champion", "shadow", "canary"]


class DeploymentState(BaseModel):
    champion: str | None = None  # model version answering by default
    challenger: str | None = None
    mode: Mode = "champion"
    canary_share: float = Field(0.0, ge=0, le=1)
    revision: int = 0
    reason: str = ""
    updated_at: dt.datetime | None = None
    # Drill knobs for rehearsing a bad challenger (never set by the pipeline itself).
    challenger_delay_ms: float = Field(0.0, ge=0)
    challenger_score_shift: float = 0.0
    challenger_fail_every: int = Field(0, ge=0)  # every n-th challenger call raises (0: never)


def state_path(settings: Settings) -> Path:
    return settings.serving_dir / "deployment.json"


def read_state(settings: Settings) -> DeploymentState:
    path = state_path(settings)
    return DeploymentState.model_validate_json(path.read_text()) if path.exists() else DeploymentState()


class StaleDeploymentState(RuntimeError):
    """Someone else wrote the deployment state since the writer read it: refuse to overwrite."""


@contextlib.contextmanager
def state_lock(settings: Settings) -> Iterator[None]:
    """An exclusive lock on the deployment state (``flock`` on a sibling file), so a
    read-check-write by one writer is never interleaved with another's."""
    path = state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(".deployment.lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def write_state(
    settings: Settings, state: DeploymentState, *, expected_revision: int | None = None, history: bool = True
) -> DeploymentState:
    """Atomically replace the state (revision + 1) and append it to ``deployment_log.jsonl``.

    Args:
        settings: Where the state lives.
        state: The new state; its ``revision`` and ``updated_at`` are set here.
        expected_revision: Compare-and-swap: the revision the writer's decision was based on.
            When the file holds another revision (a manual rollback, another rollout), nothing
            is written and :class:`StaleDeploymentState` says who wrote it. ``None`` writes
            unconditionally (a person's explicit command).
        history: Append the new state to the deployment log.

    Raises:
        StaleDeploymentState: ``expected_revision`` is not the current revision.
    """
    with state_lock(settings):
        return write_state_holding_lock(settings, state, expected_revision=expected_revision, history=history)


def write_state_holding_lock(
    settings: Settings, state: DeploymentState, *, expected_revision: int | None = None, history: bool = True
) -> DeploymentState:
    """:func:`write_state` for a caller that already holds :func:`state_lock` (``flock`` is
    not re-entrant: taking it twice in one process would wait forever)."""
    path = state_path(settings)
    current = read_state(settings)
    if expected_revision is not None and current.revision != expected_revision:
        raise StaleDeploymentState(
            f"{path} is at revision {current.revision} ({current.reason!r}), not {expected_revision}: "
            "it changed since this decision was made; refusing to overwrite it"
        )
    state = state.model_copy(update={"revision": current.revision + 1, "updated_at": dt.datetime.now(dt.UTC)})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(state.model_dump_json(indent=2))
    os.replace(tmp, path)
    if history:
        with (path.parent / "deployment_log.jsonl").open("a") as fh:
            fh.write(state.model_dump_json() + "\n")
    return state


def routes_to_challenger(customer_id: str, share: float) -> bool:
    """Sticky canary assignment: the same customer always lands on the same side."""
    return zlib.crc32(str(customer_id).encode()) % 10_000 < share * 10_000
