"""Drift check timing for a 7-day window at the handbook's scale (5,000 cards, ~9,700 tx/day).
Target: <= 15 s for the whole check.

Builds a home (75 simulated days, drift injected from day 68, a champion trained on days
32-38), then times ``monitor_champion`` on a clean and a drifted window, its phases one by one,
and one ``monitor_drift`` DAG run through Airflow (``dag.test``).

    .venv/bin/python benchmarks/drift.py [--repeat 3] [--customers 5000]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import sys
import time
from pathlib import Path

from _bench.env import use_home
from _bench.output import log, print_table
from _bench.timing import timed

START = dt.date(2018, 4, 1)
CLEAN, DRIFTED = START + dt.timedelta(days=67), START + dt.timedelta(days=74)  # as-of dates of the two windows


def build_home(settings, customers: int) -> None:
    """75 days (drift from day 68) in the lake, features, the online store materialized to the
    drifted window's end, and a champion trained on days 32-38 (run date day 52)."""
    from fraudflow import registry
    from fraudflow.demo.simulate import DriftSpec, SimulationConfig, simulate_transactions
    from fraudflow.features.compute import build_features
    from fraudflow.features.store import apply_feature_repo, materialize_online
    from fraudflow.orchestration.runtime import as_logical_date
    from fraudflow.schema import normalise_transactions
    from fraudflow.training.judge import judge_candidates
    from fraudflow.training.register import register_best
    from fraudflow.training.train import train_candidate
    from fraudflow.training.training_set import build_training_set
    from tests.helpers import publish_history

    world = SimulationConfig(
        days=75,
        customers=customers,
        terminals=2 * customers,
        drift=DriftSpec(start=START + dt.timedelta(days=68), amount_scale=1.2, night_share=0.2),
    )
    log(f"building the home in {settings.root} ({customers} cards, 75 days) ...")
    started = time.perf_counter()
    publish_history(settings, normalise_transactions(simulate_transactions(world)))
    build_features(settings)
    with contextlib.redirect_stdout(sys.stderr):  # Feast's progress: stdout keeps the table alone
        apply_feature_repo(settings)
        materialize_online(settings, end=as_logical_date(DRIFTED + dt.timedelta(days=1)))
    training_set = build_training_set(settings, run_date=START + dt.timedelta(days=52), run_id="bench", reason="bench")
    run = train_candidate(settings, candidate="xgboost", training_set=training_set, params={})
    decision = judge_candidates(settings, training_set=training_set, candidates=[run])
    register_best(settings, decision=decision, training_set=training_set, run_id="bench", reason="bench")
    registry.promote_challenger(settings)
    log(f"home ready in {time.perf_counter() - started:.0f}s")


def phases(settings, out: Path, repeat: int) -> list[tuple[str, float, str]]:
    """``monitor_champion``'s phases one by one on the drifted window, then the whole check on
    both windows: (phase, median seconds, note) rows."""
    from fraudflow import registry
    from fraudflow.monitoring.drift import (
        SCORE,
        check_input_drift,
        check_prediction_drift,
        load_reference,
        monitor_champion,
        monitoring_windows,
        score_frame,
        window_features,
    )

    champion = registry.version_by_alias(settings, registry.CHAMPION)
    windows = monitoring_windows(DRIFTED)
    rows = []
    seconds, (train_ref, test_ref) = timed(lambda: load_reference(champion), repeat)
    rows.append(("read the reference snapshot", seconds, f"{len(train_ref):,} train rows"))
    seconds, frame = timed(lambda: window_features(settings, windows.matured_start, windows.recent_end), repeat)
    rows.append(("Feast point-in-time join, 14 days", seconds, f"{len(frame):,} rows"))
    seconds, scores = timed(lambda: score_frame(champion, frame), repeat)
    rows.append(("champion scores the window (load + predict)", seconds, f"{len(scores):,} scores"))
    frame[SCORE] = scores
    recent = frame[frame["event_timestamp"].dt.date >= windows.recent_start]
    seconds, check = timed(lambda: check_input_drift(settings, train_ref, recent, out), repeat)
    rows.append(("Evidently input drift, 15 columns + HTML", seconds, f"{len(check.drifted)} drifted"))
    ref_scores = score_frame(champion, test_ref)
    seconds, check = timed(
        lambda: check_prediction_drift(settings, ref_scores, recent[SCORE].to_numpy(), "lake", out), repeat
    )
    rows.append(("Evidently prediction drift + HTML", seconds, check.reason))
    for label, as_of in (("clean", CLEAN), ("drifted", DRIFTED)):
        seconds, result = timed(lambda a=as_of: monitor_champion(settings, as_of=a, run_id="bench"), repeat)
        verdict = "passed" if result.passed else f"failed: {len(result.input_drift.drifted)} inputs drifted"
        rows.append((f"monitor_champion, {label} window (whole check)", seconds, verdict))
    return rows


def dag_run(settings, log_file: Path) -> tuple[str, float, str]:
    """``monitor_drift`` through Airflow (``dag.test``) on the clean window, then the drifted
    one (timed); Airflow's output goes to ``log_file``."""
    from fraudflow.orchestration.runtime import as_logical_date, load_dag, output_to, prepare_airflow, run_dag

    prepare_airflow(settings)
    with output_to(log_file):
        dag = load_dag("monitor_drift")
        run_dag(dag, logical_date=as_logical_date(CLEAN), conf={"as_of": CLEAN.isoformat(), "retrain": False})
        outcome = run_dag(
            dag, logical_date=as_logical_date(DRIFTED), conf={"as_of": DRIFTED.isoformat(), "retrain": False}
        )
    return "monitor_drift DAG run (dag.test, drifted)", outcome.seconds, outcome.state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--customers", type=int, default=5000)
    args = parser.parse_args()
    home = use_home(prefix="fraudflow-bench-drift-")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    from fraudflow.settings import get_settings

    settings = get_settings()
    build_home(settings, args.customers)
    out = home / "bench-phases"
    out.mkdir()
    rows = phases(settings, out, args.repeat)
    rows.append(dag_run(settings, home / "airflow-bench.log"))
    print_table(
        f"Drift check, 7-day window, {args.customers} cards (median of {args.repeat})",
        ("phase", "seconds", "note"),
        [(name, f"{secs:.2f}", note) for name, secs, note in rows],
        align="lrl",
        packages=("evidently", "feast", "apache-airflow", "mlflow", "xgboost-cpu"),
        note="target: whole check <= 15 s",
    )


if __name__ == "__main__":
    main()
