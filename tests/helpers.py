"""Shared test helpers (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative path -> digest): 'unchanged' made exact."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def day_rows(frame, day: dt.date):
    return frame[frame["TX_DATETIME"].dt.date == day]
