"""The demo's closing summary: stages, data, drift checks, the registry, rollout decisions, where to look."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from fraudflow import tags
from fraudflow.deployment.decisions import read_decisions
from fraudflow.settings import Settings

if TYPE_CHECKING:
    from fraudflow.demo.closed_loop import DemoConfig, DemoReport


def print_summary(settings: Settings, config: DemoConfig, report: DemoReport, stats: dict, console: Console) -> None:
    """Everything the demo did, as tables, then the verdict line."""
    console.rule("summary")
    console.print(_stages_table(report))
    facts = Table(show_header=False, title="data")
    facts.add_row("simulated", f"{stats['transactions']:,} transactions ({stats['fraud_rate_pct']}% fraud)")
    facts.add_row("history", f"{config.start} .. {config.history_end}")
    facts.add_row("drifted days", f"{config.drift_start} .. {config.end}")
    console.print(facts)
    if report.monitoring_summary:
        console.print(_checks_table(json.loads(Path(report.monitoring_summary).read_text())))
    _print_models(settings, console)
    console.print(_decisions_table(settings))
    console.print(_paths_table(settings, report))
    verdict = "[green]demo OK[/]" if report.ok else "[red]demo FAILED: see the stages above[/]"
    console.print(f"{verdict}: retrained model {report.retrain_outcome or '-'}")
    console.print(f"drilled bad challenger: {report.drill_outcome or '-'}")


def _stages_table(report: DemoReport) -> Table:
    table = Table(title="stages")
    for col in ("stage", "seconds", "outcome"):
        table.add_column(col, justify="right" if col == "seconds" else "left")
    for record in report.stages:
        table.add_row(record.name, f"{record.seconds:.1f}", record.outcome)
    table.add_row("[bold]total[/]", f"{sum(r.seconds for r in report.stages):.1f}", "")
    return table


def _checks_table(summary: dict) -> Table:
    checks = Table(title=f"monitor_drift {summary['as_of']} vs champion v{summary['champion_version']}")
    for col in ("check", "result", "detail"):
        checks.add_column(col)
    for key in ("input_drift", "prediction_drift", "performance"):
        check = summary[key]
        checks.add_row(key, "passed" if check["passed"] else "[red]FAILED[/]", check["reason"])
    return checks


def _decisions_table(settings: Settings) -> Table:
    decisions = Table(title="deployment decisions (serving/decisions.jsonl)")
    for col in ("stage", "version", "result"):
        decisions.add_column(col)
    for d in read_decisions(settings):
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
    return decisions


def _paths_table(settings: Settings, report: DemoReport) -> Table:
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
    return paths


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
            t.get(tags.CANDIDATE, "?"),
            t.get(tags.REASON, "?")[:60],
            t.get(tags.AUC_ROC, "?"),
            t.get(tags.AVERAGE_PRECISION, "?"),
            t.get(tags.CARD_PRECISION_AT_100, "?"),
            t.get(tags.ROLLOUT, "-"),
        )
    if not versions:
        table.add_row("(none)", "-", "-", "gate refused every candidate", "-", "-", "-", "-")
    console.print(table)
    for v in versions:
        card = (v.tags or {}).get(tags.MODEL_CARD)
        if card:
            console.print(f"model card v{v.version}: {card}")
