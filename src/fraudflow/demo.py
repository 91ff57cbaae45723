"""``make demo``: the main job end to end on embedded defaults, with progress and a summary.

Each stage here calls the same functions and DAGs a production deployment runs; the demo
only supplies simulated data and drives Airflow with ``dag.test()`` instead of a scheduler.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import TypeVar

from pydantic import BaseModel, Field
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fraudflow.orchestration.runtime import (
    DagRunOutcome,
    as_logical_date,
    load_dag,
    output_to,
    prepare_airflow,
    run_dag,
)
from fraudflow.settings import Settings

T = TypeVar("T")


class DemoConfig(BaseModel):
    start: dt.date = dt.date(2018, 4, 1)
    days: int = Field(90, ge=2)
    customers: int = 5000
    terminals: int = 10000
    seed: int = 0


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
    console.print(f"Airflow task logs: {log}")
    return outcomes


def run_dag_logged(settings: Settings, dag_id: str, *, logical_date: dt.datetime, conf: dict | None = None):
    """One DAG run through ``dag.test()``, Airflow's output to the demo log file."""
    log = settings.root / "logs" / "airflow-dag-test.log"
    with output_to(log):
        return run_dag(load_dag(dag_id), logical_date=logical_date, conf=conf)


def _timed(timings: dict[str, float], name: str, console: Console, fn: Callable[[], T]) -> T:
    console.print(f"[bold]-> {name}[/]")
    started = time.perf_counter()
    result = fn()
    timings[name] = time.perf_counter() - started
    console.print(f"   done in {timings[name]:.1f}s")
    return result


def run_demo(settings: Settings, config: DemoConfig, console: Console) -> bool:
    """Simulate ``config.days`` days, ingest each through Airflow, and print a summary."""
    from fraudflow.ingest import list_partitions, read_lake
    from fraudflow.simulate import SimulationConfig, simulate_transactions, summarise, write_landing_files

    timings: dict[str, float] = {}
    end = config.start + dt.timedelta(days=config.days - 1)
    console.print(f"fraudflow demo: {config.days} days from {config.start}, home {settings.root}")

    sim = SimulationConfig(
        start=config.start, days=config.days, customers=config.customers, terminals=config.terminals, seed=config.seed
    )
    frame = _timed(timings, "simulate", console, lambda: simulate_transactions(sim))
    _timed(timings, "write landing files", console, lambda: write_landing_files(frame, settings.landing_dir))
    _timed(timings, "prepare airflow (db migrate)", console, lambda: prepare_airflow(settings))
    outcomes = _timed(
        timings,
        "ingest (Airflow)",
        console,
        lambda: ingest_days(settings, start=config.start, end=end, console=console),
    )

    last = as_logical_date(end)
    features = _timed(
        timings,
        "build features + Feast (Airflow)",
        console,
        lambda: run_dag_logged(settings, "build_features", logical_date=last),
    )
    training = _timed(
        timings,
        "train_model (Airflow)",
        console,
        lambda: run_dag_logged(settings, "train_model", logical_date=last, conf={"reason": "demo"}),
    )

    deploy = _timed(
        timings,
        "deploy_model (Airflow)",
        console,
        lambda: run_dag_logged(settings, "deploy_model", logical_date=last, conf={"build_bento": True}),
    )
    outcomes_all = [*outcomes, features, training, deploy]

    lake = read_lake(settings, start=config.start, end=end)
    stats = summarise(frame)
    ok = all(o.state == "success" for o in outcomes_all) and len(lake) == stats["transactions"]

    table = Table(title="fraudflow demo summary")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    for name, secs in timings.items():
        table.add_row(name, f"{secs:.1f}")
    console.print(table)

    facts = Table(show_header=False, title="data")
    facts.add_row("simulated transactions", f"{stats['transactions']:,} ({stats['fraud_rate_pct']}% fraud)")
    facts.add_row("days ingested", f"{sum(o.state == 'success' for o in outcomes)}/{len(outcomes)}")
    facts.add_row("lake partitions", str(len(list_partitions(settings))))
    facts.add_row("lake rows in window", f"{len(lake):,}")
    facts.add_row("lake", str(settings.transactions_dir))
    facts.add_row("lineage log", str(settings.lineage_log))
    facts.add_row("Airflow home (make airflow)", str(settings.airflow_home))
    facts.add_row("Data Docs", str(settings.root / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"))
    facts.add_row("MLflow", f"{settings.mlflow_tracking_uri}  (mlflow ui --backend-store-uri ...)")
    console.print(facts)
    _print_models(settings, console)
    console.print("[green]demo OK[/]" if ok else "[red]demo FAILED: see the runs above[/]")
    return ok


def _print_models(settings: Settings, console: Console) -> None:
    from fraudflow.registry import CHALLENGER, CHAMPION, aliases, version_by_alias

    current = aliases(settings)
    table = Table(title="model registry: fraud-detector")
    for col in ("alias", "version", "family", "AUC ROC", "AP", "CP@100", "gate"):
        table.add_column(col, no_wrap=True)
    cards = []
    for alias in (CHAMPION, CHALLENGER, "previous"):
        if alias not in current:
            continue
        v = version_by_alias(settings, alias)
        t = v.tags
        table.add_row(
            alias,
            v.version,
            t.get("fraudflow.candidate", "?"),
            t.get("fraudflow.auc_roc", "?"),
            t.get("fraudflow.average_precision", "?"),
            t.get("fraudflow.card_precision_at_100", "?"),
            t.get("fraudflow.gate", "?"),
        )
        cards.append(f"model card v{v.version}: {t.get('fraudflow.model_card', '-')}")
    if not current:
        table.add_row("(none)", "-", "-", "-", "-", "-", "gate refused every candidate")
    console.print(table)
    for line in cards:
        console.print(line)
