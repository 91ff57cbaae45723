"""The prediction log: every answered request, for drift monitoring, shadow/canary checks and audit.

Requests are buffered in memory and flushed as date-partitioned parquet
(``predictions/date=YYYY-MM-DD/part-<time>-<pid>-<n>.parquet``) when the buffer fills, when
``flush_seconds`` have passed, and on shutdown, so a clean stop loses nothing. Each file is
written to a hidden temp name and renamed, so readers never see half a file.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd

from fraudflow.layout import PART_GLOB, part_file_name, part_files, partition_dir

COLUMNS = [
    "request_id",
    "logged_at",
    "endpoint",
    "transaction_id",
    "tx_datetime",
    "customer_id",
    "terminal_id",
    "tx_amount",
    "features",  # JSON of the 15 model inputs used
    "served_by",
    "model_version",
    "score",
    "is_fraud",
    "champion_version",
    "champion_score",
    "challenger_version",
    "challenger_score",
    "challenger_error",
    "challenger_is_fraud",
    "champion_latency_ms",
    "challenger_latency_ms",
    "latency_ms",
    "degraded",
    "degraded_reason",
]


class PredictionLog:
    """Thread-safe buffer of prediction records, flushed to parquet under ``folder``."""

    def __init__(self, folder: Path, *, max_rows: int = 2000, flush_seconds: float = 5.0) -> None:
        self.folder = Path(folder)
        self.max_rows = max_rows
        self.flush_seconds = flush_seconds
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._last_flush = time.monotonic()
        self._files = 0
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None

    def start_background_flush(self) -> None:
        """Flush every ``flush_seconds`` even when no request arrives (a quiet service still
        gets its last answers on disk within seconds, not at shutdown)."""

        def loop() -> None:
            while not self._stop.wait(self.flush_seconds):
                self.flush()

        self._flusher = threading.Thread(target=loop, daemon=True, name="prediction-log-flush")
        self._flusher.start()

    def close(self) -> None:
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join(timeout=self.flush_seconds + 5)
        self.flush()

    def append(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._rows.append(record)
            due = len(self._rows) >= self.max_rows or time.monotonic() - self._last_flush >= self.flush_seconds
        if due:
            self.flush()

    def flush(self) -> list[Path]:
        """Write everything buffered (one file per logged date); return the files written."""
        with self._lock:
            rows, self._rows = self._rows, []
            self._last_flush = time.monotonic()
        if not rows:
            return []
        frame = pd.DataFrame(rows).reindex(columns=COLUMNS)
        frame["features"] = frame["features"].map(lambda f: json.dumps(f) if isinstance(f, dict) else f)
        written = []
        days = pd.to_datetime(frame["logged_at"], utc=True).dt.date
        for day, part in frame.groupby(days):
            folder = partition_dir(self.folder, day)
            folder.mkdir(parents=True, exist_ok=True)
            self._files += 1
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
            target = folder / part_file_name(stamp, os.getpid(), self._files)
            tmp = folder / f".{target.name}.tmp"
            part.to_parquet(tmp, index=False)
            os.replace(tmp, target)
            written.append(target)
        return written


def read_predictions(folder: Path, *, since: dt.datetime | None = None) -> pd.DataFrame:
    """All logged predictions (optionally those logged at or after ``since``)."""
    files = part_files(Path(folder), PART_GLOB)
    if not files:
        return pd.DataFrame(columns=COLUMNS)
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    if since is not None:
        frame = frame[pd.to_datetime(frame["logged_at"], utc=True) >= pd.Timestamp(since)]
    return frame.reset_index(drop=True)
