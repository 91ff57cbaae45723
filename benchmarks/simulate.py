"""Full published-size simulation (183 days, 5,000 customers, 10,000 terminals): time and
statistics next to the handbook's published run. Target: <= 60 s on the 2-core machine.

    .venv/bin/python benchmarks/simulate.py [--seeds 0 1 2] [--write]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from fraudflow.simulate import SimulationConfig, simulate_transactions, summarise, write_landing_files

PUBLISHED = {
    "transactions": 1_754_155,
    "frauds": 14_681,
    "fraud_rate_pct": 0.837,
    "scenario_1": 973,
    "scenario_2": 9_077,
    "scenario_3": 4_631,
    "days": 183,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--no-write", action="store_true", help="skip writing the 183 parquet files")
    args = parser.parse_args()

    rows = []
    for seed in args.seeds:
        started = time.perf_counter()
        frame = simulate_transactions(SimulationConfig(seed=seed))
        sim_s = time.perf_counter() - started
        write_s = float("nan")
        if not args.no_write:
            with tempfile.TemporaryDirectory() as tmp:
                started = time.perf_counter()
                write_landing_files(frame, Path(tmp))
                write_s = time.perf_counter() - started
        rows.append((seed, sim_s, write_s, summarise(frame)))

    print("\n| run | simulate s | write 183 files s | transactions | frauds | fraud % | scen. 1 | scen. 2 | scen. 3 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    p = PUBLISHED
    print(
        f"| published (reference, ~3 min) | | | {p['transactions']:,} | {p['frauds']:,} | {p['fraud_rate_pct']} "
        f"| {p['scenario_1']:,} | {p['scenario_2']:,} | {p['scenario_3']:,} |"
    )
    for seed, sim_s, write_s, s in rows:
        print(
            f"| fraudflow seed {seed} | {sim_s:.2f} | {write_s:.2f} | {s['transactions']:,} | {s['frauds']:,} "
            f"| {s['fraud_rate_pct']} | {s['scenario_1']:,} | {s['scenario_2']:,} | {s['scenario_3']:,} |"
        )
    print("\ntarget: simulate <= 60 s for the full run")


if __name__ == "__main__":
    main()
