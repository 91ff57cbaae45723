"""An append-only log of what each stage read and wrote, so any output traces to its inputs.

One JSON object a line under the fraudflow home. Appends are single ``write`` calls on an
``O_APPEND`` descriptor, so concurrent tasks never interleave half-lines.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

from fraudflow.settings import Settings


def record_lineage(
    settings: Settings,
    *,
    stage: str,
    run_id: str | None,
    read: dict[str, Any],
    wrote: dict[str, Any],
) -> dict[str, Any]:
    """Append one event and return it."""
    event = {
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
        "stage": stage,
        "run_id": run_id,
        "read": read,
        "wrote": wrote,
    }
    path = settings.lineage_log
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(event, default=str, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return event


def read_lineage(settings: Settings, *, stage: str | None = None) -> list[dict[str, Any]]:
    path: Path = settings.lineage_log
    if not path.exists():
        return []
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in events if stage is None or e["stage"] == stage]
