"""The ``fraudflow`` command: the same stage functions the DAGs call, for people and Make."""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from fraudflow.settings import get_settings

console = Console()


def _terminal_console() -> Console:
    """A console on a duplicate of the terminal's descriptor: while Airflow runs in-process
    its logs are sent to a file (fd-level), and progress must still reach the person."""
    return Console(file=os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1))


def _date(_ctx, _param, value):
    try:
        return dt.date.fromisoformat(value) if isinstance(value, str) else value
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """fraudflow: landing files -> validated lake -> features -> gated models -> staged serving."""


@main.command()
@click.option("--start", default="2018-04-01", callback=_date, show_default=True, help="First simulated day.")
@click.option("--days", default=183, show_default=True, type=click.IntRange(1))
@click.option("--customers", default=5000, show_default=True, type=click.IntRange(1))
@click.option("--terminals", default=10000, show_default=True, type=click.IntRange(1))
@click.option("--seed", default=0, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv"]), default="parquet", show_default=True)
@click.option("--write-from", callback=_date, default=None, help="Only write landing files from this day on.")
@click.option("--write-to", callback=_date, default=None, help="Only write landing files up to this day.")
@click.option("--drift-from", callback=_date, default=None, help="Inject drift into every day from this one on.")
@click.option("--drift-amount-scale", default=1.0, show_default=True, help="Multiply amounts by this.")
@click.option("--drift-night-share", default=0.0, show_default=True, help="Share of transactions moved to 0-6h.")
@click.option("--drift-terminals", type=int, default=None, help="Compromised terminals per day (default 2).")
@click.option("--drift-customers", type=int, default=None, help="Compromised cards per day (default 3).")
def simulate(start, days, customers, terminals, seed, fmt, write_from, write_to, drift_from, **drift) -> None:
    """Simulate transactions (Fraud Detection Handbook design) into the landing zone, one file per day."""
    from fraudflow.demo.simulate import (
        DriftSpec,
        SimulationConfig,
        simulate_transactions,
        summarise,
        write_landing_files,
    )

    settings = get_settings()
    spec = None
    if drift_from:
        spec = DriftSpec(
            start=drift_from,
            amount_scale=drift["drift_amount_scale"],
            night_share=drift["drift_night_share"],
            compromised_terminals_per_day=drift["drift_terminals"],
            compromised_customers_per_day=drift["drift_customers"],
        )
    config = SimulationConfig(start=start, days=days, customers=customers, terminals=terminals, seed=seed, drift=spec)
    with console.status("simulating transactions"):
        frame = simulate_transactions(config)
    window = None
    if write_from or write_to:
        window = (write_from or start, write_to or start + dt.timedelta(days=days - 1))
    with console.status("writing landing files") as status:
        written = write_landing_files(
            frame, settings.landing_dir, fmt=fmt, days=window, on_day=lambda d, _p: status.update(f"wrote {d}")
        )
    stats = summarise(frame)
    table = Table(title="simulated transactions")
    for key in stats:
        table.add_column(key, justify="right")
    table.add_row(*(str(v) for v in stats.values()))
    console.print(table)
    console.print(f"{len(written)} daily {fmt} files in {settings.landing_dir}")


@main.command()
@click.option("--start", callback=_date, required=True, help="First logical date to ingest.")
@click.option("--end", callback=_date, required=True, help="Last logical date to ingest (inclusive).")
def ingest(start, end) -> None:
    """Run the ingest_transactions DAG (real Airflow, dag.test) for each date of a range."""
    from fraudflow.demo.stages import ingest_days

    terminal = _terminal_console()
    outcomes = ingest_days(get_settings(), start=start, end=end, console=terminal)
    failed = [o for o in outcomes if o.state != "success"]
    terminal.print(f"ingested {len(outcomes) - len(failed)}/{len(outcomes)} days")
    sys.exit(1 if failed else 0)


@main.command()
@click.option("--days", default=90, show_default=True, type=click.IntRange(30), help="Undrifted days of history.")
@click.option("--drift-days", default=21, show_default=True, type=click.IntRange(7), help="Drifted days after them.")
@click.option("--customers", default=5000, show_default=True, type=click.IntRange(1))
@click.option("--terminals", default=10000, show_default=True, type=click.IntRange(1))
@click.option("--seed", default=0, show_default=True)
@click.option("--fresh", is_flag=True, help="Delete the fraudflow home first (make demo does).")
def demo(days, drift_days, customers, terminals, seed, fresh) -> None:
    """The whole closed loop on embedded defaults: history -> first model in production ->
    drifted days -> monitor_drift -> retraining -> staged rollout, then a summary."""
    import shutil

    from fraudflow.demo.closed_loop import DemoConfig, run_demo

    settings = get_settings()
    if fresh and settings.root.exists():
        from fraudflow.demo.live_commands import stop_everything

        stop_everything(settings)
        shutil.rmtree(settings.root)
    elif (settings.transactions_dir).exists():
        raise click.ClickException(f"{settings.root} already holds a run: use --fresh (make demo does) or make clean")
    config = DemoConfig(days=days, drift_days=drift_days, customers=customers, terminals=terminals, seed=seed)
    report = run_demo(settings, config, _terminal_console())
    sys.exit(0 if report.ok else 1)


@main.command("run")
@click.argument("dag_id")
@click.option("--date", "day", callback=_date, default=None, help="Logical date (default: none, as the UI's Trigger).")
@click.option("--conf", default="{}", show_default=True, help="Run conf as JSON.")
@click.option("--executor", is_flag=True, help="Run the tasks on the configured executor (Celery in production).")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as one JSON line instead.")
def run(dag_id, day, conf, executor, as_json) -> None:
    """Run one DAG now (dag.test on this home's Airflow): one line per task, then the run's
    state and the log file that holds Airflow's own output."""
    import json

    from fraudflow.orchestration.runtime import as_logical_date, load_dag, output_to, prepare_airflow, run_dag

    settings = get_settings()
    prepare_airflow(settings)
    log = settings.root / "logs" / f"fraudflow-run-{dag_id}.log"
    terminal = _terminal_console()
    with output_to(log):
        with terminal.status(f"running {dag_id} (Airflow's output: {log})"):
            outcome = run_dag(
                load_dag(dag_id),
                logical_date=as_logical_date(day) if day else None,
                conf=json.loads(conf),
                use_executor=executor,
            )
    if as_json:
        terminal.print(outcome.model_dump_json(), markup=False, highlight=False, soft_wrap=True)
    else:
        width = max((len(t.task_id) for t in outcome.tasks), default=0)
        for task in outcome.tasks:
            colour = {"success": "green", "failed": "red", "upstream_failed": "red"}.get(task.state, "yellow")
            took = f"{task.seconds:7.1f} s" if task.seconds is not None else "      -  "
            retries = f"  (try {task.tries})" if task.tries > 1 else ""
            terminal.print(f"  {task.task_id:<{width}}  [{colour}]{task.state:<15}[/] {took}{retries}")
        for alert in _failure_alerts(settings, outcome.run_id):
            terminal.print(f"  [red]{alert['details']['task_id']}:[/] {alert['details']['error']}", soft_wrap=True)
        colour = "green" if outcome.state == "success" else "red"
        terminal.print(
            f"{dag_id} [{colour}]{outcome.state}[/] in {outcome.seconds:.1f} s (run {outcome.run_id}); log: {log}",
            soft_wrap=True,
        )
    sys.exit(0 if outcome.state == "success" else 1)


def _failure_alerts(settings, run_id: str) -> list[dict]:
    """The reasons the run's tasks failed, as fraudflow's failure notifier recorded them."""
    from fraudflow.monitoring.alerts import read_alerts

    return [
        a
        for a in read_alerts(settings)
        if a.get("check", "").startswith("task_failed:") and a.get("details", {}).get("run_id") == run_id
    ]


@main.group()
def quarantine() -> None:
    """Files the validation gate rejected: list them, release a fixed one back to landing."""


@quarantine.command("list")
def quarantine_list() -> None:
    """Quarantined days with their reason and report paths."""
    from fraudflow.ingestion.quarantine import list_quarantined

    records = list_quarantined(get_settings())
    if not records:
        console.print("quarantine is empty")
        return
    table = Table(title="quarantined landing files")
    for col in ("day", "stage", "file", "reason", "data docs"):
        table.add_column(col, overflow="fold")
    for r in records:
        table.add_row(str(r.day), r.stage, r.file, r.summary[:300], "\n".join(r.data_docs) or "-")
    console.print(table)


@quarantine.command("release")
@click.argument("day", callback=_date)
def quarantine_release(day) -> None:
    """Move DAY's quarantined file back to landing so ingest_transactions re-validates it."""
    from fraudflow.ingestion.quarantine import ReleaseError, release_quarantined

    try:
        target = release_quarantined(get_settings(), day)
    except ReleaseError as exc:
        raise click.ClickException(str(exc)) from exc
    console.print(
        f"released to {target}; re-run ingest_transactions for {day} (e.g. fraudflow ingest --start {day} --end {day})"
    )


@main.command("data-docs")
def data_docs() -> None:
    """Rebuild the GX Data Docs index now (a passing gate refreshes it at most every
    FRAUDFLOW_DATA_DOCS_INDEX_SECONDS) and print where it is."""
    from fraudflow.ingestion.gx_checkpoints import refresh_data_docs_index

    for url in refresh_data_docs_index(get_settings()):
        console.print(url)


@main.command()
def rollback() -> None:
    """Restore the previous champion (MLflow aliases + the serving state) in one command."""
    from fraudflow.deployment.decisions import record_decision
    from fraudflow.registry import CHAMPION, recover_alias_moves, rollback_champion
    from fraudflow.serving.state import DeploymentState, state_lock, write_state_holding_lock

    settings = get_settings()
    # Under the state lock: a rollout's promote cannot interleave, and finds a newer revision
    # afterwards, so it stops instead of overwriting this rollback.
    with state_lock(settings):
        recover_alias_moves(settings)
        try:
            moved = rollback_champion(settings)
        except LookupError as exc:
            raise click.ClickException(str(exc)) from exc
        state = write_state_holding_lock(
            settings, DeploymentState(champion=moved[CHAMPION], reason="manual rollback (fraudflow rollback)")
        )
    record_decision(settings, {"stage": "manual rollback", "aliases": moved, "revision": state.revision})
    console.print(f"champion is now v{moved[CHAMPION]} (aliases: {moved}); services follow the new state")


@main.command()
@click.option("--port", default=3000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="0.0.0.0 to answer other machines/containers.")
def serve(port, host) -> None:
    """Serve the scoring API (bentoml serve, foreground) on the fraudflow home's deployment state."""
    from fraudflow.deployment.service_process import SERVICE_DIR, SERVICE_TARGET
    from fraudflow.registry import CHAMPION, aliases
    from fraudflow.serving.state import DeploymentState, read_state, write_state
    from fraudflow.settings import repo_root

    settings = get_settings()
    if read_state(settings).champion is None:
        champion = aliases(settings).get(CHAMPION)
        if champion is None:
            raise click.ClickException("no fraud-detector version has the alias 'champion' yet: run make demo first")
        write_state(settings, DeploymentState(champion=champion, reason="make serve"))
    os.environ.update({"FRAUDFLOW_HOME": str(settings.root), "BENTOML_HOME": str(settings.bentoml_home)})
    os.environ.setdefault("FRAUDFLOW_SERVING_WORKERS", "2")  # one per core on the 2-core reference machine
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    os.chdir(repo_root() / SERVICE_DIR)
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    os.execv(bentoml, [bentoml, "serve", SERVICE_TARGET, "--host", host, "--port", str(port)])


@main.command()
@click.argument("request_id")
@click.option("--json", "as_json", is_flag=True, help="Print the lineage as JSON.")
def explain(request_id, as_json) -> None:
    """Trace a logged prediction to its model, training run, data partitions and validations."""
    import json

    from fraudflow.monitoring.explain import explain_request

    try:
        lineage = explain_request(get_settings(), request_id)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(lineage, indent=2, default=str))
        return
    from rich.markup import escape

    r, m, t, d = lineage["request"], lineage["model"], lineage["training"], lineage["data"]
    console.print(  # the transaction id is the client's text: never rich markup
        f"[bold]request[/] {escape(str(r['request_id']))}: transaction {escape(str(r['transaction_id']))} "
        f"score {r['score']:.4f} "
        f"served by {r['served_by']}{' (degraded)' if r['degraded'] else ''}"
    )
    console.print(
        f"  -> model {m['name']} v{m['version']} ({m['family']}), gate {m['gate']}, MLflow run {m['mlflow_run']}"
    )
    console.print(
        f"  -> training run {t['mlflow_parent_run']}: train {t['training_window']}, test {t['test_window']}, "
        f"data fingerprint {str(t['data_fingerprint'])[:16]}"
    )
    parts = d["lake_partitions"]
    console.print(f"  -> lake partitions ({len(parts)}): {parts[0] if parts else '-'} .. {parts[-1] if parts else '-'}")
    console.print(
        f"  -> GX validations ({len(d['gx_validation_ids'])}): {', '.join(d['gx_validation_ids'][:2])}"
        f"{' ...' if len(d['gx_validation_ids']) > 2 else ''}"
    )
    console.print(f"  -> feature service {lineage['features']['feature_service']}")
    console.print(f"  model card: {m['model_card']}")


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def airflow(args) -> None:
    """Run the airflow CLI on fraudflow's home and DAGs (e.g. `fraudflow airflow standalone`)."""
    from fraudflow.orchestration.runtime import prepare_airflow

    settings = get_settings()
    prepare_airflow(settings)
    # standalone starts its components as `airflow ...` from PATH: put this venv's bin/ first.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    airflow_bin = str(Path(sys.executable).with_name("airflow"))
    os.execv(airflow_bin, [airflow_bin, *args])


def _register_commands() -> None:
    from fraudflow.demo.live_commands import down, feed, up
    from fraudflow.ui.commands import evidently_ui, mlflow_ui

    for command in (up, feed, down, mlflow_ui, evidently_ui):
        main.add_command(command)


_register_commands()

if __name__ == "__main__":
    main()
