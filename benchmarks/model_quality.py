"""Model quality on the handbook's baseline protocol, full-size simulated history, through
fraudflow's own pipeline: lake partitions -> daily feature tables -> Feast point-in-time
training set (fraud_detection_v1) -> candidates logged in MLflow -> test metrics.

Split (handbook): train 2018-07-25..07-31, 7-day delay, test 2018-08-08..08-14, known
compromised cards removed from the test set. Targets: XGBoost >= 0.862 / 0.639 / 0.273
(AUC / AP / CP@100, published XGBoost defaults); aim past AP 0.687 and CP@100 0.303.

    .venv/bin/python benchmarks/model_quality.py [--seed 0] [--gx] [--selection 6 --folds 2]

With ``--selection N`` each family is also trained with the parameters prequential selection
chose (``fraudflow.training.prequential``, N trials on folds before the test window), and the
table shows it beside the defaults, with the search time; then the ensemble of the selected
families is judged on the same folds (the verdict is printed) and trained for the table.
"""

from __future__ import annotations

import argparse
import datetime as dt

from _bench.env import use_home
from _bench.output import print_table
from _bench.timing import Stages

RUN_DATE = dt.date(2018, 8, 14)
CANDIDATES = ("xgboost", "mlp")


def publish_history(settings, stages: Stages, seed: int, gx: bool) -> None:
    """Simulate 183 days, land them, publish each day to the lake (through the GX gate with
    ``gx``), build the feature tables and apply the Feast repository."""
    from fraudflow.demo.simulate import SimulationConfig, simulate_transactions, write_landing_files
    from fraudflow.features.compute import build_features
    from fraudflow.features.store import apply_feature_repo
    from fraudflow.ingestion import publish
    from fraudflow.ingestion.landing import find_landing_file

    frame = stages("simulate 183 days", lambda: simulate_transactions(SimulationConfig(seed=seed)))
    stages("write landing files", lambda: write_landing_files(frame, settings.landing_dir))

    def publish_all():
        from fraudflow.ingestion.validation import validate_batch

        for day in sorted(frame["TX_DATETIME"].dt.date.unique()):
            staged = publish.load_landing_file(
                settings, day=day, source=find_landing_file(settings, day), run_id="bench"
            )
            vid = validate_batch(settings, staged=staged, run_id="bench").validation_id if gx else None
            publish.publish_partition(settings, staged=staged, run_id="bench", validation_id=vid)

    stages("publish 183 partitions" + (" (with GX)" if gx else ""), publish_all)
    stages("build feature tables (backfill)", lambda: build_features(settings))
    stages("feast apply", lambda: apply_feature_repo(settings))


def train(settings, stages: Stages, selection: int, folds: int):
    """The baseline split's training set through Feast, and each candidate trained on it (with
    its defaults, and with ``selection`` > 0 also with the parameters prequential selection chose,
    then the ensemble when the same folds say it beats each family), as ``train_model`` does."""
    from fraudflow.training.prequential import judge_ensemble, select_parameters
    from fraudflow.training.train import train_candidate
    from fraudflow.training.training_set import build_training_set, training_window

    window = training_window(RUN_DATE)
    ts = stages(
        "training set via Feast get_historical_features",
        lambda: build_training_set(settings, run_date=RUN_DATE, run_id="bench", reason="benchmark", window=window),
    )
    runs = {
        f"{name} (defaults)": stages(
            f"train {name}", lambda n=name: train_candidate(settings, candidate=n, training_set=ts)
        )
        for name in CANDIDATES
    }
    verdict = None
    if selection > 0:
        chosen = {}
        for name in CANDIDATES:
            chosen[name] = stages(
                f"select {name} ({selection} trials x {folds} folds)",
                lambda n=name: select_parameters(
                    settings, candidate=n, training_set=ts, n_folds=folds, budget=selection
                ),
            )
            runs[f"{name} (selected: {chosen[name].best_params or 'defaults'})"] = stages(
                f"train {name} selected",
                lambda n=name: train_candidate(
                    settings, candidate=n, training_set=ts, params=chosen[n].best_params, selection=chosen[n]
                ),
            )
        verdict = stages(
            "judge ensemble", lambda: judge_ensemble(settings, training_set=ts, selections=list(chosen.values()))
        )
        label = "kept" if verdict.kept else "dropped by selection, trained for the table"
        runs[f"ensemble of the selected ({label})"] = stages(
            "train ensemble",
            lambda: train_candidate(
                settings, candidate="ensemble", training_set=ts, params=verdict.selection.best_params
            ),
        )
    return window, ts, runs, verdict


def print_results(window, ts, runs: dict, verdict, stages: Stages, seed: int) -> None:
    from fraudflow.training.model_card import HANDBOOK_BASELINES

    print(
        f"\ntrain {window.train_start}..{window.train_end}: {ts.train_rows:,} tx, {ts.train_frauds} frauds; "
        f"test {window.test_start}..{window.test_end}: {ts.test_rows:,} tx, {ts.test_frauds} frauds "
        f"({ts.removed_known_compromised} tx of known compromised cards removed)"
    )
    rows = []
    for name, run in runs.items():
        m = run.metrics
        metrics = (m.auc_roc, m.average_precision, m.card_precision_at_100)
        rows.append((f"fraudflow {name} (seed {seed})", *(f"{v:.3f}" for v in metrics)))
    rows += [(f"published: {name}", auc, ap, cp) for name, (auc, ap, cp) in HANDBOOK_BASELINES.items()]
    print_table(
        "Model quality: handbook baseline protocol (test set metrics)",
        ("model", "AUC ROC", "AP", "CP@100"),
        rows,
        packages=("xgboost-cpu", "torch", "scikit-learn", "feast", "mlflow"),
    )
    if verdict is not None:
        print(f"\nensemble verdict (prequential folds, never the test week): {verdict.reason}")
    print_table("Stage times", ("stage", "seconds"), [(name, f"{s:.1f}") for name, s in stages.seconds.items()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=0, help="simulation seed")
    parser.add_argument("--gx", action="store_true", help="also run the GX landing gate on every day")
    parser.add_argument("--home", default=None, help="fraudflow home (default: a new temp dir)")
    parser.add_argument("--selection", type=int, default=0, help="prequential selection trials per family (0: none)")
    parser.add_argument("--folds", type=int, default=2, help="prequential folds (with --selection)")
    args = parser.parse_args()
    home = use_home(args.home, prefix="fraudflow-bench-quality-")

    from fraudflow.settings import get_settings

    settings = get_settings()
    stages = Stages()
    publish_history(settings, stages, args.seed, args.gx)
    window, ts, runs, verdict = train(settings, stages, args.selection, args.folds)
    print_results(window, ts, runs, verdict, stages, args.seed)
    print(f"\nhome: {home}")


if __name__ == "__main__":
    main()
