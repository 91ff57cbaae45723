"""Drift check timing for a 7-day window at the handbook's scale (5,000 cards, ~9,700 tx/day).
Target: <= 15 s for the whole check.

Builds a home (75 simulated days, drift injected from day 68, a champion trained on days
32-38), then times ``monitor_champion`` on a clean and a drifted window, its phases one by one,
and one ``monitor_drift`` DAG run through Airflow (``dag.test``).

    .venv/bin/python benchmarks/drift.py [--repeat 3] [--customers 5000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table


def timed(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--customers", type=int, default=5000)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="fraudflow-bench-drift-"))
    os.environ["FRAUDFLOW_HOME"] = str(home)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    console = Console()

    from fraudflow import registry
    from fraudflow.feature_store import apply_feature_repo, materialize_online
    from fraudflow.features import build_features
    from fraudflow.monitoring import (
        SCORE,
        check_input_drift,
        check_prediction_drift,
        load_reference,
        monitor_champion,
        monitoring_windows,
        score_frame,
        window_features,
    )
    from fraudflow.orchestration.runtime import as_logical_date, load_dag, output_to, prepare_airflow, run_dag
    from fraudflow.release import judge_candidates, register_best
    from fraudflow.schema import normalise_transactions
    from fraudflow.settings import get_settings
    from fraudflow.simulate import DriftSpec, SimulationConfig, simulate_transactions
    from fraudflow.training import build_training_set, train_candidate
    from tests.helpers import publish_history

    settings = get_settings()
    start = dt.date(2018, 4, 1)
    world = SimulationConfig(
        days=75,
        customers=args.customers,
        terminals=2 * args.customers,
        drift=DriftSpec(start=start + dt.timedelta(days=68), amount_scale=1.2, night_share=0.2),
    )
    clean, drifted = start + dt.timedelta(days=67), start + dt.timedelta(days=74)
    console.print(f"building the home in {home} ({args.customers} cards, 75 days) ...")
    started = time.perf_counter()
    publish_history(settings, normalise_transactions(simulate_transactions(world)))
    build_features(settings)
    apply_feature_repo(settings)
    materialize_online(settings, end=as_logical_date(drifted + dt.timedelta(days=1)))
    training_set = build_training_set(settings, run_date=start + dt.timedelta(days=52), run_id="bench", reason="bench")
    run = train_candidate(settings, candidate="xgboost", training_set=training_set, params={})
    decision = judge_candidates(settings, training_set=training_set, candidates=[run])
    register_best(settings, decision=decision, training_set=training_set, run_id="bench", reason="bench")
    registry.promote_challenger(settings)
    console.print(f"home ready in {time.perf_counter() - started:.0f}s")

    champion = registry.version_by_alias(settings, registry.CHAMPION)
    windows = monitoring_windows(drifted)
    out = home / "bench-phases"
    out.mkdir()
    rows = []
    seconds, (train_ref, test_ref) = timed(lambda: load_reference(champion), args.repeat)
    rows.append(("read the reference snapshot", seconds, f"{len(train_ref):,} train rows"))
    seconds, frame = timed(lambda: window_features(settings, windows.matured_start, windows.recent_end), args.repeat)
    rows.append(("Feast point-in-time join, 14 days", seconds, f"{len(frame):,} rows"))
    seconds, scores = timed(lambda: score_frame(champion, frame), args.repeat)
    rows.append(("champion scores the window (load + predict)", seconds, f"{len(scores):,} scores"))
    frame[SCORE] = scores
    recent = frame[frame["event_timestamp"].dt.date >= windows.recent_start]
    seconds, check = timed(lambda: check_input_drift(settings, train_ref, recent, out), args.repeat)
    rows.append(("Evidently input drift, 15 columns + HTML", seconds, f"{len(check.drifted)} drifted"))
    ref_scores = score_frame(champion, test_ref)
    seconds, check = timed(
        lambda: check_prediction_drift(settings, ref_scores, recent[SCORE].to_numpy(), "lake", out), args.repeat
    )
    rows.append(("Evidently prediction drift + HTML", seconds, check.reason))
    for label, as_of in (("clean", clean), ("drifted", drifted)):
        seconds, result = timed(lambda a=as_of: monitor_champion(settings, as_of=a, run_id="bench"), args.repeat)
        verdict = "passed" if result.passed else f"failed: {len(result.input_drift.drifted)} inputs drifted"
        rows.append((f"monitor_champion, {label} window (whole check)", seconds, verdict))

    prepare_airflow(settings)
    with output_to(home / "airflow-bench.log"):
        dag = load_dag("monitor_drift")
        run_dag(dag, logical_date=as_logical_date(clean), conf={"as_of": clean.isoformat(), "retrain": False})
        outcome = run_dag(
            dag, logical_date=as_logical_date(drifted), conf={"as_of": drifted.isoformat(), "retrain": False}
        )
    rows.append(("monitor_drift DAG run (dag.test, drifted)", outcome.seconds, outcome.state))

    table = Table(title=f"drift check, 7-day window, {args.customers} cards (median of {args.repeat})")
    table.add_column("phase")
    table.add_column("seconds", justify="right")
    table.add_column("note")
    for name, secs, note in rows:
        table.add_row(name, f"{secs:.2f}", note)
    console.print(table)
    console.print("target: whole check <= 15 s")


if __name__ == "__main__":
    main()
