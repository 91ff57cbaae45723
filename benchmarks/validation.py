"""Validation gate timing: one day (~9,600 rows) and a 30-day file through the GX checkpoint,
next to loading the same file alone. Target: <= 3 s per day.

    .venv/bin/python benchmarks/validation.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import statistics
from pathlib import Path

from _bench.env import use_home
from _bench.output import log, print_table
from _bench.timing import timed

DAY = dt.date(2018, 4, 30)
COLUMNS = (
    "batch",
    "rows",
    "load file s (median)",
    "GX checkpoint s (median, incl. Data Docs)",
    "expectations",
    "GX / load",
    "load+GX per day s",
)


def write_files(home: Path):
    """A 31-day world: its last day, and its last 30 days, as landing-style parquet files; and
    the last day's frame."""
    from fraudflow.demo.simulate import SimulationConfig, simulate_transactions

    frame = simulate_transactions(SimulationConfig(days=31))
    one_day = frame[frame["TX_DATETIME"].dt.date == DAY]
    files = {"1 day": home / "day.parquet", "30 days": home / "month.parquet"}
    one_day.to_parquet(files["1 day"], index=False)
    frame[frame["TX_DATETIME"].dt.date > dt.date(2018, 4, 1)].to_parquet(files["30 days"], index=False)
    return files, one_day


def parameters(settings) -> dict[str, dict]:
    """The landing suites' parameters for the one-day file, and widened for the 30-day one."""
    from fraudflow.ingestion.validation import landing_parameters

    params = {k: v for k, v in landing_parameters(settings, DAY).items() if k != "history"}
    # The 30-day file spans 30 dates: widen the time bounds; the per-day TX_TIME_DAYS rule still
    # fails for 29 of its days (as it should for a daily gate), which costs GX an unexpected-row scan.
    month = dict(
        params,
        day_start="2018-04-02T00:00:00",
        day_end="2018-05-01T23:59:59.999999",
        day_seconds_min=0,
        day_seconds_max=10**9,
        rows_max=10**7,
    )
    return {"1 day": params, "30 days": month}


def checkpoint(settings, batch, params: dict, run_name: str):
    from fraudflow.ingestion.validation import LANDING_CHECKPOINT, LANDING_SUITES, run_checkpoint

    return run_checkpoint(
        settings, batch, checkpoint=LANDING_CHECKPOINT, suites=LANDING_SUITES, parameters=params, run_name=run_name
    )


def measure(settings, label: str, path: Path, params: dict, repeat: int) -> tuple:
    """Load the file and run the checkpoint on it, ``repeat`` times: one table row."""
    from fraudflow.ingestion.landing import read_batch

    load_s, check_s = [], []
    for i in range(repeat):
        seconds, batch = timed(lambda: read_batch(path))
        load_s.append(seconds)
        run_name = f"bench-{label.replace(' ', '')}-{i}"
        seconds, result = timed(lambda b=batch, name=run_name: checkpoint(settings, b, params, name))
        check_s.append(seconds)
    load, check = statistics.median(load_s), statistics.median(check_s)
    per_day = (load + check) / (1 if label == "1 day" else 30)
    log(f"{label}: load {load:.3f} s, GX {check:.3f} s")
    cells = [f"{len(batch):,}", f"{load:.3f}", f"{check:.3f}", result.evaluated, f"{check / load:.0f}x"]
    return (label, *cells, f"{per_day:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    home = use_home(prefix="fraudflow-bench-validation-")

    import fraudflow.ingestion.validation  # noqa: F401 - before timing GX's import, which it defers
    from fraudflow.settings import get_settings

    settings = get_settings()
    files, one_day = write_files(home)
    gx_import, _ = timed(lambda: importlib.import_module("great_expectations"))  # the once-per-process cost
    params = parameters(settings)
    first_run, _ = timed(lambda: checkpoint(settings, one_day, params["1 day"], "warmup"))
    rows = [measure(settings, label, path, params[label], args.repeat) for label, path in files.items()]

    print(
        f"\nGX import (once per process): {gx_import:.2f} s; first checkpoint run in a process "
        f"(context + stores + docs site): {first_run:.2f} s"
    )
    print_table(
        "Validation gate: the landing checkpoint on one day and on 30 days",
        COLUMNS,
        rows,
        packages=("great-expectations", "pandas", "pyarrow"),
        note=f"target: <= 3 s per day (repeat={args.repeat}; home {home})",
    )


if __name__ == "__main__":
    main()
