"""The rollout decision log: one JSON line per stage verdict, under the fraudflow home."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from fraudflow.settings import Settings


def decisions_path(settings: Settings) -> Path:
    return settings.serving_dir / "decisions.jsonl"


def read_decisions(settings: Settings) -> list[dict[str, Any]]:
    """Every recorded decision, oldest first."""
    path = decisions_path(settings)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def record_decision(settings: Settings, decision: dict[str, Any]) -> None:
    """Append a stage decision to ``serving/decisions.jsonl`` (also shown in the task log)."""
    path = decisions_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps({"at": dt.datetime.now(dt.UTC).isoformat(), **decision}, default=str) + "\n")
