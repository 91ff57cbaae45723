"""Full published-size simulation (183 days, 5,000 customers, 10,000 terminals): time and
statistics next to the handbook's published run. Target: <= 60 s on the 2-core machine.

    .venv/bin/python benchmarks/simulate.py [--seeds 0 1 2] [--no-write]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _bench.output import log, print_table
from _bench.timing import timed

from fraudflow.demo.simulate import SimulationConfig, simulate_transactions, summarise, write_landing_files

PUBLISHED = {
    "transactions": 1_754_155,
    "frauds": 14_681,
    "fraud_rate_pct": 0.837,
    "scenario_1": 973,
    "scenario_2": 9_077,
    "scenario_3": 4_631,
    "days": 183,
}
COLUMNS = (
    "run",
    "simulate s",
    "write 183 files s",
    "transactions",
    "frauds",
    "fraud %",
    "scen. 1",
    "scen. 2",
    "scen. 3",
)


def run_seed(seed: int, write: bool) -> tuple[float, float, dict]:
    """Simulate one world; seconds to simulate, to write its landing files (NaN if not), its summary."""
    sim_s, frame = timed(lambda: simulate_transactions(SimulationConfig(seed=seed)))
    write_s = float("nan")
    if write:
        with tempfile.TemporaryDirectory() as tmp:
            write_s, _ = timed(lambda: write_landing_files(frame, Path(tmp)))
    log(f"seed {seed}: simulated in {sim_s:.2f} s, written in {write_s:.2f} s")
    return sim_s, write_s, summarise(frame)


def counts(s: dict) -> list[str]:
    return [f"{s['transactions']:,}", f"{s['frauds']:,}", f"{s['fraud_rate_pct']}"] + [
        f"{s[f'scenario_{i}']:,}" for i in (1, 2, 3)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--no-write", action="store_true", help="skip writing the 183 parquet files")
    args = parser.parse_args()

    rows = [("published (reference, ~3 min)", "", "", *counts(PUBLISHED))]
    for seed in args.seeds:
        sim_s, write_s, summary = run_seed(seed, write=not args.no_write)
        rows.append((f"fraudflow seed {seed}", f"{sim_s:.2f}", f"{write_s:.2f}", *counts(summary)))
    print_table(
        "Simulator: 183 days, 5,000 customers, 10,000 terminals",
        COLUMNS,
        rows,
        packages=("numpy", "pandas", "pyarrow"),
        note="target: simulate <= 60 s for the full run",
    )


if __name__ == "__main__":
    main()
