"""fraudflow's append-only logs (alerts, rollout decisions, lineage) are JSON lines; a process
killed mid-append (or a full disk) leaves a torn last line. Readers skip a line that does not
parse, with a warning naming the file and line, and keep working: one torn record must not stop
every later alert, the fraudflow page or ``watch_serving``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    """Every record of ``path`` (none if it does not exist), torn lines skipped with a warning."""
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            log.warning("%s line %d is not a complete JSON record (torn write?): skipped: %.200r", path, number, line)
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            log.warning("%s line %d is not a JSON object: skipped", path, number)
    return records


def append_json_line(path: Path, record: dict[str, Any]) -> None:
    """Append ``record`` as one line with a single ``O_APPEND`` write (concurrent writers do not
    interleave). If the file ends in a torn line, the record starts on a new line so it is not
    swallowed by the fragment."""
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, default=str, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        os.write(fd, line)
    finally:
        os.close(fd)
