"""The prediction log: every answered request, for drift monitoring, shadow/canary checks and audit.

Requests are buffered in memory and flushed as date-partitioned parquet
(``predictions/date=YYYY-MM-DD/part-<time>-<pid>-<n>.parquet``) when the buffer fills, when
``flush_seconds`` have passed, and on shutdown, so a clean stop loses nothing. Each file is
written to a hidden temp name and renamed, so readers never see half a file; temp files a
killed process left behind are removed when the next log opens.

The request thread only appends: with the background flusher running, a full buffer wakes it
instead of writing on the request path (a synchronous flush of 100 rows cost the request that
triggered it 11-18 ms, the service's p99 at 200 req/s). Files are written with one fixed Arrow
schema (:data:`SCHEMA`), built column by column without pandas (3 ms per 100 rows, not 12):
every file has the same column types whatever its rows hold.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fraudflow.layout import PART_GLOB, PARTITION_GLOB, part_file_name, part_files, partition_dir

log = logging.getLogger(__name__)

SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("logged_at", pa.timestamp("ns", tz="UTC")),
        ("endpoint", pa.string()),
        ("transaction_id", pa.string()),
        ("tx_datetime", pa.timestamp("ns")),  # naive UTC, as the request validator leaves it
        ("customer_id", pa.string()),
        ("terminal_id", pa.string()),
        ("tx_amount", pa.float64()),
        ("features", pa.string()),  # JSON of the 15 model inputs used
        ("served_by", pa.string()),
        ("model_version", pa.string()),
        ("score", pa.float64()),
        ("is_fraud", pa.bool_()),
        ("champion_version", pa.string()),
        ("champion_score", pa.float64()),
        ("challenger_version", pa.string()),
        ("challenger_score", pa.float64()),
        ("challenger_error", pa.string()),
        ("challenger_is_fraud", pa.bool_()),
        ("champion_latency_ms", pa.float64()),
        ("challenger_latency_ms", pa.float64()),
        ("latency_ms", pa.float64()),
        ("degraded", pa.bool_()),
        ("degraded_reason", pa.string()),
    ]
)
COLUMNS = SCHEMA.names
_TMP = re.compile(r"^\.part-\d+T\d+-(\d+)-\d+\.parquet\.tmp$")


class PredictionLog:
    """Thread-safe buffer of prediction records, flushed to parquet under ``folder``."""

    def __init__(self, folder: Path, *, max_rows: int = 2000, flush_seconds: float = 5.0) -> None:
        self.folder = Path(folder)
        self.max_rows = max_rows
        self.flush_seconds = flush_seconds
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()  # file numbering and writes, one flush at a time
        self._last_flush = time.monotonic()
        self._files = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._flusher: threading.Thread | None = None
        remove_stale_temp_files(self.folder)

    def start_background_flush(self) -> None:
        """Flush every ``flush_seconds``, or as soon as the buffer fills, on a thread of its own
        (a quiet service still gets its last answers on disk within seconds, not at shutdown)."""

        def loop() -> None:
            while not self._stop.is_set():
                self._wake.wait(self.flush_seconds)
                self._wake.clear()
                try:
                    self.flush()
                except Exception:  # a full disk must not end the flusher: the rows stay buffered
                    log.exception("prediction log flush failed; retrying in %s s", self.flush_seconds)

        self._flusher = threading.Thread(target=loop, daemon=True, name="prediction-log-flush")
        self._flusher.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._flusher is not None:
            self._flusher.join(timeout=self.flush_seconds + 5)
        self.flush()

    def append(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._rows.append(record)
            due = len(self._rows) >= self.max_rows or time.monotonic() - self._last_flush >= self.flush_seconds
        if not due:
            return
        if self._flusher is not None and self._flusher.is_alive():
            self._wake.set()  # never write on the request path
        else:
            self.flush()

    def flush(self) -> list[Path]:
        """Write everything buffered (one file per logged date); return the files written. Rows
        whose write failed go back to the buffer."""
        with self._write_lock:
            with self._lock:
                rows, self._rows = self._rows, []
                self._last_flush = time.monotonic()
            if not rows:
                return []
            try:
                return self._write(rows)
            except Exception:
                with self._lock:
                    self._rows[:0] = rows
                raise

    def _write(self, rows: list[dict[str, Any]]) -> list[Path]:
        by_day: dict[dt.date, list[dict[str, Any]]] = {}
        for row in rows:
            by_day.setdefault(_utc(row["logged_at"]).date(), []).append(row)
        written = []
        for day, part in sorted(by_day.items()):
            folder = partition_dir(self.folder, day)
            folder.mkdir(parents=True, exist_ok=True)
            self._files += 1
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
            target = folder / part_file_name(stamp, os.getpid(), self._files)
            tmp = folder / f".{target.name}.tmp"
            pq.write_table(arrow_table(part), tmp)
            os.replace(tmp, target)
            written.append(target)
        return written


def _utc(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.UTC) if value.tzinfo else value.replace(tzinfo=dt.UTC)


def arrow_table(rows: list[dict[str, Any]]) -> pa.Table:
    """``rows`` as a table of :data:`SCHEMA` (missing keys are nulls; feature dicts as JSON)."""
    columns = {name: [row.get(name) for row in rows] for name in COLUMNS}
    columns["features"] = [json.dumps(f) if isinstance(f, dict) else f for f in columns["features"]]
    columns["tx_datetime"] = [
        t.astimezone(dt.UTC).replace(tzinfo=None) if isinstance(t, dt.datetime) and t.tzinfo else t
        for t in columns["tx_datetime"]
    ]
    return pa.table(columns, schema=SCHEMA)


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the hidden temp files of writers that died mid-write (their pid is gone)."""
    removed = []
    for tmp in Path(folder).glob(f"{PARTITION_GLOB}/.part-*.parquet.tmp"):
        match = _TMP.match(tmp.name)
        if match and not _alive(int(match.group(1))):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_predictions(folder: Path, *, since: dt.datetime | None = None) -> pd.DataFrame:
    """All logged predictions (optionally those logged at or after ``since``)."""
    files = part_files(Path(folder), PART_GLOB)
    if not files:
        return pd.DataFrame(columns=COLUMNS)
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    if since is not None:
        frame = frame[pd.to_datetime(frame["logged_at"], utc=True) >= pd.Timestamp(since)]
    return frame.reset_index(drop=True)
