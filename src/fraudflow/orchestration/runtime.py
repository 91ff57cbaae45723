"""Run fraudflow's DAGs in-process against the fraudflow home's Airflow (SQLite by default).

The CLI's ``ingest`` and ``demo`` use ``dag.test()``: real Airflow task execution and
metadata, without a scheduler to start. The runs land in the same AIRFLOW_HOME that
``make airflow`` serves, so the UI shows them afterwards.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel

from fraudflow.settings import Profile, Settings, repo_root


class TaskOutcome(BaseModel):
    task_id: str
    state: str
    tries: int
    seconds: float | None


class DagRunOutcome(BaseModel):
    dag_id: str
    run_id: str
    logical_date: dt.datetime | None
    state: str
    failed_tasks: list[str]
    seconds: float
    tasks: list[TaskOutcome] = []


def airflow_env(settings: Settings) -> dict[str, str]:
    """Environment that points Airflow at this repo's DAGs and the fraudflow home."""
    root = repo_root()
    env = {
        "AIRFLOW_HOME": str(settings.airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(root / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "FRAUDFLOW_HOME": str(settings.root),
    }
    if settings.profile is Profile.production:
        env |= {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": settings.postgres_database("airflow", "postgresql+psycopg2"),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CELERY__BROKER_URL": settings.redis_database(0),
            "AIRFLOW__CELERY__RESULT_BACKEND": settings.postgres_database("airflow", "db+postgresql+psycopg2"),
        }
        if settings.airflow_api_url:
            env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"{settings.airflow_api_url.rstrip('/')}/execution/"
        if settings.airflow_jwt_secret:
            env["AIRFLOW__API_AUTH__JWT_SECRET"] = settings.airflow_jwt_secret
    return env


def prepare_airflow(settings: Settings) -> None:
    """Export the Airflow environment into this process and migrate the metadata DB once.

    Must run before anything imports ``airflow``: Airflow reads its config at import.
    """
    if "airflow" in sys.modules and os.environ.get("AIRFLOW_HOME") != str(settings.airflow_home):
        raise RuntimeError("airflow was imported before prepare_airflow(); its config points elsewhere")
    os.environ.update(airflow_env(settings))
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    marker = settings.airflow_home / ".fraudflow-migrated"
    if not marker.exists():
        airflow_bin = Path(sys.executable).with_name("airflow")
        subprocess.run([str(airflow_bin), "db", "migrate"], check=True, capture_output=True, env=os.environ.copy())
        marker.touch()


@contextmanager
def output_to(logfile: Path) -> Iterator[None]:
    """Send this process's stdout/stderr (file descriptors, so Airflow's loggers too) to a file."""
    logfile.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with logfile.open("ab") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def load_dag(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    dag = bag.get_dag(dag_id)
    if dag is None:
        raise KeyError(f"no DAG {dag_id!r} in {os.environ['AIRFLOW__CORE__DAGS_FOLDER']}")
    return dag


def run_dag(
    dag, *, logical_date: dt.datetime | None = None, conf: dict | None = None, use_executor: bool = False
) -> DagRunOutcome:
    """One ``dag.test()`` run; the outcome carries the state (dag.test does not raise).

    ``use_executor`` hands the tasks to the configured executor (the production profile's
    CeleryExecutor: real ``airflow celery worker`` processes run them) instead of this process.
    """
    started = time.perf_counter()
    # Airflow 3.3.2 bug: dag.test() of a DAG with a DeadlineAlert fails once the run succeeds
    # (DagRun.update_state looks the alerts up by id but gets their serialized dicts:
    # "'dict' object has no attribute 'hex'"; tests/test_dag_test_deadline_bug.py shows it).
    # Deadlines are the scheduler's to check, and dag.test() has none: run without them.
    dag.deadline = None
    from fraudflow.orchestration.task_logs import task_logs_for_ui

    with task_logs_for_ui(enabled=not use_executor):  # executors' workers write their own
        dr = dag.test(logical_date=logical_date, run_conf=conf, use_executor=use_executor)
    instances = dr.get_task_instances()
    failed = sorted(ti.task_id for ti in instances if ti.state == "failed")
    far_future = dt.datetime.max.replace(tzinfo=dt.UTC)
    tasks = [
        TaskOutcome(
            task_id=ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]",
            state=str(getattr(ti.state, "value", ti.state)),
            tries=ti.try_number or 0,
            seconds=round(ti.duration, 3) if ti.duration is not None else None,
        )
        for ti in sorted(instances, key=lambda ti: (ti.start_date or far_future, ti.task_id))
    ]
    return DagRunOutcome(
        dag_id=dag.dag_id,
        run_id=dr.run_id,
        logical_date=dr.logical_date,
        state=str(getattr(dr.state, "value", dr.state)),
        failed_tasks=failed,
        seconds=round(time.perf_counter() - started, 3),
        tasks=tasks,
    )


def as_logical_date(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


def run_queued(dag_id: str) -> list[DagRunOutcome]:
    """Play the scheduler for runs another DAG triggered: ``TriggerDagRunOperator`` leaves them
    queued, and without a scheduler nothing starts them.

    Each queued run is executed by ``dag.test()`` on its own logical date and conf. ``dag.test()``
    cannot adopt an existing run; it replaces the row that has the same logical date, so the UI
    then shows the run as a test run carrying the trigger's conf.
    """
    from airflow.models import DagRun
    from airflow.utils.state import DagRunState

    queued = DagRun.find(dag_id=dag_id, state=DagRunState.QUEUED)
    if not queued:
        return []
    dag = load_dag(dag_id)
    return [run_dag(dag, logical_date=run.logical_date, conf=dict(run.conf or {})) for run in queued]
