"""``fraudflow mlflow-ui`` / ``evidently-ui`` (``make mlflow`` / ``make evidently``): the other two
UIs a user of fraudflow opens, on the home's own stores.

MLflow's UI shows the runs, the registry (aliases, tags, and each version's model card as its
rendered description); Evidently's shows the ``fraudflow drift`` project, every monitoring run
plotted over the days it judged (``fraudflow.monitoring.workspace``). The fraudflow page in the
Airflow UI links its MLflow runs to ``FRAUDFLOW_MLFLOW_UI_URL`` (this command's default port).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

import click

from fraudflow.settings import get_settings


def _exec(tool: str, args: list[str]) -> None:
    binary = str(Path(sys.executable).with_name(tool))
    click.echo(f"{tool} {' '.join(args)}")
    os.execv(binary, [binary, *args])


@click.command("mlflow-ui")
def mlflow_ui() -> None:
    """MLflow's UI on the home's tracking store (FRAUDFLOW_MLFLOW_UI_URL, default :5000)."""
    settings = get_settings()
    if settings.mlflow_server_url:
        raise click.ClickException(
            f"the production profile's MLflow server already serves its UI: {settings.mlflow_server_url}"
        )
    url = urlsplit(settings.mlflow_ui_url)
    _exec(
        "mlflow",
        [
            "ui",
            "--backend-store-uri",
            settings.mlflow_tracking_uri,
            "--host",
            url.hostname or "127.0.0.1",
            "--port",
            str(url.port or 5000),
        ],
    )


@click.command("evidently-ui")
@click.option("--port", default=8000, show_default=True)
def evidently_ui(port: int) -> None:
    """Evidently's UI on the home's workspace: drift over the monitored days."""
    from fraudflow.monitoring.workspace import workspace_dir

    folder = workspace_dir(get_settings())
    if not folder.is_dir():
        raise click.ClickException(f"no Evidently workspace at {folder} yet: run monitor_drift first (make demo)")
    _exec("evidently", ["ui", "--workspace", str(folder), "--host", "127.0.0.1", "--port", str(port)])
