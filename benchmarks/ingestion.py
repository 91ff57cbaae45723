"""Ingestion through the DAG at full size: how long ``ingest_transactions`` takes per day as the
history grows, and how much of it is the GX gate (``validate_batch``).

Targets: ``validate_batch`` <= 0.3 s per day at day 180; 183 daily files ingested through the DAG
in <= 2 min.

Steps: simulate ``--days`` days at the handbook's size (5,000 cards, 10,000 terminals), land one
file per day, then run ``ingest_transactions`` once per day through ``dag.test()`` in one process
(as ``make demo`` and ``fraudflow ingest`` do; the scheduler's LocalExecutor would start a
process per task, paying the imports and the GX context per task instead). Task durations come
from Airflow's metadata DB.

    .venv/bin/python benchmarks/ingestion.py [--days 183] [--home DIR]
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


if __name__ == "__main__":
    main()
