"""An append-only log of what each stage read and wrote, so any output traces to its inputs.

One JSON object a line under the fraudflow home. Appends are single ``write`` calls on an
``O_APPEND`` descriptor, so concurrent tasks never interleave half-lines.
"""

from __future__ import annotations

import datetime as dt
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
    from fraudflow.jsonlines import append_json_line

    append_json_line(settings.lineage_log, event)
    return event


def read_lineage(settings: Settings, *, stage: str | None = None) -> list[dict[str, Any]]:
    from fraudflow.jsonlines import read_json_lines

    events = read_json_lines(settings.lineage_log)
    return [e for e in events if stage is None or e["stage"] == stage]
