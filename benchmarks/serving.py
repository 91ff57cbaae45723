"""Serving speed, one run, one model version, one machine: fraudflow's BentoML service
(``/score``, ``/score_batch``, Feast online lookup included) against ``mlflow models serve``
of the same registered version (model only: no feature lookup) and the in-process floor.

Targets: ``/score`` p99 <= 12 ms at 200 req/s including the real-time windows (history read
from Feast's online store, windows computed); saturation throughput >= 3x the MLflow server's
with every request a new transaction (its card's history written); ``/score_batch`` rows/s >=
50% of in-process rows/s. (The history write at a fixed 200 req/s is measured by
``benchmarks/online_parity.py``: hey repeats one body per process, and a repeated transaction
id is a retry, which is only read.)

Steps: build a home like ``tests.helpers.build_serving_home`` (lake, features, Feast online
store materialized, an XGBoost champion in MLflow), start ``bentoml serve`` (1 and 2 workers,
through ``fraudflow.deployment.service_process.ServingProcess``) and ``mlflow models serve`` on loopback ports,
warm each up, then measure with systems interleaved (the machine's speed drifts ~30%):

- fixed offered rates 50/100/200 req/s with ``hey``: 8 hey processes (``-c 1 -q rate/8``, one
  distinct request body each) started 1/rate apart, so arrivals are evenly spaced; plus
  200 req/s the way ``hey -c 8 -q 25`` sends it (workers in step: bursts of 8 every 40 ms);
  percentiles from each request's latency (``-o csv``);
- saturation with ``wrk`` (2 threads, 16 connections, a Lua script rotating the bodies and, for
  fraudflow, giving each request a transaction id of its own), with the server's CPU time per
  request and its split across worker processes;
- the in-process floor: ``Scorer.predict`` on one row, the bare XGBoost booster, and
  ``FeatureLookup.lookup + Scorer.predict`` for one transaction;
- ``/score_batch`` rows/s (batches of 100 and 1000) against ``lookup + predict`` in-process;
- the same service with the Feast online store on a real Redis (``.ci/services.sh`` starts one on
  loopback; ``--no-redis`` skips it): a copy of the home whose registry is re-applied and
  materialized (initial run, same end) into Redis db 1, served by ``bentoml serve`` with
  ``FRAUDFLOW_FEAST_ONLINE_STORE=redis`` and as many workers as the largest SQLite service, measured
  interleaved with the others (fixed rates and saturation; its server CPU includes redis-server's)
  and in-process (``FeatureLookup.lookup`` on Redis next to SQLite), then compared side by side;
- after warm-up, each server tree's process count and resident memory (summed RSS).

The load generators run on the same 2 cores as the servers. Other people's processes on the
machine skew everything: the run waits up to ``--quiet-wait`` s for them to stop and reports,
for every measurement, the cores they used meanwhile ("other load"). Needs ``hey`` and ``wrk``
(Debian: ``apt-get install -y hey wrk``). Takes ~5-6 minutes; servers (process groups), Redis
and PostgreSQL are stopped on exit, error or SIGTERM. The SQLite services run with
``FRAUDFLOW_FEAST_ONLINE_STORE=sqlite`` whatever the environment says.

The steps live in ``benchmarks/_serving/`` (systems, measure, report), the shared plumbing
(hey/wrk, services, CPU accounting, tables) in ``benchmarks/_bench/``.

    .venv/bin/python benchmarks/serving.py [--home DIR] [--rate-seconds 8] [--sat-seconds 10] [--quiet-wait 30]
                                           [--no-two-workers] [--no-redis]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from _bench.env import use_home
from _bench.load import missing_tools
from _bench.output import log
from _bench.processes import OWN_PIDS, wait_quiet
from _bench.services import backing_services
from _serving import BUILD, measure
from _serving.report import report
from _serving.systems import build_requests, check_and_warm, in_process, start_servers


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, help="reuse (or build into) this fraudflow home; default: a temp dir")
    parser.add_argument("--rate-seconds", type=int, default=8, help="duration of each fixed-rate hey run")
    parser.add_argument("--sat-seconds", type=int, default=10, help="duration of each wrk saturation run")
    parser.add_argument("--sat-rounds", type=int, default=2, help="interleaved saturation rounds")
    parser.add_argument("--inprocess-calls", type=int, default=2000)
    parser.add_argument("--quiet-wait", type=float, default=30, help="max s to wait for other load to stop")
    parser.add_argument("--no-two-workers", action="store_true", help="skip the 2-worker BentoML service")
    parser.add_argument("--no-redis", action="store_true", help="skip the service with the Redis online store")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if missing := missing_tools():
        sys.exit(f"{missing[0]} not found: apt-get install -y hey wrk")
    started = time.monotonic()
    home = args.home or Path(tempfile.mkdtemp(prefix="fraudflow-bench-serving-")) / "home"
    use_home(home.resolve())
    os.environ["FRAUDFLOW_FEAST_ONLINE_STORE"] = "sqlite"  # the baseline; the Redis variant sets its own

    def on_term(signum, frame):  # turn SIGTERM into an exception so the servers are stopped
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    settings, version, build_seconds = open_home()
    model_uri = f"models:/fraud-detector/{version}"
    work = Path(tempfile.mkdtemp(prefix="fraudflow-bench-serving-work-"))
    servers: list = []
    try:
        with contextlib.ExitStack() as services:
            redis = None if args.no_redis else start_redis(services, settings, work)
            try:
                results = run(args, settings, version, model_uri, work, servers, redis)
            finally:
                for server in servers:
                    with contextlib.suppress(Exception):
                        server.stop()
                log("servers stopped")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if args.home is None:
            shutil.rmtree(home.parent, ignore_errors=True)
    report(results, version, build_seconds, time.monotonic() - started, args)


def open_home():
    """The home's settings, its champion version and the seconds it took to build (None when
    reused); the deployment state made to follow that champion."""
    from fraudflow import registry
    from fraudflow.settings import get_settings

    settings = get_settings()
    build_seconds = None
    if (settings.root / "mlflow" / "mlflow.db").exists() and registry.aliases(settings).get(registry.CHAMPION):
        log(f"reusing home {settings.root}")
    else:
        from tests.helpers import build_serving_home

        log(f"building a serving home in {settings.root}: {BUILD}")
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # Feast's materialize progress: keep stdout for tables
            build_serving_home(settings, **BUILD)
        build_seconds = time.perf_counter() - t0
        log(f"home built in {build_seconds:.1f} s")
    version = registry.aliases(settings)[registry.CHAMPION]
    with contextlib.suppress(ImportError):  # the service follows this state file when it exists
        from fraudflow.serving.state import DeploymentState, read_state, write_state

        if read_state(settings).champion != version:
            write_state(settings, DeploymentState(champion=version, reason="serving benchmark"))
    return settings, version, build_seconds


def start_redis(stack: contextlib.ExitStack, settings, work: Path) -> dict:
    """PostgreSQL + Redis (stopped when ``stack`` closes) and a copy of the home on Redis."""
    services = stack.enter_context(backing_services())
    OWN_PIDS.append(services["redis_pid"])
    redis_url = services["env"]["FRAUDFLOW_REDIS_URL"]
    log(f"Redis at {redis_url} (pid {services['redis_pid']}); building the Redis home copy")
    return {
        "url": redis_url,
        "pid": services["redis_pid"],
        "settings": build_redis_home(settings, work / "redis-home", redis_url),
    }


def build_redis_home(settings, copy: Path, redis_url: str):
    """A copy of ``settings``' home whose Feast online store is Redis (db 1 of ``redis_url``),
    holding the same feature values as the SQLite one: the registry is re-applied and an initial
    materialization run up to the SQLite store's last materialized end. MLflow's artifact paths
    stay absolute to the original home (the copied mlflow.db points there)."""
    from fraudflow.features.store import apply_feature_repo, materialize_online, open_store
    from fraudflow.settings import Settings

    views = open_store(settings).list_feature_views()
    ends = [end for v in views for _, end in v.materialization_intervals]
    if not ends:
        raise RuntimeError(f"the SQLite online store of {settings.root} was never materialized")
    end = max(ends)
    shutil.copytree(settings.root, copy, ignore=shutil.ignore_patterns("logs"), symlinks=True)
    redis_settings = Settings(home=copy, feast_online_store="redis", redis_url=redis_url)
    for name in ("registry.db", "online_store.db"):
        (redis_settings.feast_dir / name).unlink(missing_ok=True)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # Feast's progress bars: keep stdout for tables
        apply_feature_repo(redis_settings)
        done = materialize_online(redis_settings, end=end)
    os.environ["FRAUDFLOW_HOME"] = str(settings.root)  # open_store points it at the store's home
    if done.mode != "initial":
        raise RuntimeError(f"Redis materialization was {done.mode}, expected initial")
    log(f"Redis online store materialized ({done.mode}, until {end}) in {time.perf_counter() - t0:.1f} s")
    return redis_settings


def run(args, settings, version: str, model_uri: str, work: Path, servers: list, redis: dict | None) -> dict:
    """Requests, servers (appended to ``servers`` for the caller to stop), then the measurements."""
    local = in_process(settings, model_uri, version, redis)
    requests = build_requests(settings, local, work)
    systems = start_servers(args, settings, model_uri, servers, redis)
    check_and_warm(systems, requests, version)
    quiet = wait_quiet(args.quiet_wait)
    fixed = measure.fixed_rates(systems, requests, args.rate_seconds)
    saturation = measure.saturation(systems, requests, args.sat_seconds, args.sat_rounds)
    inprocess = measure.in_process_floor(local, requests.transactions, args.inprocess_calls)
    batch_system = next(iter(systems))  # the 1-worker service
    batch = measure.batches(systems[batch_system]["base"] + "/score_batch", requests, local)
    return {
        "systems": systems,
        "fixed": fixed,
        "saturation": saturation,
        "inprocess": inprocess,
        "batch": batch,
        "batch_system": batch_system,
        "quiet": quiet,
    }


if __name__ == "__main__":
    main()
