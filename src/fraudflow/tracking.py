"""MLflow setup shared by every stage that logs: one tracking URI and named experiments
whose artifacts live under the fraudflow home (local profile) or the server's root."""

from __future__ import annotations

import subprocess

from fraudflow.settings import Settings, repo_root

TRAINING_EXPERIMENT = "fraudflow-training"
MONITORING_EXPERIMENT = "fraudflow-monitoring"


def configure_mlflow(settings: Settings, experiment: str = TRAINING_EXPERIMENT) -> str:
    """Point MLflow at the settings' store and return the experiment id (created if needed)."""
    import mlflow

    if settings.mlflow_tracking_uri.startswith("sqlite:///"):
        settings.mlflow_artifacts_dir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        experiment_id = found.experiment_id
    else:
        location = None
        if settings.mlflow_tracking_uri.startswith("sqlite:///"):
            location = (settings.mlflow_artifacts_dir / experiment).as_uri()
        experiment_id = mlflow.create_experiment(experiment, artifact_location=location)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def git_commit() -> str:
    """The checkout's commit (with '-dirty' when it has local changes), or 'unknown'."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo_root(), capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo_root(), capture_output=True, text=True
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
