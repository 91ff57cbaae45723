"""Model quality on the handbook's baseline protocol, full-size simulated history, through
fraudflow's own pipeline: lake partitions -> daily feature tables -> Feast point-in-time
training set (fraud_detection_v1) -> candidates logged in MLflow -> test metrics.

Split (handbook): train 2018-07-25..07-31, 7-day delay, test 2018-08-08..08-14, known
compromised cards removed from the test set. Targets: XGBoost >= 0.862 / 0.639 / 0.273
(AUC / AP / CP@100, published XGBoost defaults); aim past AP 0.687 and CP@100 0.303.

    .venv/bin/python benchmarks/model_quality.py [--seed 0] [--gx]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=0, help="simulation seed")
    parser.add_argument("--gx", action="store_true", help="also run the GX landing gate on every day")
    parser.add_argument("--home", default=None, help="fraudflow home (default: a new temp dir)")
    args = parser.parse_args()
    os.environ["FRAUDFLOW_HOME"] = args.home or tempfile.mkdtemp(prefix="fraudflow-bench-quality-")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

    from fraudflow import ingest
    from fraudflow.feature_store import apply_feature_repo
    from fraudflow.features import build_features
    from fraudflow.landing import find_landing_file
    from fraudflow.model_card import HANDBOOK_BASELINES
    from fraudflow.settings import get_settings
    from fraudflow.simulate import SimulationConfig, simulate_transactions, write_landing_files
    from fraudflow.training import build_training_set, train_candidate, training_window

    settings = get_settings()
    timings: dict[str, float] = {}

    def stage(name, fn):
        print(f"-> {name}", flush=True)
        started = time.perf_counter()
        result = fn()
        timings[name] = time.perf_counter() - started
        print(f"   {timings[name]:.1f}s", flush=True)
        return result

    frame = stage("simulate 183 days", lambda: simulate_transactions(SimulationConfig(seed=args.seed)))
    stage("write landing files", lambda: write_landing_files(frame, settings.landing_dir))

    def publish_all():
        from fraudflow.validation import validate_batch

        for day in sorted(frame["TX_DATETIME"].dt.date.unique()):
            staged = ingest.load_landing_file(
                settings, day=day, source=find_landing_file(settings, day), run_id="bench"
            )
            vid = validate_batch(settings, staged=staged, run_id="bench").validation_id if args.gx else None
            ingest.publish_partition(settings, staged=staged, run_id="bench", validation_id=vid)

    stage("publish 183 partitions" + (" (with GX)" if args.gx else ""), publish_all)
    stage("build feature tables (backfill)", lambda: build_features(settings))
    stage("feast apply", lambda: apply_feature_repo(settings))
    window = training_window(dt.date(2018, 8, 14))
    ts = stage(
        "training set via Feast get_historical_features",
        lambda: build_training_set(
            settings, run_date=dt.date(2018, 8, 14), run_id="bench", reason="benchmark", window=window
        ),
    )
    runs = {
        name: stage(f"train {name}", lambda n=name: train_candidate(settings, candidate=n, training_set=ts))
        for name in ("xgboost", "mlp")
    }

    print(
        f"\ntrain {window.train_start}..{window.train_end}: {ts.train_rows:,} tx, {ts.train_frauds} frauds; "
        f"test {window.test_start}..{window.test_end}: {ts.test_rows:,} tx, {ts.test_frauds} frauds "
        f"({ts.removed_known_compromised} tx of known compromised cards removed)\n"
    )
    print("| model | AUC ROC | AP | CP@100 |")
    print("|---|---:|---:|---:|")
    for name, run in runs.items():
        m = run.metrics
        print(
            f"| fraudflow {name} (seed {args.seed}) | {m.auc_roc:.3f} | {m.average_precision:.3f} | "
            f"{m.card_precision_at_100:.3f} |"
        )
    for name, (auc, ap, cp) in HANDBOOK_BASELINES.items():
        print(f"| published: {name} | {auc} | {ap} | {cp} |")
    print("\n| stage | seconds |\n|---|---:|")
    for name, secs in timings.items():
        print(f"| {name} | {secs:.1f} |")
    print(f"\nhome: {Path(os.environ['FRAUDFLOW_HOME'])}")


if __name__ == "__main__":
    main()
