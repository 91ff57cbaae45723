"""``make demo``: the whole closed loop on embedded defaults, with progress and a summary.

Part one puts a first model in production: simulate, ingest every day through Airflow, build
features, train, gate, register, build the Bento, deploy. Part two lets the world change: new
days land with drift injected (bigger amounts, more night-time spending), the live service
answers a stream of their transactions, ``monitor_drift`` fails and triggers ``train_model``,
and the new challenger goes through the gate and the staged rollout (shadow, canary, then
promote or rollback), shown either way.

Each stage calls the same DAGs a scheduler would; the demo only drives them with
``dag.test()`` and plays the scheduler for the runs they trigger.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
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
    run_queued,
)
from fraudflow.settings import Settings

T = TypeVar("T")


class DemoConfig(BaseModel):
    start: dt.date = dt.date(2018, 4, 1)
    days: int = Field(90, ge=30)  # undrifted history before the first model
    drift_days: int = Field(21, ge=7)  # then this many drifted days (21: the retraining window sees them)
    amount_scale: float = Field(1.2, gt=0)  # 1.5 multiplies scenario-1 frauds (amount > 220) by ~40
    night_share: float = Field(0.2, ge=0, le=1)
    customers: int = 5000
    terminals: int = 10000
    seed: int = 0
    replay_per_day: int = Field(150, ge=1)  # live requests per drifted day sent to the service
    candidate_params: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @property
    def history_end(self) -> dt.date:
        return self.start + dt.timedelta(days=self.days - 1)

    @property
    def drift_start(self) -> dt.date:
        return self.start + dt.timedelta(days=self.days)

    @property
    def end(self) -> dt.date:
        return self.start + dt.timedelta(days=self.days + self.drift_days - 1)


class StageRecord(BaseModel):
    name: str
    seconds: float
    outcome: str


class DemoReport(BaseModel):
    ok: bool
    stages: list[StageRecord]
    dag_runs: list[DagRunOutcome]
    monitoring_summary: str | None = None
    failed_checks: list[str] = []
    triggered_training: int = 0
    retrain_outcome: str = ""  # promoted | rolled back | refused by the gate | ...


class _Stages:
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


def _ingested(outcomes: list[DagRunOutcome]) -> str:
    good = sum(o.state == "success" for o in outcomes)
    return f"{good}/{len(outcomes)} days published" if good == len(outcomes) else f"FAILED: {good}/{len(outcomes)}"


def run_dag_logged(settings: Settings, dag_id: str, *, logical_date: dt.datetime | None, conf: dict | None = None):
    """One DAG run through ``dag.test()``, Airflow's output to the demo log file."""
    with output_to(settings.root / "logs" / "airflow-dag-test.log"):
        return run_dag(load_dag(dag_id), logical_date=logical_date, conf=conf)


def _land_and_ingest(
    settings: Settings,
    frame: pd.DataFrame,
    stages: _Stages,
    console: Console,
    *,
    start: dt.date,
    end: dt.date,
    what: str,
) -> None:
    """Days ``start``..``end`` of the simulated world arrive as landing files, then go through
    ``ingest_transactions`` one logical date at a time."""
    from fraudflow.simulate import write_landing_files

    stages.run(
        f"land the {what}",
        lambda: write_landing_files(frame, settings.landing_dir, days=(start, end)),
        lambda w: f"{len(w)} daily files from {start}",
    )
    outcomes = stages.run(
        f"ingest_transactions x day ({what})",
        lambda: ingest_days(settings, start=start, end=end, console=console),
        _ingested,
    )
    stages.runs.extend(outcomes)


def _run_triggered(settings: Settings, dag_id: str) -> list[DagRunOutcome]:
    with output_to(settings.root / "logs" / "airflow-dag-test.log"):
        return run_queued(dag_id)


def replay_new_days(settings: Settings, url: str, *, start: dt.date, end: dt.date, per_day: int, seed: int):
    """A stream of the new days' transactions, in time order, answered by the live service."""
    from fraudflow.ingest import read_lake
    from fraudflow.rollout import replay_requests

    lake = read_lake(settings, start=start, end=end)
    sample = (
        lake.groupby(lake["TX_DATETIME"].dt.date, group_keys=False)
        .apply(lambda day: day.sample(n=min(per_day, len(day)), random_state=seed))
        .sort_values("TX_DATETIME")
    )
    return replay_requests(url, sample, token=settings.api_token)


def run_demo(settings: Settings, config: DemoConfig, console: Console) -> DemoReport:
    """The closed loop; returns what happened (``ok`` when every stage did what it should)."""
    from fraudflow.rollout import ServingProcess
    from fraudflow.simulate import (
        DriftSpec,
        SimulationConfig,
        simulate_transactions,
        summarise,
    )

    stages = _Stages(console)
    console.print(
        f"fraudflow demo: {config.days} days from {config.start}, then {config.drift_days} drifted days "
        f"(amounts x{config.amount_scale}, {config.night_share:.0%} moved to night); home {settings.root}"
    )
    console.print(f"Airflow task logs: {settings.root / 'logs' / 'airflow-dag-test.log'}")
    drift = DriftSpec(start=config.drift_start, amount_scale=config.amount_scale, night_share=config.night_share)
    world = SimulationConfig(
        start=config.start,
        days=config.days + config.drift_days,
        customers=config.customers,
        terminals=config.terminals,
        seed=config.seed,
        drift=drift,
    )

    # -- part one: a first model in production -------------------------------------------
    console.rule("part 1: history -> first model in production")
    frame = stages.run("simulate", lambda: simulate_transactions(world), lambda f: f"{len(f):,} transactions")
    stages.run("prepare Airflow (db migrate)", lambda: prepare_airflow(settings))
    _land_and_ingest(settings, frame, stages, console, start=config.start, end=config.history_end, what="history")
    first_day = as_logical_date(config.history_end)
    stages.dag("build_features (Feast)", lambda: run_dag_logged(settings, "build_features", logical_date=first_day))
    stages.dag(
        "train_model (gate, register challenger)",
        lambda: run_dag_logged(
            settings,
            "train_model",
            logical_date=first_day,
            conf={"reason": "demo: first model", "candidate_params": config.candidate_params},
        ),
    )
    stages.dag(
        "deploy_model (bento, first deployment)",
        lambda: run_dag_logged(settings, "deploy_model", logical_date=first_day, conf={"build_bento": True}),
    )

    service = stages.run(
        "start the scoring service (bentoml serve)",
        lambda: ServingProcess(settings).start(),
        lambda s: f"{s.url} ({s.log_path.name})",
    )
    saved_url = os.environ.get("FRAUDFLOW_SERVING_URL")
    os.environ["FRAUDFLOW_SERVING_URL"] = service.url  # deploy_model stages against this service
    report = DemoReport(ok=False, stages=stages.records, dag_runs=stages.runs)
    try:
        _drift_round(settings, config, frame, stages, service.url, report, console)
    finally:
        stages.run("stop the scoring service (flushes the prediction log)", service.stop, lambda rc: f"exit {rc}")
        if saved_url is None:
            os.environ.pop("FRAUDFLOW_SERVING_URL", None)
        else:
            os.environ["FRAUDFLOW_SERVING_URL"] = saved_url

    report.stages, report.dag_runs = stages.records, stages.runs
    report.ok = (
        all(o.state == "success" for o in stages.runs)
        and bool(report.failed_checks)
        and report.triggered_training == 1
        and bool(report.retrain_outcome)
    )
    _print_summary(settings, config, report, summarise(frame), console)
    return report


def _drift_round(
    settings: Settings,
    config: DemoConfig,
    frame: pd.DataFrame,
    stages: _Stages,
    url: str,
    report: DemoReport,
    console: Console,
) -> None:
    from fraudflow.registry import CHALLENGER, aliases

    console.rule("part 2: the world drifts -> monitor_drift -> retraining -> staged rollout")
    _land_and_ingest(
        settings, frame, stages, console, start=config.drift_start, end=config.end, what="new days (drift injected)"
    )
    last = as_logical_date(config.end)
    stages.dag("build_features (Feast)", lambda: run_dag_logged(settings, "build_features", logical_date=last))
    stages.run(
        "serve a stream of the new days' transactions",
        lambda: replay_new_days(
            settings, url, start=config.drift_start, end=config.end, per_day=config.replay_per_day, seed=config.seed
        ),
        lambda r: (
            f"{r.ok}/{r.sent} answered 200 ({r.sent / max(r.seconds, 1e-9):.0f} req/s)"
            if r.failed == 0
            else f"FAILED: {r.statuses}"
        ),
    )
    time.sleep(settings.prediction_flush_seconds + 0.5)  # the service's log buffer reaches disk
    monitored = stages.dag(
        "monitor_drift (Evidently)",
        lambda: run_dag_logged(settings, "monitor_drift", logical_date=last, conf={"as_of": config.end.isoformat()}),
    )
    summary = _monitoring_summary(settings, config.end, monitored.run_id)
    if summary:
        report.monitoring_summary = summary["summary_json"]
        report.failed_checks = summary["failed_checks"]
        for check in summary["failed_checks"]:
            console.print(f"   [yellow]failed check[/] {check}")
    retrained = stages.run(
        "train_model (triggered by monitor_drift)",
        lambda: _run_triggered(settings, "train_model"),
        lambda runs: f"{len(runs)} run(s): {', '.join(r.state for r in runs)}" if runs else "FAILED: none triggered",
    )
    stages.runs.extend(retrained)
    report.triggered_training = len(retrained)
    if not retrained:
        return
    challenger = aliases(settings).get(CHALLENGER)
    if challenger is None:
        report.retrain_outcome = "refused by the gate (champion keeps serving)"
        console.print(f"   [yellow]{report.retrain_outcome}[/]")
        return
    stages.dag(
        f"deploy_model v{challenger} (shadow, canary, decide)",
        lambda: run_dag_logged(settings, "deploy_model", logical_date=last, conf={"build_bento": True}),
    )
    report.retrain_outcome = _rollout_outcome(settings, challenger)
    console.print(f"   v{challenger}: {report.retrain_outcome}")


def _monitoring_summary(settings: Settings, as_of: dt.date, run_id: str) -> dict | None:
    from fraudflow.landing import safe_run_id

    path = settings.root / "monitoring" / as_of.isoformat() / safe_run_id(run_id) / "summary.json"
    return json.loads(path.read_text()) if path.exists() else None


def _decisions(settings: Settings) -> list[dict]:
    path = settings.serving_dir / "decisions.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _rollout_outcome(settings: Settings, version: str) -> str:
    for decision in reversed(_decisions(settings)):
        if decision.get("stage") == "promote" and str(decision.get("version")) == version:
            return "promoted to champion"
        if decision.get("stage") == "rollback" and str(decision.get("version")) == version:
            return f"rolled back: {decision.get('reason')}"
    return "no rollout decision recorded"


def _print_summary(settings: Settings, config: DemoConfig, report: DemoReport, stats: dict, console: Console) -> None:
    console.rule("summary")
    table = Table(title="stages")
    for col in ("stage", "seconds", "outcome"):
        table.add_column(col, justify="right" if col == "seconds" else "left")
    for record in report.stages:
        table.add_row(record.name, f"{record.seconds:.1f}", record.outcome)
    table.add_row("[bold]total[/]", f"{sum(r.seconds for r in report.stages):.1f}", "")
    console.print(table)

    facts = Table(show_header=False, title="data")
    facts.add_row("simulated", f"{stats['transactions']:,} transactions ({stats['fraud_rate_pct']}% fraud)")
    facts.add_row("history", f"{config.start} .. {config.history_end}")
    facts.add_row("drifted days", f"{config.drift_start} .. {config.end}")
    console.print(facts)

    if report.monitoring_summary:
        summary = json.loads(Path(report.monitoring_summary).read_text())
        checks = Table(title=f"monitor_drift {summary['as_of']} vs champion v{summary['champion_version']}")
        for col in ("check", "result", "detail"):
            checks.add_column(col)
        for key in ("input_drift", "prediction_drift", "performance"):
            check = summary[key]
            checks.add_row(key, "passed" if check["passed"] else "[red]FAILED[/]", check["reason"])
        console.print(checks)

    _print_models(settings, console)
    decisions = Table(title="deployment decisions (serving/decisions.jsonl)")
    for col in ("stage", "version", "result"):
        decisions.add_column(col)
    for d in _decisions(settings):
        version = d.get("challenger") or d.get("version") or ""
        check = d.get("check", {})
        result = (
            ("skipped: " if d.get("skipped") else "")
            + ("passed" if check.get("passed") else "FAILED")
            + f" - {check.get('reason', '')}"
            if check
            else str(d.get("reason") or d.get("aliases", ""))
        )
        decisions.add_row(d["stage"], str(version), result[:110])
    console.print(decisions)

    paths = Table(show_header=False, title="where to look")
    data_docs = settings.gx_dir / "uncommitted" / "data_docs" / "local_site" / "index.html"
    paths.add_row("Data Docs (GX)", str(data_docs))
    if report.monitoring_summary:
        folder = Path(report.monitoring_summary).parent
        paths.add_row("drift reports (Evidently)", f"{folder / 'input_drift.html'}\n{folder / 'prediction_drift.html'}")
        paths.add_row("monitoring summary", report.monitoring_summary)
    paths.add_row("model cards", str(settings.root / "model_cards"))
    paths.add_row("prediction log", str(settings.predictions_dir))
    paths.add_row("alerts", str(settings.root / "monitoring" / "alerts.jsonl"))
    paths.add_row("lineage", str(settings.lineage_log))
    paths.add_row("MLflow", f"{settings.mlflow_tracking_uri}")
    paths.add_row("Airflow UI", f"make airflow (AIRFLOW_HOME {settings.airflow_home})")
    paths.add_row("scoring API", "make serve (champion on http://127.0.0.1:3000)")
    console.print(paths)
    verdict = "[green]demo OK[/]" if report.ok else "[red]demo FAILED: see the stages above[/]"
    console.print(f"{verdict}: retrained model {report.retrain_outcome or '-'}")


def _print_models(settings: Settings, console: Console) -> None:
    from mlflow import MlflowClient

    from fraudflow.registry import MODEL_NAME, aliases

    current = aliases(settings)
    by_version: dict[str, list[str]] = {}
    for alias, version in current.items():
        by_version.setdefault(str(version), []).append(alias)
    client = MlflowClient(settings.mlflow_tracking_uri)
    versions = sorted(client.search_model_versions(f"name='{MODEL_NAME}'"), key=lambda v: int(v.version))
    table = Table(title=f"model registry: {MODEL_NAME}")
    for col in ("version", "aliases", "family", "why trained", "AUC ROC", "AP", "CP@100", "rollout"):
        table.add_column(col, overflow="fold")
    for v in versions:
        t = v.tags or {}
        table.add_row(
            str(v.version),
            ", ".join(by_version.get(str(v.version), [])) or "-",
            t.get("fraudflow.candidate", "?"),
            t.get("fraudflow.reason", "?")[:60],
            t.get("fraudflow.auc_roc", "?"),
            t.get("fraudflow.average_precision", "?"),
            t.get("fraudflow.card_precision_at_100", "?"),
            t.get("fraudflow.rollout", "-"),
        )
    if not versions:
        table.add_row("(none)", "-", "-", "gate refused every candidate", "-", "-", "-", "-")
    console.print(table)
    for v in versions:
        card = (v.tags or {}).get("fraudflow.model_card")
        if card:
            console.print(f"model card v{v.version}: {card}")
