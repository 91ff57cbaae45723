"""``fraudflow up`` / ``feed`` / ``down``: fraudflow live on today's clock under the real
scheduler (``make up`` / ``make down``), and stopping what a home started."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import click
from rich.console import Console

from fraudflow.settings import get_settings

console = Console()


def stop_everything(settings) -> list[str]:
    """Stop what ``fraudflow up`` and ``deploy_model`` started in this home; names what stopped."""
    from fraudflow.orchestration.live import stop_airflow

    stopped = []
    feeder = settings.root / "run" / "feeder.pid"
    if feeder.exists():
        try:
            os.killpg(int(feeder.read_text()), signal.SIGTERM)
            stopped.append("traffic feeder")
        except (ProcessLookupError, PermissionError, ValueError):
            pass
        feeder.unlink(missing_ok=True)
    stopped += [f"airflow {name}" for name in stop_airflow(settings)]
    from fraudflow.deployment.service_process import stop_recorded_service

    if stop_recorded_service(settings, warn=lambda message: console.print(f"[yellow]{message}[/]")):
        stopped.append("scoring service")
    return stopped


@click.command()
@click.option("--days", default=60, show_default=True, type=click.IntRange(35), help="Complete days up to yesterday.")
@click.option("--speedup", default=60.0, show_default=True, help="Feeder clock speed (1 = real time).")
@click.option("--port", default=8080, show_default=True, help="Airflow UI / API port (loopback).")
@click.option("--customers", default=5000, show_default=True, type=click.IntRange(1))
@click.option("--terminals", default=10000, show_default=True, type=click.IntRange(1))
@click.option("--seed", default=0, show_default=True)
def up(days, speedup, port, customers, terminals, seed) -> None:
    """fraudflow live on today's clock (a fresh home): land the last DAYS days, start Airflow's
    scheduler and UI, unpause every DAG, and feed simulated traffic to the scoring service."""
    import shutil
    import subprocess

    from fraudflow.demo.live import LiveWorld, land_history, world_file
    from fraudflow.demo.simulate import simulate_transactions
    from fraudflow.orchestration.live import start_airflow, unpause

    world = LiveWorld.ending_yesterday(days, customers=customers, terminals=terminals, seed=seed, speedup=speedup)
    os.environ.update(world.env())  # every process started below shares the world's dates
    settings = get_settings()
    if settings.root.exists():
        for name in stop_everything(settings):
            console.print(f"stopped the previous {name}")
        shutil.rmtree(settings.root)
    world_file(settings).parent.mkdir(parents=True, exist_ok=True)
    world_file(settings).write_text(world.model_dump_json(indent=2))
    with console.status(f"simulating {world.first} .. {world.yesterday} (+{world.ahead} days for the feeder)"):
        frame = simulate_transactions(world.simulation())
    with console.status("landing files") as status:
        landed = land_history(settings, world, frame, on_day=lambda d, _p: status.update(f"landed {d}"))
    console.print(f"landed {len(landed)} daily files in {settings.landing_dir} ({world.first} .. {world.yesterday})")
    with console.status("starting Airflow (api-server, scheduler, dag-processor; LocalExecutor)"):
        live = start_airflow(settings, port=port)
        unpause(
            settings,
            live,
            [
                "ingest_transactions",
                "build_features",
                "monitor_drift",
                "train_model",
                "deploy_model",
                "watch_serving",
                "review_quarantine",  # runs only when a quarantine asks for review (production profile)
                "backfill_transactions",  # runs only when someone triggers it
            ],
        )
    log = settings.root / "logs" / "feeder.log"
    feeder = subprocess.Popen(
        [str(Path(sys.executable).with_name("fraudflow")), "feed"],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    (settings.root / "run" / "feeder.pid").write_text(str(feeder.pid))
    passwords = settings.airflow_home / "simple_auth_manager_passwords.json.generated"
    console.print(
        f"""[bold green]fraudflow is up[/] on today's clock (home {settings.root})
  Airflow UI   {live.ui_url}  (user admin, password in {passwords})
  scoring API  {settings.serving_url} once deploy_model has deployed the first model
  feeder       {speedup:g}x real time, status in {settings.root / "run" / "feeder.json"}
What to watch in the UI: ingest_transactions catching up one run per day since {world.first}
(Grid view); build_features and monitor_drift starting from their Asset events; monitor_drift
triggering train_model for the first model once {settings.first_model_min_days} days are in;
deploy_model promoting it; then the feeder's traffic and watch_serving every 5 minutes.
Stop everything with: make down"""
    )


@click.command(hidden=True)
def feed() -> None:
    """The traffic feeder `fraudflow up` starts (reads <home>/run/world.json)."""
    from fraudflow.demo.live import LiveWorld, world_file
    from fraudflow.demo.live import feed as run_feeder

    settings = get_settings()
    world = LiveWorld.model_validate_json(world_file(settings).read_text())
    os.environ.update(world.env())
    status = run_feeder(get_settings(), world, url=settings.serving_url)
    console.print(status.model_dump_json())


@click.command()
def down() -> None:
    """Stop what `fraudflow up` (and deploy_model's autostart) started in this home."""
    stopped = stop_everything(get_settings())
    console.print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
