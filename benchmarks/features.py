"""Feature pipeline speed: full backfill of 183 days, Feast materialization rows/s, and online
lookup latency for one customer + terminal. Targets: backfill <= 60 s; online p99 <= 5 ms.

Online lookups are measured two ways, interleaved: the whole feature service (Feast also
runs the on-demand view for the request-time inputs) and the two feature views only (the
request-time inputs then come from the same ``request_time_features`` function, called
directly, as the scoring service does).

    .venv/bin/python benchmarks/features.py [--lookups 2000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lookups", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-redis", action="store_true", help="skip the Redis online store (needs .ci/services.sh)")
    args = parser.parse_args()
    os.environ["FRAUDFLOW_HOME"] = tempfile.mkdtemp(prefix="fraudflow-bench-features-")

    import pandas as pd

    from fraudflow import feature_store as fs
    from fraudflow import ingest
    from fraudflow.features import CUSTOMER_FEATURES, TERMINAL_FEATURES, build_features, request_time_features
    from fraudflow.landing import find_landing_file
    from fraudflow.settings import get_settings
    from fraudflow.simulate import SimulationConfig, simulate_transactions, write_landing_files

    settings = get_settings()
    frame = simulate_transactions(SimulationConfig(seed=args.seed))
    write_landing_files(frame, settings.landing_dir)
    for day in sorted(frame["TX_DATETIME"].dt.date.unique()):
        staged = ingest.load_landing_file(settings, day=day, source=find_landing_file(settings, day), run_id="b")
        ingest.publish_partition(settings, staged=staged, run_id="b", validation_id=None)

    started = time.perf_counter()
    built = build_features(settings)
    backfill = time.perf_counter() - started
    # Incremental: one more day re-published with a change -> only the affected days rebuild.
    last = max(built.days)
    started = time.perf_counter()
    one_day = build_features(settings, days=[last])
    incremental = time.perf_counter() - started

    fs.apply_feature_repo(settings)
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    started = time.perf_counter()
    mat = fs.materialize_online(settings, end=end)
    materialize = time.perf_counter() - started
    window_start = end - dt.timedelta(days=39)
    offline_rows = int((pd.to_datetime(frame["TX_DATETIME"]) >= window_start.replace(tzinfo=None)).sum()) * 2
    entities = frame["CUSTOMER_ID"].nunique() + frame["TERMINAL_ID"].nunique()

    refs = [f"customer_spending:{f}" for f in CUSTOMER_FEATURES] + [f"terminal_risk:{f}" for f in TERMINAL_FEATURES]
    rng = np.random.default_rng(0)
    picks = frame.iloc[rng.choice(len(frame), args.lookups)][["CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT"]]
    when = pd.Timestamp(end)

    def lookups(store) -> dict[str, list[float]]:
        service = store.get_feature_service(fs.FEATURE_SERVICE)
        lat = {"feature service (with on-demand view)": [], "feature views + request_time_features": []}
        for c, t, a in picks.itertuples(index=False):
            row = {"CUSTOMER_ID": str(c), "TERMINAL_ID": str(t), "tx_amount": float(a), "tx_datetime": when}
            s0 = time.perf_counter()
            store.get_online_features(features=service, entity_rows=[row]).to_dict()
            s1 = time.perf_counter()
            entities = [{"CUSTOMER_ID": str(c), "TERMINAL_ID": str(t)}]
            store.get_online_features(features=refs, entity_rows=entities).to_dict()
            request_time_features(pd.Series([float(a)]), pd.Series([when]))
            s2 = time.perf_counter()
            lat["feature service (with on-demand view)"].append(s1 - s0)
            lat["feature views + request_time_features"].append(s2 - s1)
        return lat

    online = {"SQLite": lookups(fs.open_store(settings))}
    materialized = {"SQLite": (mat.mode, materialize)}
    if not args.no_redis:  # the production profile's online store: a real Redis (Debian package)
        import subprocess

        services = Path(tempfile.mkdtemp(prefix="ff-bench-services-"))
        services.chmod(0o755)
        script = Path(__file__).resolve().parents[1] / ".ci" / "services.sh"
        out = subprocess.run(["bash", str(script), "start", str(services)], capture_output=True, text=True, check=True)
        try:
            for line in out.stdout.split():
                if "=" in line:
                    key, value = line.split("=", 1)
                    os.environ[key] = value
            os.environ["FRAUDFLOW_FEAST_ONLINE_STORE"] = "redis"
            redis_settings = get_settings()
            (redis_settings.feast_dir / "registry.db").unlink()  # fresh registry: an initial materialize
            fs.apply_feature_repo(redis_settings)
            started = time.perf_counter()
            redis_mat = fs.materialize_online(redis_settings, end=end)
            materialized["Redis"] = (redis_mat.mode, time.perf_counter() - started)
            online["Redis"] = lookups(fs.open_store(redis_settings))
        finally:
            subprocess.run(["bash", str(script), "stop", str(services)], capture_output=True, check=False)

    print("\n| step | figure |\n|---|---:|")
    print(f"| full backfill, {built.rows['customer']:,} transactions, {len(built.days)} days | {backfill:.1f} s |")
    print(f"| one day rebuilt (reads its 37-day lookback) | {incremental:.2f} s |")
    for engine, (mode, seconds) in materialized.items():
        print(
            f"| materialize {mode} to {engine}: {entities:,} entities from ~{offline_rows:,} offline rows | "
            f"{seconds:.1f} s ({offline_rows / seconds:,.0f} offline rows/s, {entities / seconds:,.0f} entities/s) |"
        )
    print("\n| online lookup, 1 customer + 1 terminal | store | p50 ms | p99 ms | mean ms |\n|---|---|---:|---:|---:|")
    for engine, lat in online.items():
        for name, values in lat.items():
            v = np.array(values[10:]) * 1000  # first calls warm caches
            print(f"| {name} | {engine} | {np.percentile(v, 50):.2f} | {np.percentile(v, 99):.2f} | {v.mean():.2f} |")
    print(f"\n{args.lookups} lookups of each kind per store (kinds interleaved; stores one after the other)")
    print("targets: backfill <= 60 s, online p99 <= 5 ms (SQLite), <= 3 ms (Redis)")
    assert one_day.days == [last]


if __name__ == "__main__":
    main()
