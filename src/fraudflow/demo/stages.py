"""Named, timed demo stages and the in-process DAG runs they drive (``dag.test()``).

Airflow's own output goes to ``logs/airflow-dag-test.log`` under the fraudflow home, so the
terminal shows one line per stage.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import TypeVar

from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fraudflow.orchestration.runtime import (
    DagRunOutcome,
    as_logical_date,
    load_dag,
    output_to,
    prepare_airflow,
    run_dag,
    run_queued,
)
from fraudflow.settings import Settings

T = TypeVar("T")


class StageRecord(BaseModel):
    name: str
    seconds: float
    outcome: str


class Stages:
    """Runs named stages with a header line and a timing; keeps the records for the summary."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.records: list[StageRecord] = []
        self.runs: list[DagRunOutcome] = []

    def run(self, name: str, fn: Callable[[], T], outcome: Callable[[T], str] = lambda _: "ok") -> T:
        self.console.print(f"[bold]-> {name}[/]")
        started = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - started
        text = outcome(result)
        self.records.append(StageRecord(name=name, seconds=round(seconds, 1), outcome=text))
        colour = "green" if not text.startswith(("FAILED", "failed")) else "red"
        self.console.print(f"   [{colour}]{text}[/] in {seconds:.1f}s")
        return result

    def dag(self, name: str, fn: Callable[[], DagRunOutcome]) -> DagRunOutcome:
        outcome = self.run(name, fn, lambda o: o.state if o.state == "success" else f"FAILED: {o.failed_tasks}")
        self.runs.append(outcome)
        return outcome


def ingest_days(settings: Settings, *, start: dt.date, end: dt.date, console: Console) -> list[DagRunOutcome]:
    """Run ``ingest_transactions`` once per logical date, in order, with a progress bar.

    Airflow's own task logs go to ``logs/airflow-dag-test.log`` under the fraudflow home.
    """
    prepare_airflow(settings)
    log = settings.root / "logs" / "airflow-dag-test.log"
    days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    outcomes: list[DagRunOutcome] = []
    columns = (TextColumn("ingest {task.fields[day]}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("ingest", total=len(days), day="")
        with output_to(log):
            dag = load_dag("ingest_transactions")
            for day in days:
                progress.update(bar, day=day.isoformat())
                outcome = run_dag(dag, logical_date=as_logical_date(day))
                outcomes.append(outcome)
                if outcome.state != "success":
                    progress.console.print(f"[red]{day}: {outcome.state} (failed: {outcome.failed_tasks})[/]")
                progress.advance(bar)
    return outcomes


def run_dag_logged(settings: Settings, dag_id: str, *, logical_date: dt.datetime | None, conf: dict | None = None):
    """One DAG run through ``dag.test()``, Airflow's output to the demo log file."""
    with output_to(settings.root / "logs" / "airflow-dag-test.log"):
        return run_dag(load_dag(dag_id), logical_date=logical_date, conf=conf)


def run_triggered(settings: Settings, dag_id: str) -> list[DagRunOutcome]:
    with output_to(settings.root / "logs" / "airflow-dag-test.log"):
        return run_queued(dag_id)
