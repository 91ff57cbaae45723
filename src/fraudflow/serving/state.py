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

import datetime as dt
import os
import zlib
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


def state_path(settings: Settings) -> Path:
    return settings.serving_dir / "deployment.json"


def read_state(settings: Settings) -> DeploymentState:
    path = state_path(settings)
    return DeploymentState.model_validate_json(path.read_text()) if path.exists() else DeploymentState()


def write_state(settings: Settings, state: DeploymentState, *, history: bool = True) -> DeploymentState:
    """Atomically replace the state (revision + 1) and append it to ``deployment_log.jsonl``."""
    current = read_state(settings)
    state = state.model_copy(update={"revision": current.revision + 1, "updated_at": dt.datetime.now(dt.UTC)})
    path = state_path(settings)
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
