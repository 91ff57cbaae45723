"""Feature pipeline speed: full backfill of 183 days, Feast materialization rows/s, and online
lookup latency for one customer + terminal. Targets: backfill <= 60 s; online p99 <= 5 ms.

Online lookups are measured two ways, interleaved: the whole feature service (Feast also
runs the on-demand view for the request-time inputs) and the two feature views only (the
request-time inputs then come from the same ``request_time_features`` function, called
directly, as the scoring service does). Both again on a real Redis (the production profile's
online store; ``.ci/services.sh`` starts it on loopback, ``--no-redis`` skips it).

    .venv/bin/python benchmarks/features.py [--lookups 2000] [--seed 0] [--no-redis]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import sys
import time

import numpy as np
from _bench.env import use_home
from _bench.output import log, print_table
from _bench.services import backing_services
from _bench.timing import timed

SERVICE, VIEWS = "feature service (with on-demand view)", "feature views + request_time_features"


def publish_world(settings, seed: int):
    """Simulate the full 183 days, land them and publish every day to the lake (no GX)."""
    from fraudflow.demo.simulate import SimulationConfig, simulate_transactions, write_landing_files
    from fraudflow.ingestion import publish
    from fraudflow.ingestion.landing import find_landing_file

    frame = simulate_transactions(SimulationConfig(seed=seed))
    write_landing_files(frame, settings.landing_dir)
    for day in sorted(frame["TX_DATETIME"].dt.date.unique()):
        staged = publish.load_landing_file(settings, day=day, source=find_landing_file(settings, day), run_id="b")
        publish.publish_partition(settings, staged=staged, run_id="b", validation_id=None)
    log(f"published {len(frame):,} transactions")
    return frame


def materialize(settings, end: dt.datetime, *, fresh_registry: bool = False) -> tuple[str, float]:
    """Apply the Feast repository (on a fresh registry: an initial run) and materialize the
    online store up to ``end``: the run's mode and its seconds (apply excluded)."""
    from fraudflow.features import store as fs

    if fresh_registry:
        (settings.feast_dir / "registry.db").unlink()
    with contextlib.redirect_stdout(sys.stderr):  # Feast's progress: stdout keeps the tables alone
        fs.apply_feature_repo(settings)
        seconds, done = timed(lambda: fs.materialize_online(settings, end=end))
    log(f"materialized ({done.mode}) in {seconds:.1f} s")
    return done.mode, seconds


def online_lookups(store, picks, when) -> dict[str, list[float]]:
    """Per pick, interleaved: the feature service, then the two views + ``request_time_features``
    (seconds per lookup)."""
    import pandas as pd

    from fraudflow.features import store as fs
    from fraudflow.features.compute import CUSTOMER_FEATURES, TERMINAL_FEATURES, request_time_features

    refs = [f"customer_spending:{f}" for f in CUSTOMER_FEATURES] + [f"terminal_risk:{f}" for f in TERMINAL_FEATURES]
    service = store.get_feature_service(fs.ONLINE_FEATURE_SERVICE)
    lat = {SERVICE: [], VIEWS: []}
    for c, t, a in picks.itertuples(index=False):
        row = {"CUSTOMER_ID": str(c), "TERMINAL_ID": str(t), "tx_amount": float(a), "tx_datetime": when}
        s0 = time.perf_counter()
        store.get_online_features(features=service, entity_rows=[row]).to_dict()
        s1 = time.perf_counter()
        entities = [{"CUSTOMER_ID": str(c), "TERMINAL_ID": str(t)}]
        store.get_online_features(features=refs, entity_rows=entities).to_dict()
        request_time_features(pd.Series([float(a)]), pd.Series([when]))
        s2 = time.perf_counter()
        lat[SERVICE].append(s1 - s0)
        lat[VIEWS].append(s2 - s1)
    return lat


def on_redis(end: dt.datetime, picks, when) -> tuple[tuple[str, float], dict[str, list[float]]]:
    """The same home with its online store on a real Redis: materialization, then lookups."""
    from fraudflow.features import store as fs
    from fraudflow.settings import get_settings

    with backing_services() as services:
        os.environ.update(services["env"])
        os.environ["FRAUDFLOW_FEAST_ONLINE_STORE"] = "redis"
        redis_settings = get_settings()
        materialized = materialize(redis_settings, end, fresh_registry=True)  # fresh registry: an initial run
        return materialized, online_lookups(fs.open_store(redis_settings), picks, when)


def print_results(built, backfill, incremental, materialized, online, offline_rows, entities, lookups) -> None:
    steps = [
        (f"full backfill, {built.rows['customer']:,} transactions, {len(built.days)} days", f"{backfill:.1f} s"),
        ("one day rebuilt (reads its 37-day lookback)", f"{incremental:.2f} s"),
    ]
    for engine, (mode, seconds) in materialized.items():
        steps.append(
            (
                f"materialize {mode} to {engine}: {entities:,} entities from ~{offline_rows:,} offline rows",
                f"{seconds:.1f} s ({offline_rows / seconds:,.0f} offline rows/s, {entities / seconds:,.0f} entities/s)",
            )
        )
    print_table("Feature pipeline", ("step", "figure"), steps, packages=("feast", "duckdb", "pandas"))
    rows = []
    for engine, lat in online.items():
        for name, values in lat.items():
            v = np.array(values[10:]) * 1000  # first calls warm caches
            rows.append((name, engine, f"{np.percentile(v, 50):.2f}", f"{np.percentile(v, 99):.2f}", f"{v.mean():.2f}"))
    print_table(
        "Online lookups",
        ("online lookup, 1 customer + 1 terminal", "store", "p50 ms", "p99 ms", "mean ms"),
        rows,
        align="llrrr",
        note=f"{lookups} lookups of each kind per store (kinds interleaved; stores one after the other)\n"
        "targets: backfill <= 60 s, online p99 <= 5 ms (SQLite), <= 3 ms (Redis)",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lookups", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-redis", action="store_true", help="skip the Redis online store (needs .ci/services.sh)")
    args = parser.parse_args()
    use_home(prefix="fraudflow-bench-features-")

    import pandas as pd

    from fraudflow.features import store as fs
    from fraudflow.features.compute import build_features
    from fraudflow.settings import get_settings

    settings = get_settings()
    frame = publish_world(settings, args.seed)
    backfill, built = timed(lambda: build_features(settings))
    # Incremental: one more day re-published with a change -> only the affected days rebuild.
    last = max(built.days)
    incremental, one_day = timed(lambda: build_features(settings, days=[last]))

    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    materialized = {"SQLite": materialize(settings, end)}
    window_start = end - dt.timedelta(days=39)
    offline_rows = int((pd.to_datetime(frame["TX_DATETIME"]) >= window_start.replace(tzinfo=None)).sum()) * 2
    entities = frame["CUSTOMER_ID"].nunique() + frame["TERMINAL_ID"].nunique()

    rng = np.random.default_rng(0)
    picks = frame.iloc[rng.choice(len(frame), args.lookups)][["CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT"]]
    when = pd.Timestamp(end)
    online = {"SQLite": online_lookups(fs.open_store(settings), picks, when)}
    if not args.no_redis:
        materialized["Redis"], online["Redis"] = on_redis(end, picks, when)

    print_results(built, backfill, incremental, materialized, online, offline_rows, entities, args.lookups)
    assert one_day.days == [last]


if __name__ == "__main__":
    main()
