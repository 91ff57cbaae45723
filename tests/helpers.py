"""Shared test helpers (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

from fraudflow import tags
from fraudflow.demo.closed_loop import DemoConfig

# The closed loop the session runs once (conftest ``closed_loop``): 52 undrifted days, so the
# first model's training window (days 31-37) has full 30-day feature windows and the only drift
# monitor_drift can find is the injected one.
CLOSED_LOOP = DemoConfig(days=52, drift_days=21, customers=1000, terminals=2000, seed=3, replay_per_day=80)


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative path -> digest): 'unchanged' made exact."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def day_rows(frame, day: dt.date):
    return frame[frame["TX_DATETIME"].dt.date == day]


def publish_history(settings, frame, *, validate: bool = False) -> list[dt.date]:
    """Publish every day of ``frame`` to the lake through the ingestion stage functions
    (landing -> staging -> [GX gate] -> lake), without Airflow: for tests whose subject is
    downstream of ingestion (the DAG itself is tested in test_ingest_dag.py)."""
    from fraudflow.demo.simulate import write_landing_files
    from fraudflow.ingestion import publish
    from fraudflow.ingestion.landing import find_landing_file
    from fraudflow.ingestion.validation import validate_batch

    write_landing_files(frame, settings.landing_dir)
    days = sorted(frame["TX_DATETIME"].dt.date.unique())
    for day in days:
        staged = publish.load_landing_file(settings, day=day, source=find_landing_file(settings, day), run_id="test")
        validation_id = validate_batch(settings, staged=staged, run_id="test").validation_id if validate else None
        publish.publish_partition(settings, staged=staged, run_id="test", validation_id=validation_id)
    return days


def build_serving_home(settings, *, days: int = 30, customers: int = 500, terminals: int = 1000, seed: int = 11):
    """A home a scoring service can start on, built without Airflow: a published lake, the
    feature tables, Feast applied and materialized online, and a small XGBoost model registered
    and promoted to ``champion`` (its F1 threshold tagged as the DAG does). Returns the
    normalised transactions (lake rows) so tests can pick known customers and terminals."""
    from fraudflow.demo.simulate import SimulationConfig, simulate_transactions
    from fraudflow.features.compute import build_features
    from fraudflow.features.store import apply_feature_repo, materialize_online
    from fraudflow.schema import normalise_transactions
    from fraudflow.training.train import train_candidate
    from fraudflow.training.training_set import build_training_set

    world = SimulationConfig(days=days, customers=customers, terminals=terminals, seed=seed)
    last_day = world.start + dt.timedelta(days=days - 1)
    frame = normalise_transactions(simulate_transactions(world))
    publish_history(settings, frame, validate=False)
    build_features(settings)
    apply_feature_repo(settings)
    materialize_online(settings, end=dt.datetime.combine(last_day + dt.timedelta(days=1), dt.time()))
    training_set = build_training_set(settings, run_date=last_day, run_id="serving-test", reason="test")
    run = train_candidate(settings, candidate="xgboost", training_set=training_set, params={"n_estimators": 50})
    register_champion(settings, run, "xgboost")
    return frame


def register_champion(settings, run, candidate: str) -> None:
    """Register a trained candidate run and promote it to ``champion``, its F1 threshold tagged
    as the DAG does (no gate, no rollout: a fixture's first model)."""
    from fraudflow import registry

    registry.register_challenger(
        settings,
        model_uri=run.model_uri,
        run_id=run.run_id,
        tags={tags.CANDIDATE: candidate, tags.THRESHOLD: f"{run.threshold:.6f}"},
    )
    registry.promote_challenger(settings)


def run_trials_in_daemon(candidate: str, grid: list, fold_paths: list, queue) -> None:
    """``run_trials`` asked for two workers from inside a daemonic process (what a Celery
    prefork worker is); its result on ``queue``."""
    from fraudflow.training.trials import run_trials

    queue.put(run_trials(candidate, grid, fold_paths, workers=2))
