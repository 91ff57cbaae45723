"""The rollout decision log: one JSON line per stage verdict, under the fraudflow home."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from fraudflow.settings import Settings


def decisions_path(settings: Settings) -> Path:
    return settings.serving_dir / "decisions.jsonl"


def read_decisions(settings: Settings) -> list[dict[str, Any]]:
    """Every recorded decision, oldest first (a torn line is skipped with a warning)."""
    from fraudflow.jsonlines import read_json_lines

    return read_json_lines(decisions_path(settings))


def record_decision(settings: Settings, decision: dict[str, Any]) -> None:
    """Append a stage decision to ``serving/decisions.jsonl`` (also shown in the task log)."""
    from fraudflow.jsonlines import append_json_line

    append_json_line(decisions_path(settings), {"at": dt.datetime.now(dt.UTC).isoformat(), **decision})
