"""Ingestion through the DAG at full size: how long ``ingest_transactions`` takes per day as the
history grows, and how much of it is the GX gate (``validate_batch``).

Targets: ``validate_batch`` <= 0.3 s per day at day 180; 183 daily files ingested through the DAG
in <= 2 min.

Steps: simulate ``--days`` days at the handbook's size (5,000 cards, 10,000 terminals), land one
file per day, then run ``ingest_transactions`` once per day through ``dag.test()`` in one process
(as ``make demo`` and ``fraudflow ingest`` do; the scheduler's LocalExecutor would start a
process per task, paying the imports and the GX context per task instead). Task durations come
from Airflow's metadata DB.

    .venv/bin/python benchmarks/ingestion.py [--days 183] [--home DIR] [--backfill]

``--backfill``: the same landed files through one ``backfill_transactions`` run instead (one
task walks the days through the same gate); ``validate_batch`` per day is the gate's own time
from the run's report (no per-task Airflow overhead to subtract). A passing day's Data Docs
pages are built once after the walk, so that time is reported apart.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time

from _bench.env import use_home
from _bench.output import log, print_table


def task_durations(dag_id: str, task_id: str) -> dict[dt.date, float]:
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(TaskInstance).filter(TaskInstance.dag_id == dag_id, TaskInstance.task_id == task_id).all()
        return {ti.dag_run.logical_date.date(): float(ti.duration or 0.0) for ti in rows if ti.state == "success"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=183)
    parser.add_argument("--home", default=None)
    parser.add_argument("--backfill", action="store_true", help="one backfill_transactions run for all days")
    args = parser.parse_args()
    use_home(args.home, prefix="fraudflow-bench-ingestion-")
    from rich.console import Console

    from fraudflow.demo.simulate import SimulationConfig, simulate_transactions, write_landing_files
    from fraudflow.demo.stages import ingest_days
    from fraudflow.settings import get_settings

    settings = get_settings()
    world = SimulationConfig(days=args.days)
    last = world.start + dt.timedelta(days=args.days - 1)
    log(f"simulating {args.days} days (5,000 cards) under {settings.root}")
    frame = simulate_transactions(world)
    write_landing_files(frame, settings.landing_dir, days=(world.start, last))
    if args.backfill:
        backfill(settings, args.days)
        return
    log("ingesting one day per dag.test() run")
    started = time.perf_counter()
    outcomes = ingest_days(settings, start=world.start, end=last, console=Console(stderr=True))
    wall = time.perf_counter() - started
    failed = [o for o in outcomes if o.state != "success"]
    runs = {o.logical_date.date(): o.seconds for o in outcomes}
    validate = task_durations("ingest_transactions", "validate_batch")
    days = sorted(runs)

    def window(values: dict[dt.date, float], lo: int, hi: int) -> str:
        picked = [values[d] for d in days[lo:hi] if d in values]
        return f"{statistics.median(picked):.2f}" if picked else "-"

    spans = [
        ("days 1-10", 0, 10),
        ("days 85-94", 84, 94),
        (f"days {len(days) - 9}-{len(days)}", len(days) - 10, len(days)),
    ]
    print_table(
        f"ingest_transactions through dag.test(), {len(days)} days of ~9,600 transactions",
        ["days", "DAG run s (median)", "validate_batch s (median)"],
        [[name, window(runs, lo, hi), window(validate, lo, hi)] for name, lo, hi in spans],
        packages=["apache-airflow", "great-expectations"],
        note=f"whole run {wall:.0f} s ({wall / 60:.1f} min) for {len(days)} days, {len(failed)} failed; "
        "targets: validate_batch <= 0.3 s at day 180, 183 days <= 2 min",
    )


def backfill(settings, n_days: int) -> None:
    """All landed days through one ``backfill_transactions`` run (dag.test()); the gate's time
    per day from the task's report."""
    from fraudflow.demo.stages import run_dag_logged
    from fraudflow.orchestration.runtime import prepare_airflow

    prepare_airflow(settings)  # before airflow is imported: its config is the home's
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    log("ingesting every landed day in one backfill_transactions run")
    started = time.perf_counter()
    outcome = run_dag_logged(settings, "backfill_transactions", logical_date=None)
    wall = time.perf_counter() - started
    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter(XComModel.run_id == outcome.run_id, XComModel.task_id == "backfill_landed_days")
            .one()
        )
        report = XComModel.deserialize_value(row)
    gate = [report["validate_seconds"][d] for d in sorted(report["validate_seconds"])]

    def window(lo: int, hi: int) -> list[str]:
        picked = sorted(gate[lo:hi])
        if not picked:
            return ["-"] * 3
        quartile = len(picked) // 4
        return [f"{picked[quartile]:.3f}", f"{statistics.median(picked):.3f}", f"{picked[-1 - quartile]:.3f}"]

    spans = [("days 1-10", 0, 10), ("days 85-94", 84, 94), (f"days {len(gate) - 9}-{len(gate)}", len(gate) - 10, None)]
    print_table(
        f"backfill_transactions through dag.test(): {n_days} days of ~9,600 transactions in one run",
        ["days", "validate_batch s: p25", "median", "p75"],
        [[name, *window(lo, hi if hi is not None else len(gate))] for name, lo, hi in spans],
        packages=["apache-airflow", "great-expectations"],
        note=f"run {outcome.state}: {len(report['published'])} days published, {len(report['quarantined'])} "
        f"quarantined; whole DAG run {wall:.0f} s ({wall / 60:.1f} min), the walk itself {report['seconds']:.0f} s "
        f"(of which the passing days' Data Docs, built once after it: {report['data_docs_seconds']:.1f} s); "
        "targets: validate_batch <= 0.3 s at day 180, 183 days <= 2 min",
    )


if __name__ == "__main__":
    main()
