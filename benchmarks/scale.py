"""Time and peak memory per data stage as the card base grows (issue: past one machine).

Each stage runs in its own Python process on one fraudflow home, so its peak resident memory
(``wait4``'s ``ru_maxrss``) is that stage's alone: simulate + land, publish to the lake (no GX:
ingestion has its own benchmark), ``build_features`` (backfill) and the Feast point-in-time
training set (the handbook split ending on the last day) once per ``--engines`` entry, and an
XGBoost fit on the last training set, scored on its test week (AP). ``--max-train-rows``
bounds the training window (negatives sampled above it; 0 never samples).

    .venv/bin/python benchmarks/scale.py [--scales 1 5] [--days 60] [--chunk-rows 100000]
        [--block-days 30] [--max-train-rows 0] [--engines local spark]
        [--root DIR --stages "build_features (backfill)" ...]

Scale 1 is the handbook's card base (5,000 cards, 10,000 terminals); scale k multiplies both.
Peak memory is the stage's process tree: the larger of the Python process's own peak
(``ru_maxrss``, exact) and the sampled sum of it and its children every 0.2 s (the Spark
engine's JVM is a child of the stage's process). ``local``: numpy features, Feast's DuckDB
offline store; ``spark``: Spark SQL features, Feast's Spark offline store (``local[2]`` here).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _bench.env import REPO
from _bench.output import print_table

STAGES = {
    "simulate + land": """
from fraudflow.demo.simulate import SimulationConfig, simulate_transactions, write_landing_files
frame = simulate_transactions(SimulationConfig(days={days}, customers={cards}, terminals={terminals}, seed=0))
write_landing_files(frame, settings.landing_dir)
print(len(frame))
""",
    "publish to the lake": """
import datetime as dt
from fraudflow.demo.simulate import SimulationConfig
from fraudflow.ingestion import publish
from fraudflow.ingestion.landing import find_landing_file
n = 0
for i in range({days}):
    day = SimulationConfig().start + dt.timedelta(days=i)
    staged = publish.load_landing_file(settings, day=day, source=find_landing_file(settings, day), run_id="scale")
    publish.publish_partition(settings, staged=staged, run_id="scale", validation_id=None)
    n += staged.rows
print(n)
""",
    "build_features (backfill)": """
from fraudflow.features.compute import build_features
from fraudflow.features.store import apply_feature_repo
from fraudflow.lake import list_partitions
built = build_features(settings, days=list_partitions(settings))  # every day, as a first backfill
apply_feature_repo(settings)
print(built.rows["customer"])
""",
    "training set (Feast point in time)": """
from fraudflow.features.store import apply_feature_repo
from fraudflow.lake import list_partitions
from fraudflow.training.training_set import build_training_set
apply_feature_repo(settings)  # for this stage's engine: the other engine's run may have applied last
last = max(list_partitions(settings))
ts = build_training_set(settings, run_date=last, run_id="scale", reason="benchmark")
print(ts.train_rows + ts.test_rows)
""",
    "train xgboost": """
import pandas as pd
from sklearn.metrics import average_precision_score
from fraudflow.features.compute import LABEL, MODEL_INPUTS
from fraudflow.models.candidates import CANDIDATES
folder = max((settings.root / "training").iterdir(), key=lambda p: p.stat().st_mtime)
train = pd.read_parquet(folder / "train.parquet")
spec = CANDIDATES["xgboost"]
model = spec.fit(train[MODEL_INPUTS], train[LABEL].to_numpy(), {{}})
del train
test = pd.read_parquet(folder / "test.parquet", columns=[*MODEL_INPUTS, LABEL])
ap = average_precision_score(test[LABEL], spec.predict_proba(model, test[MODEL_INPUTS]))
print(f"{{model.n_features_in_}} inputs, test AP {{ap:.4f}} on {{len(test):,}}")
""",
}


ENGINE_STAGES = ("build_features (backfill)", "training set (Feast point in time)")


def stage_plan(stages: list[str], engines: list[str]) -> list[tuple[str, str]]:
    """(stage, engine) in pipeline order; the engine stages run as a group once per engine
    (each engine's training set reads the feature tables and registry its own build wrote)."""
    plan: list[tuple[str, str]] = []
    for name in STAGES:
        if name not in stages:
            continue
        if name not in ENGINE_STAGES:
            plan.append((name, "local"))
        elif not any(n in ENGINE_STAGES for n, _ in plan):
            plan += [(n, e) for e in engines for n in ENGINE_STAGES if n in stages]
    return plan


def _tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and its descendants now (0 once it is gone)."""
    import psutil

    try:
        parent = psutil.Process(pid)
        procs = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_stage(code: str, env: dict[str, str]) -> tuple[float, float, str]:
    """Run ``code`` in a fresh interpreter; its wall time (s), peak RSS of its process tree (GB)
    and last output line."""
    import threading

    script = "from fraudflow.settings import get_settings\nsettings = get_settings()\n" + code
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out_file, tempfile.TemporaryFile("w+") as err_file:
        proc = subprocess.Popen(
            [sys.executable, "-c", script], env=env, cwd=REPO, stdout=out_file, stderr=err_file, text=True
        )
        sampled = [0]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.2):
                sampled[0] = max(sampled[0], _tree_rss(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        done.set()
        sampler.join()
        seconds = time.perf_counter() - started
        out_file.seek(0), err_file.seek(0)
        out, err = out_file.read(), err_file.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"stage failed ({proc.returncode}):\n{err[-3000:]}")
    peak = max(usage.ru_maxrss * 1024, sampled[0])
    return seconds, peak / 1024**3, (out.strip().splitlines() or ["-"])[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--chunk-rows", type=int, default=None, help="FRAUDFLOW_OFFLINE_JOIN_CHUNK_ROWS")
    parser.add_argument("--block-days", type=int, default=None, help="FRAUDFLOW_FEATURE_BLOCK_DAYS")
    parser.add_argument(
        "--stages", nargs="+", choices=list(STAGES), default=list(STAGES), help="a subset, on homes kept with --root"
    )
    parser.add_argument(
        "--max-train-rows", type=int, default=None, help="FRAUDFLOW_TRAINING_MAX_TRAIN_ROWS (0: never sample)"
    )
    parser.add_argument("--engines", nargs="+", choices=["local", "spark"], default=["local"], help="data plane")
    parser.add_argument("--root", default=None, help="folder for the homes (default: a temp dir)")
    args = parser.parse_args()
    root = Path(args.root or tempfile.mkdtemp(prefix="fraudflow-bench-scale-"))
    rows = []
    for scale in args.scales:
        cards, terminals = 5_000 * scale, 10_000 * scale
        env = os.environ | {
            "FRAUDFLOW_HOME": str(root / f"x{scale}"),
            "GX_ANALYTICS_ENABLED": "False",
            "MLFLOW_ENABLE_TELEMETRY": "false",
            "PYTHONPATH": str(REPO),
        }
        if args.chunk_rows:
            env["FRAUDFLOW_OFFLINE_JOIN_CHUNK_ROWS"] = str(args.chunk_rows)
        if args.block_days:
            env["FRAUDFLOW_FEATURE_BLOCK_DAYS"] = str(args.block_days)
        if args.max_train_rows is not None:
            env["FRAUDFLOW_TRAINING_MAX_TRAIN_ROWS"] = str(args.max_train_rows)
        for name, engine in stage_plan(args.stages, args.engines):
            label = f"{name} [{engine}]" if name in ENGINE_STAGES else name
            print(f"[{time.strftime('%H:%M:%S')}] x{scale} ({cards:,} cards, {args.days} days): {label}", flush=True)
            code_env = env | {"FRAUDFLOW_ENGINE": engine}
            seconds, peak, out = run_stage(
                STAGES[name].format(days=args.days, cards=cards, terminals=terminals), code_env
            )
            rows.append((f"x{scale}", label, out, f"{seconds:.1f}", f"{peak:.2f}"))
            print(f"    {seconds:.1f} s, peak {peak:.2f} GB, {out}", flush=True)
    print_table(
        f"Scale: {args.days} days, join chunk {args.chunk_rows or 'default'} rows, "
        f"feature blocks of {args.block_days or 'default'} days, training rows bound "
        f"{'default' if args.max_train_rows is None else args.max_train_rows} ({os.cpu_count()} cores)",
        ("world", "stage", "rows", "seconds", "peak GB"),
        rows,
        packages=("feast", "duckdb", "pandas", "xgboost-cpu", *(["pyspark"] if "spark" in args.engines else [])),
    )
    print(f"\nhomes: {root}")


if __name__ == "__main__":
    main()
