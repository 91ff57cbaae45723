"""Every monitoring run as a run of one Evidently project, so drift reads as a time series.

Each ``monitor_drift`` run writes two Evidently snapshots (input drift, prediction drift),
timestamped with the day it judged. They are added to a local Evidently workspace under
``<home>/evidently`` whose project ``fraudflow drift`` has a dashboard of the drifted-input
count, the champion's score drift and each model input's drift score over time:
``make evidently`` (``evidently ui --workspace <home>/evidently``) serves it. The per-run HTML
reports stay the evidence of one decision; the workspace is the history.
"""

from __future__ import annotations

from pathlib import Path

from fraudflow.settings import Settings

PROJECT = "fraudflow drift"
_METRIC = "evidently:metric_v2:"


def workspace_dir(settings: Settings) -> Path:
    return settings.root / "evidently"


def _project(workspace, columns: list[str]):
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import line_plot_panel

    found = workspace.search_project(PROJECT)
    if found:
        return found[0]
    project = workspace.create_project(
        PROJECT, description="fraudflow's monitor_drift runs: the champion's inputs and scores against its training set"
    )
    project.dashboard.add_panel(
        line_plot_panel(
            title="Drifted model inputs (count)",
            values=[
                PanelMetric(
                    legend="drifted inputs",
                    metric=_METRIC + "DriftedColumnsCount",
                    metric_labels={"value_type": "count"},
                )
            ],
            size="half",
        )
    )
    project.dashboard.add_panel(
        line_plot_panel(
            title="Champion score drift",
            values=[PanelMetric(legend="score", metric=_METRIC + "ValueDrift", metric_labels={"column": "score"})],
            size="half",
        )
    )
    project.dashboard.add_panel(
        line_plot_panel(
            title="Input drift score per column",
            values=[PanelMetric(legend=c, metric=_METRIC + "ValueDrift", metric_labels={"column": c}) for c in columns],
            size="full",
        )
    )
    return project


def add_monitoring_snapshots(settings: Settings, snapshot_files: list[str], columns: list[str]) -> str:
    """Add the saved snapshots of one monitoring run to the workspace; returns the project id."""
    from evidently.core.report import Snapshot
    from evidently.ui.workspace import Workspace

    workspace = Workspace(str(workspace_dir(settings)))
    project = _project(workspace, columns)
    for path in snapshot_files:
        workspace.add_run(project.id, Snapshot.load(path))
    return str(project.id)
