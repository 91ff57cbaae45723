"""Task logs of in-process runs (``dag.test()``) where the Airflow UI reads them.

``make demo``, ``fraudflow ingest`` and ``fraudflow run`` execute DAGs with ``dag.test()``.
In Airflow 3.3.2 that runs each task through
``airflow.sdk.execution_time.supervisor.run_task_in_process``, which (unlike the executors'
``supervise_task``) has no log path: nothing is written under ``[logging] base_log_folder``,
and the UI shows such a task's log as empty (it then asks a log server on port 8793 that does
not exist). :func:`task_logs_for_ui` wraps that call per task instance and tees the task's three
log sources (structlog loggers, stdlib logging, ``print``) into
``{base_log_folder}/{rendered log_filename_template}`` as the JSON lines a real supervisor writes
(``airflow.sdk.log.logging_processors(json_output=True)``). Console output is unchanged.

It patches a semi-private function: ``tests/test_closed_loop_ui.py`` reads such a log back through
the api-server, so an Airflow upgrade that moves it fails there, not silently.
"""

from __future__ import annotations

import io
import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import structlog

_EXCLUDED = ("airflow.api_fastapi", "httpx", "httpcore")  # the in-process Execution API server
_sink: Any = None  # structlog logger writing JSON lines to the current TI's log file
_busy = threading.local()  # re-entrancy guard
_LEVELS = {"exception": "error", "warn": "warning", "msg": "info", "fatal": "critical"}


def _emit(level: int | str, event: str, **kw: Any) -> None:
    sink = _sink
    if sink is None or getattr(_busy, "on", False) or str(kw.get("logger") or "").startswith(_EXCLUDED):
        return
    _busy.on = True
    try:
        if isinstance(level, str):
            level = logging.getLevelName(_LEVELS.get(level, level).upper())
        sink.log(level if isinstance(level, int) else logging.INFO, event, **kw)
    except Exception:
        pass  # never break the task because of log teeing
    finally:
        _busy.on = False


def _structlog_tee(logger: Any, method_name: str, event_dict: dict) -> dict:
    """First structlog processor: copy the raw event to the task file, pass it on unchanged."""
    if _sink is not None:
        ev = dict(event_dict)
        ev["logger"] = ev.pop("logger_name", None) or ev.get("logger") or getattr(logger, "name", None)
        _emit(method_name, str(ev.pop("event", "")), **ev)
    return event_dict


class _StdlibTee(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if _sink is None:
            return
        kw: dict[str, Any] = {
            "logger": record.name,
            "timestamp": datetime.fromtimestamp(record.created, tz=UTC),
        }
        if record.exc_info:
            kw["exc_info"] = record.exc_info
        _emit(record.levelno, record.getMessage(), **kw)


class _StreamTee(io.TextIOBase):
    """sys.stdout/sys.stderr wrapper: writes through, and logs print() lines as task.stdout/stderr."""

    def __init__(self, wrapped: Any, logger: str, level: int):
        self._wrapped, self._logger, self._level, self._buf = wrapped, logger, level, ""

    def write(self, s: str) -> int:
        n = self._wrapped.write(s)
        caller = sys._getframe(1).f_globals.get("__name__", "")
        # structlog's console writer / logging.StreamHandler output is already captured as events
        if _sink is not None and not caller.startswith(("structlog", "logging")):
            self._buf += s
            *lines, self._buf = self._buf.split("\n")
            for line in lines:
                _emit(self._level, line.rstrip("\r"), logger=self._logger)
        return n

    def flush_partial(self) -> None:
        if self._buf:
            _emit(self._level, self._buf, logger=self._logger)
            self._buf = ""

    def flush(self) -> None:
        self._wrapped.flush()

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding, buffer, ...
        return getattr(self._wrapped, name)


def _open_task_log(sdk_ti: Any) -> tuple[Any, Any]:
    """Open {base_log_folder}/{rendered template} exactly as FileTaskHandler._read will look for it."""
    from airflow.configuration import conf
    from airflow.models.taskinstance import TaskInstance
    from airflow.sdk.log import init_log_file, logging_processors
    from airflow.utils.log.file_task_handler import FileTaskHandler
    from airflow.utils.session import create_session

    with create_session() as session:
        ti = session.get(TaskInstance, sdk_ti.id)  # a UUID, not str
        handler = FileTaskHandler(base_log_folder=conf.get("logging", "base_log_folder"))
        relative = handler._render_filename(ti, sdk_ti.try_number, session=session)
    path = init_log_file(relative)  # mkdir + [logging] file_task_handler_new_*_permissions
    fh = path.open("ab")
    logger = structlog.wrap_logger(
        structlog.BytesLogger(fh), processors=logging_processors(json_output=True), logger_name="task"
    )
    return logger, fh


@contextmanager
def _capture(sdk_ti: Any) -> Iterator[None]:
    global _sink
    try:
        logger, fh = _open_task_log(sdk_ti)
    except Exception:
        logging.getLogger(__name__).exception("No UI log file for %s; running without it", sdk_ti.task_id)
        yield
        return
    out, err = sys.stdout, sys.stderr
    tees = [_StreamTee(out, "task.stdout", logging.INFO), _StreamTee(err, "task.stderr", logging.ERROR)]
    sys.stdout, sys.stderr = tees
    _sink = logger
    try:
        yield
    finally:
        for tee in tees:
            tee.flush_partial()
        _sink = None
        sys.stdout, sys.stderr = out, err
        fh.close()


@contextmanager
def task_logs_for_ui(enabled: bool = True) -> Iterator[None]:
    """Wrap dag.test(): each in-process task instance gets its UI-readable log file."""
    if not enabled:
        yield
        return
    import airflow.sdk.execution_time.supervisor as supervisor

    original = supervisor.run_task_in_process

    def run_task_in_process(ti, task, client=None):  # dag.py's _run_task looks it up per call
        with _capture(ti):
            return original(ti=ti, task=task, client=client)

    procs = structlog.get_config()["processors"]  # the live list cached loggers share
    handler = _StdlibTee()
    procs.insert(0, _structlog_tee)
    logging.getLogger().addHandler(handler)
    supervisor.run_task_in_process = run_task_in_process
    try:
        yield
    finally:
        supervisor.run_task_in_process = original
        logging.getLogger().removeHandler(handler)
        procs.remove(_structlog_tee)
