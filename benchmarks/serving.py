"""Serving speed, one run, one model version, one machine: fraudflow's BentoML service
(``/score``, ``/score_batch``, Feast online lookup included) against ``mlflow models serve``
of the same registered version (model only: no feature lookup) and the in-process floor.

Targets: ``/score`` p99 <= 10 ms at 200 req/s including the Feast lookup; saturation
throughput >= 2x the MLflow server's; ``/score_batch`` rows/s >= 50% of in-process rows/s.

Steps: build a home like ``tests.helpers.build_serving_home`` (lake, features, Feast online
store materialized, an XGBoost champion in MLflow), start ``bentoml serve`` (1 and 2 workers,
through ``fraudflow.rollout.ServingProcess``) and ``mlflow models serve`` on loopback ports,
warm each up, then measure with systems interleaved (the machine's speed drifts ~30%):

- fixed offered rates 50/100/200 req/s with ``hey``: 8 hey processes (``-c 1 -q rate/8``, one
  distinct request body each) started 1/rate apart, so arrivals are evenly spaced; plus
  200 req/s the way ``hey -c 8 -q 25`` sends it (workers in step: bursts of 8 every 40 ms);
  percentiles from each request's latency (``-o csv``);
- saturation with ``wrk`` (2 threads, 16 connections, a Lua script rotating the bodies), with
  the server's CPU time per request and its split across worker processes;
- the in-process floor: ``Scorer.predict`` on one row, the bare XGBoost booster, and
  ``FeatureLookup.lookup + Scorer.predict`` for one transaction;
- ``/score_batch`` rows/s (batches of 100 and 1000) against ``lookup + predict`` in-process;
- the same service with the Feast online store on a real Redis (``.ci/services.sh`` starts one on
  loopback; ``--no-redis`` skips it): a copy of the home whose registry is re-applied and
  materialized (initial run, same end) into Redis db 1, served by ``bentoml serve`` with
  ``FRAUDFLOW_FEAST_ONLINE_STORE=redis`` and as many workers as the largest SQLite service, measured
  interleaved with the others (fixed rates and saturation; its server CPU includes redis-server's)
  and in-process (``FeatureLookup.lookup`` on Redis next to SQLite), then compared side by side.

The load generators run on the same 2 cores as the servers. Other people's processes on the
machine skew everything: the run waits up to ``--quiet-wait`` s for them to stop and reports,
for every measurement, the cores they used meanwhile ("other load"). Needs ``hey`` and ``wrk``
(Debian: ``apt-get install -y hey wrk``). Takes ~5-6 minutes; servers (process groups), Redis
and PostgreSQL are stopped on exit, error or SIGTERM. The SQLite services run with
``FRAUDFLOW_FEAST_ONLINE_STORE=sqlite`` whatever the environment says.

    .venv/bin/python benchmarks/serving.py [--home DIR] [--rate-seconds 8] [--sat-seconds 10] [--quiet-wait 30]
                                           [--no-two-workers] [--no-redis]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gc
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# (label, offered req/s, bursts): evenly spaced arrivals, plus 200 req/s as hey -c 8 -q 25 sends it
RUNS = (("50", 50, False), ("100", 100, False), ("200", 200, False), ("200 in bursts of 8", 200, True))
HEY_WORKERS = 8  # hey workers per fixed-rate run; 8 distinct request bodies
BUILD = {"days": 40, "customers": 2000, "terminals": 4000, "seed": 11}
TARGET_P99_MS, TARGET_SAT_RATIO, TARGET_BATCH_SHARE = 10.0, 2.0, 0.5
SERVICES_SH = REPO / ".ci" / "services.sh"
# Processes started for this benchmark outside its process tree (the daemonized redis-server):
# their CPU counts as the benchmark's, not as other people's load.
EXTRA_PIDS: list[int] = []


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def pct(values, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


# -- servers -------------------------------------------------------------------------------
class MlflowServer:
    """``mlflow models serve`` (uvicorn, its default single worker) in its own process group."""

    def __init__(self, settings, model_uri: str) -> None:
        from fraudflow.rollout import free_port

        self.settings, self.model_uri = settings, model_uri
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = settings.root / "logs" / f"mlflow-serve-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def launch(self) -> MlflowServer:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
            "MLFLOW_TRACKING_URI": self.settings.mlflow_tracking_uri,
        }
        cmd = [str(BIN / "mlflow"), "models", "serve", "-m", self.model_uri, "--env-manager", "local"]
        self.proc = subprocess.Popen(
            [*cmd, "-h", "127.0.0.1", "-p", str(self.port)],
            env=env,
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def wait_ready(self, timeout: float = 120) -> MlflowServer:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow models serve exited with {self.proc.returncode}; see {self.log_path}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/ping", timeout=2).status_code == 200:
                    return self
            time.sleep(0.5)
        raise TimeoutError(f"mlflow models serve not ready after {timeout}s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


class OtherLoad:
    """CPU used on this machine by processes outside this benchmark's tree (other people's
    tests, ...), in cores: machine-wide busy time minus what this process and its descendants
    (servers, load generators, reaped or alive) used over the same interval."""

    def __init__(self) -> None:
        import psutil

        self.psutil = psutil
        self.me = psutil.Process()
        self.t0 = self.busy0 = self.mine0 = 0.0

    def _busy(self) -> float:
        t = self.psutil.cpu_times()
        return sum(getattr(t, f) for f in t._fields if f not in ("idle", "iowait", "guest", "guest_nice"))

    def _mine(self) -> float:
        total = 0.0
        extra = []
        for pid in EXTRA_PIDS:
            with contextlib.suppress(self.psutil.Error):
                extra.append(self.psutil.Process(pid))
        for p in [self.me, *self.me.children(recursive=True), *extra]:
            with contextlib.suppress(self.psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
        return total

    def start(self) -> OtherLoad:
        self.t0, self.busy0, self.mine0 = time.monotonic(), self._busy(), self._mine()
        return self

    def cores(self) -> float:
        wall = time.monotonic() - self.t0
        return max(0.0, (self._busy() - self.busy0) - (self._mine() - self.mine0)) / max(wall, 1e-6)


def wait_quiet(max_wait: float, threshold: float = 0.25) -> float:
    """Wait (at most ``max_wait`` s) until other processes use < ``threshold`` cores over 2 s."""
    deadline = time.monotonic() + max_wait
    while True:
        monitor = OtherLoad().start()
        time.sleep(2)
        cores = monitor.cores()
        if cores < threshold or time.monotonic() > deadline:
            if cores >= threshold:
                log(f"machine not quiet: other processes use {cores:.2f} cores; measuring anyway")
            return cores
        log(f"waiting for a quiet machine: other processes use {cores:.2f} cores")


def tree_cpu(pid: int, extra: tuple[int, ...] | list[int] = ()) -> dict[int, float]:
    """User + system CPU seconds of each process in a server's tree, plus ``extra`` processes
    it depends on (redis-server), pid -> seconds."""
    import psutil

    out = {}
    with contextlib.suppress(psutil.NoSuchProcess):
        root = psutil.Process(pid)
        for p in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                t = p.cpu_times()
                out[p.pid] = t.user + t.system
    for extra_pid in extra:
        with contextlib.suppress(psutil.NoSuchProcess):
            t = psutil.Process(extra_pid).cpu_times()
            out[extra_pid] = t.user + t.system
    return out


def cpu_split(before: dict[int, float], after: dict[int, float]) -> tuple[float, str]:
    """Total CPU seconds used between two ``tree_cpu`` readings, and each busy process's share."""
    deltas = [after[p] - before.get(p, 0.0) for p in after]
    total = sum(deltas)
    shares = sorted((d / total for d in deltas if total > 0 and d / total >= 0.05), reverse=True)
    return total, "/".join(f"{s:.0%}" for s in shares)


def tree_size(pid: int) -> int:
    import psutil

    return 1 + len(psutil.Process(pid).children(recursive=True))


# -- Redis (Feast online store) ------------------------------------------------------------
def start_services(services_dir: Path) -> dict:
    """PostgreSQL + Redis on loopback (``.ci/services.sh start``); returns their env and redis-server's pid."""
    out = subprocess.run(
        ["bash", str(SERVICES_SH), "start", str(services_dir)], capture_output=True, text=True, timeout=900
    )
    if out.returncode != 0:
        raise RuntimeError(f"services.sh start failed ({out.returncode}): {out.stderr[-1500:]}")
    env = {}
    for line in out.stdout.splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export ") :].partition("=")
            env[key] = value
    if "FRAUDFLOW_REDIS_URL" not in env:
        raise RuntimeError(f"services.sh printed no FRAUDFLOW_REDIS_URL: {out.stdout!r}")
    return {"env": env, "redis_pid": int((services_dir / "redis.pid").read_text().strip())}


def stop_services(services_dir: Path) -> None:
    out = subprocess.run(
        ["bash", str(SERVICES_SH), "stop", str(services_dir)], capture_output=True, text=True, timeout=180
    )
    if out.returncode != 0:
        log(f"services.sh stop failed ({out.returncode}): {out.stderr[-800:]}")


def build_redis_home(settings, copy: Path, redis_url: str):
    """A copy of ``settings``' home whose Feast online store is Redis (db 1 of ``redis_url``),
    holding the same feature values as the SQLite one: the registry is re-applied and an initial
    materialization run up to the SQLite store's last materialized end. MLflow's artifact paths
    stay absolute to the original home (the copied mlflow.db points there)."""
    from fraudflow.feature_store import apply_feature_repo, materialize_online, open_store
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


# -- load generators ------------------------------------------------------------------------
def hey_fixed_rate(url: str, body_files: list[Path], rate: float, seconds: int, *, burst: bool = False) -> dict:
    """``rate`` req/s offered by HEY_WORKERS hey workers (``-q`` is per worker); per-request
    latencies from ``-o csv``.

    hey starts a worker's ticker when the worker starts, so workers started together fire
    together: ``-c 8 -q 25`` offers 200 req/s as a burst of 8 every 40 ms. By default each
    worker is its own hey process (one distinct body each), started 1/rate apart: evenly spaced
    arrivals. ``burst=True`` keeps the bursts (4 processes x 2 workers, started at once).
    """
    qps = rate / HEY_WORKERS
    groups = [(f, 2) for f in body_files[: HEY_WORKERS // 2]] if burst else [(f, 1) for f in body_files]
    procs, outs = [], []
    t0 = time.monotonic()
    try:
        for i, (body, workers) in enumerate(groups):
            if not burst:
                time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
            outs.append(body.with_suffix(f".{i}.csv"))
            cmd = ["hey", "-z", f"{seconds}s", "-c", str(workers), "-q", f"{qps:g}", "-t", "10", "-o", "csv"]
            procs.append(
                subprocess.Popen(
                    [*cmd, "-m", "POST", "-T", "application/json", "-D", str(body), url],
                    stdout=outs[-1].open("wb"),
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        for p in procs:
            p.wait(timeout=seconds + 30)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
    latencies, statuses = [], {}
    for out in outs:
        for row in csv.DictReader(io.StringIO(out.read_text())):
            statuses[row["status-code"]] = statuses.get(row["status-code"], 0) + 1
            if row["status-code"] == "200":
                latencies.append(float(row["response-time"]) * 1000)
    ok = len(latencies)
    return {
        "ok": ok,
        "failed": sum(statuses.values()) - ok,
        "rps": ok / seconds,
        "p50": pct(latencies, 50),
        "p95": pct(latencies, 95),
        "p99": pct(latencies, 99),
        "max": max(latencies, default=float("nan")),
    }


WRK_LUA = """
local bodies = {%s}
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i + 1
  return wrk.format(nil, nil, nil, bodies[(i %% #bodies) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %%d %%d %%d %%d %%d %%.1f %%.1f %%.1f %%.1f %%.1f\\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max, latency.mean))
end
"""


def wrk_script(path: Path, bodies: list[str]) -> Path:
    path.write_text(WRK_LUA % ", ".join(f"[==[{b}]==]" for b in bodies))
    return path


def wrk_saturation(url: str, script: Path, seconds: int, *, threads: int = 2, connections: int = 16) -> dict:
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "--latency"]
    out = subprocess.run([*cmd, "-s", str(script), url], capture_output=True, text=True, timeout=seconds + 30)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary: {out.stdout[-500:]} {out.stderr[-500:]}")
    n, duration_us, sock_errors, status_errors, _, p50, p95, p99, mx, mean = (float(x) for x in line.split()[1:])
    ok = n - status_errors
    return {
        "requests": int(n),
        "failed": int(status_errors + sock_errors),
        "rps": ok / (duration_us / 1e6),
        "p50": p50 / 1000,
        "p95": p95 / 1000,
        "p99": p99 / 1000,
        "max": mx / 1000,
        "mean": mean / 1000,
    }


# -- the benchmark ---------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, help="reuse (or build into) this fraudflow home; default: a temp dir")
    parser.add_argument("--rate-seconds", type=int, default=8, help="duration of each fixed-rate hey run")
    parser.add_argument("--sat-seconds", type=int, default=10, help="duration of each wrk saturation run")
    parser.add_argument("--sat-rounds", type=int, default=2, help="interleaved saturation rounds")
    parser.add_argument("--inprocess-calls", type=int, default=2000)
    parser.add_argument("--quiet-wait", type=float, default=30, help="max s to wait for other load to stop")
    parser.add_argument("--no-two-workers", action="store_true", help="skip the 2-worker BentoML service")
    parser.add_argument("--no-redis", action="store_true", help="skip the service with the Redis online store")
    args = parser.parse_args()
    for tool in ("hey", "wrk"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install -y hey wrk")
    started = time.monotonic()
    temp_home = args.home is None
    home = args.home or Path(tempfile.mkdtemp(prefix="fraudflow-bench-serving-")) / "home"
    os.environ["FRAUDFLOW_HOME"] = str(home.resolve())
    os.environ["FRAUDFLOW_FEAST_ONLINE_STORE"] = "sqlite"  # the baseline; the Redis variant sets its own
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
    sys.path.insert(0, str(REPO))  # tests.helpers

    def on_term(signum, frame):  # turn SIGTERM into an exception so the servers are stopped
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)

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
    model_uri = f"models:/fraud-detector/{version}"
    with contextlib.suppress(ImportError):  # the service follows this state file when it exists
        from fraudflow.deployment import DeploymentState, read_state, write_state

        if read_state(settings).champion != version:
            write_state(settings, DeploymentState(champion=version, reason="serving benchmark"))

    work = Path(tempfile.mkdtemp(prefix="fraudflow-bench-serving-work-"))
    servers: list = []
    services_dir, redis = None, None
    try:
        if not args.no_redis:
            # Not under a 0700 directory: services.sh runs PostgreSQL as the postgres user.
            services_dir = Path(tempfile.mkdtemp(prefix="ff-bench-services-"))
            services_dir.chmod(0o755)
            log(f"starting PostgreSQL + Redis ({SERVICES_SH} start {services_dir})")
            services = start_services(services_dir)
            EXTRA_PIDS.append(services["redis_pid"])
            redis_url = services["env"]["FRAUDFLOW_REDIS_URL"]
            log(f"Redis at {redis_url} (pid {services['redis_pid']}); building the Redis home copy")
            redis = {
                "url": redis_url,
                "pid": services["redis_pid"],
                "settings": build_redis_home(settings, work / "redis-home", redis_url),
            }
        results = run(args, settings, version, model_uri, work, servers, redis)
    finally:
        for server in servers:
            with contextlib.suppress(Exception):
                server.stop()
        log("servers stopped")
        if services_dir is not None:
            with contextlib.suppress(Exception):
                stop_services(services_dir)
            log("PostgreSQL + Redis stopped")
            shutil.rmtree(services_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
        if temp_home:
            shutil.rmtree(home.parent, ignore_errors=True)
    report(results, version, build_seconds, time.monotonic() - started, args)


def run(args, settings, version: str, model_uri: str, work: Path, servers: list, redis: dict | None) -> dict:
    import httpx

    from fraudflow.features import MODEL_INPUTS
    from fraudflow.rollout import ServingProcess, replay_sample
    from fraudflow.serving import FeatureLookup, Scorer, Transaction

    # Requests: real transactions of the newest lake day (known customers and terminals).
    sample = replay_sample(settings, 2000, seed=0)
    bodies = [
        {
            "transaction_id": int(r.TRANSACTION_ID),
            "tx_datetime": r.TX_DATETIME.isoformat(),
            "customer_id": str(r.CUSTOMER_ID),
            "terminal_id": str(r.TERMINAL_ID),
            "tx_amount": float(r.TX_AMOUNT),
        }
        for r in sample.itertuples(index=False)
    ]
    transactions = [Transaction.model_validate(b) for b in bodies]
    scorer = Scorer(model_uri, settings)
    lookup = FeatureLookup(settings)
    assert scorer.version == version and lookup.ready, lookup.error
    redis_lookup = None
    if redis:
        redis_lookup = FeatureLookup(redis["settings"])
        os.environ["FRAUDFLOW_HOME"] = str(settings.root)  # open_store points it at the store's home
        assert redis_lookup.ready, redis_lookup.error

    # The same transactions as MLflow requests: their 15 model inputs from the in-process lookup.
    picks = list(range(HEY_WORKERS))
    score_bodies, mlflow_bodies = [], []
    for i in picks:
        features, degraded, _ = lookup.lookup([transactions[i]])
        assert not degraded.any(), f"transaction {bodies[i]} is not in the online store"
        if redis_lookup is not None:  # Redis holds the same values as SQLite
            on_redis, degraded, _ = redis_lookup.lookup([transactions[i]])
            assert not degraded.any(), f"transaction {bodies[i]} is not in the Redis online store"
            assert np.allclose(on_redis.to_numpy(), features.to_numpy()), (on_redis, features)
        score_bodies.append(json.dumps(bodies[i]))
        frame = {"columns": list(MODEL_INPUTS), "data": features[list(MODEL_INPUTS)].to_numpy().tolist()}
        mlflow_bodies.append(json.dumps({"dataframe_split": frame}))
    files = {"score": [], "mlflow": []}
    for kind, texts in (("score", score_bodies), ("mlflow", mlflow_bodies)):
        for i, text in enumerate(texts):
            files[kind].append(work / f"{kind}-{i}.json")
            files[kind][-1].write_text(text)
    lua = {
        "score": wrk_script(work / "score.lua", score_bodies),
        "mlflow": wrk_script(work / "mlflow.lua", mlflow_bodies),
    }

    # Servers: launch all, then wait (start-up overlaps).
    log("starting mlflow models serve and bentoml serve (1 and 2 workers)")
    mlflow_server = MlflowServer(settings, model_uri).launch()
    servers.append(mlflow_server)
    bento_env = {"FRAUDFLOW_MODEL_URI": model_uri, "FRAUDFLOW_FEAST_ONLINE_STORE": "sqlite"}
    worker_counts = (1,) if args.no_two_workers else (1, 2)
    variants = [(w, "sqlite", settings, bento_env) for w in worker_counts]
    if redis:  # next to the largest SQLite service, same worker count
        redis_env = {**bento_env, "FRAUDFLOW_FEAST_ONLINE_STORE": "redis", "FRAUDFLOW_REDIS_URL": redis["url"]}
        variants.append((worker_counts[-1], "redis", redis["settings"], redis_env))
    systems = {}
    for workers, store, home_settings, env in variants:
        proc = ServingProcess(home_settings, env={**env, "FRAUDFLOW_SERVING_WORKERS": str(workers)})
        servers.append(proc)
        proc.start()
        name = f"fraudflow BentoML, {workers} worker{'s' * (workers > 1)}"
        systems[name + (", Redis online store" if store == "redis" else "")] = {
            "kind": "score",
            "store": store,
            "url": f"{proc.url}/score",
            "pid": proc.proc.pid,
            "extra_pids": [redis["pid"]] if store == "redis" else [],
            "base": proc.url,
            "workers": workers,
            "sqlite_twin": name,
        }
    mlflow_server.wait_ready()
    systems["mlflow models serve, 1 worker"] = {
        "kind": "mlflow",
        "store": None,
        "url": f"{mlflow_server.url}/invocations",
        "pid": mlflow_server.proc.pid,
        "extra_pids": [],
        "base": mlflow_server.url,
        "workers": 1,
    }
    log(f"servers ready: {[(k, tree_size(s['pid'])) for k, s in systems.items()]}")

    # Correctness and warm-up: same version, same probability, every server.
    for name, s in systems.items():
        answer = httpx.post(
            s["url"],
            content=(score_bodies if s["kind"] == "score" else mlflow_bodies)[0],
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        assert answer.status_code == 200, (name, answer.status_code, answer.text[:500])
        if s["kind"] == "score":
            assert answer.json()["model_version"] == version and not answer.json()["degraded"], answer.text
            s["probability"] = answer.json()["fraud_probability"]
            if s["store"] == "redis":  # same features, same model: same score as on SQLite
                twin = systems[s["sqlite_twin"]]["probability"]
                assert abs(s["probability"] - twin) < 1e-9, (name, s["probability"], twin)
        s["first_answer"] = answer.text[:200]
        s["processes"] = tree_size(s["pid"])
        warm = wrk_saturation(s["url"], lua[s["kind"]], 3, connections=8)
        assert warm["failed"] == 0, (name, warm)
        log(f"warmed {name}: {warm['rps']:.0f} req/s, answer {s['first_answer']}")
    names = list(systems)
    quiet = wait_quiet(args.quiet_wait)

    # 1. Fixed offered rates, systems interleaved (rotated order per rate).
    fixed = {name: {} for name in names}
    for k, (label, rate, burst) in enumerate(RUNS):
        for name in names[k % len(names) :] + names[: k % len(names)]:
            s = systems[name]
            other = OtherLoad().start()
            r = hey_fixed_rate(s["url"], files[s["kind"]], rate, args.rate_seconds, burst=burst)
            fixed[name][label] = {**r, "other": other.cores()}
            log(f"{label} req/s {name}: {r['rps']:.0f} achieved, p50 {r['p50']:.1f} p99 {r['p99']:.1f} ms")

    # 2. Saturation, interleaved rounds, with the server's CPU seconds per request.
    saturation = {name: [] for name in names}
    for k in range(args.sat_rounds):
        for name in names[k % len(names) :] + names[: k % len(names)]:
            s = systems[name]
            cpu0, other = tree_cpu(s["pid"], s["extra_pids"]), OtherLoad().start()
            r = wrk_saturation(s["url"], lua[s["kind"]], args.sat_seconds)
            r["other"] = other.cores()
            cpu, r["split"] = cpu_split(cpu0, tree_cpu(s["pid"], s["extra_pids"]))
            r["cpu_ms"] = cpu * 1000 / max(r["requests"], 1)
            saturation[name].append(r)
            log(f"saturation {name}: {r['rps']:.0f} req/s, p99 {r['p99']:.1f} ms, {r['cpu_ms']:.2f} CPU ms/req")

    # 3. In-process floor, interleaved per call: predict on one row; lookup + predict.
    gc.collect()
    gc.freeze()  # as the service does after start-up: this process's objects leave the GC
    other = OtherLoad().start()
    one_row = lookup.lookup([transactions[0]])[0]
    # The model alone, without the sklearn wrapper and pandas: the XGBoost booster on a float32 row.
    booster = scorer.model.get_booster() if scorer.spec.flavor == "xgboost" else None
    one_array = one_row.to_numpy(dtype=np.float32)
    predict_ms, lookup_ms, both_ms, booster_ms, redis_ms = [], [], [], [], []
    deadline = time.monotonic() + 30
    for i in range(args.inprocess_calls):
        if time.monotonic() > deadline:
            break
        t0 = time.perf_counter()
        scorer.predict(one_row)
        t1 = time.perf_counter()
        x, _, _ = lookup.lookup([transactions[i % len(transactions)]])
        t2 = time.perf_counter()
        scorer.predict(x)
        t3 = time.perf_counter()
        if booster is not None:
            t4 = time.perf_counter()
            booster.inplace_predict(one_array)
            booster_ms.append((time.perf_counter() - t4) * 1000)
        if redis_lookup is not None:
            t5 = time.perf_counter()
            redis_lookup.lookup([transactions[i % len(transactions)]])
            redis_ms.append((time.perf_counter() - t5) * 1000)
        predict_ms.append((t1 - t0) * 1000)
        lookup_ms.append((t2 - t1) * 1000)
        both_ms.append((t3 - t1) * 1000)
    inprocess = {
        "predict": predict_ms[20:],
        "booster": booster_ms[20:],
        "lookup": lookup_ms[20:],
        "both": both_ms[20:],
        "lookup_redis": redis_ms[20:],
        "other": other.cores(),
    }
    log(f"in-process: {len(predict_ms)} calls")

    # 4. Batches: /score_batch (1-worker service) vs in-process lookup + predict, interleaved.
    batch_system = names[0]
    batch_url = systems[batch_system]["base"] + "/score_batch"
    batches = {100: [list(range(i, i + 100)) for i in range(0, 1000, 100)], 1000: [list(range(0, 1000))]}
    if len(transactions) >= 2000:
        batches[1000].append(list(range(1000, 2000)))
    batch = {}
    with httpx.Client(timeout=60, headers={"Content-Type": "application/json"}) as client:
        for size, groups in batches.items():
            payloads = [json.dumps({"transactions": [bodies[i] for i in g]}).encode() for g in groups]
            client.post(batch_url, content=payloads[0]).raise_for_status()  # warm
            lookup.lookup([transactions[i] for i in groups[0]])
            http_s, local_s, rows, requests = 0.0, 0.0, 0, 0
            other = OtherLoad().start()
            deadline = time.monotonic() + 20
            for rep in range(max(20, 3 * len(groups)) if size == 100 else 8):
                if time.monotonic() > deadline:
                    break
                g = groups[rep % len(groups)]
                t0 = time.perf_counter()
                answer = client.post(batch_url, content=payloads[rep % len(groups)])
                t1 = time.perf_counter()
                answer.raise_for_status()
                assert len(answer.json()["results"]) == size
                t2 = time.perf_counter()
                x, _, _ = lookup.lookup([transactions[i] for i in g])
                scorer.predict(x)
                t3 = time.perf_counter()
                http_s += t1 - t0
                local_s += t3 - t2
                rows += size
                requests += 1
            batch[size] = {"requests": requests, "http": rows / http_s, "local": rows / local_s, "other": other.cores()}
            log(f"batch {size}: {rows / http_s:,.0f} rows/s HTTP, {rows / local_s:,.0f} rows/s in-process")
    return {
        "systems": systems,
        "fixed": fixed,
        "saturation": saturation,
        "inprocess": inprocess,
        "batch": batch,
        "batch_system": batch_system,
        "quiet": quiet,
    }


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def report(res: dict, version: str, build_seconds: float | None, total: float, args) -> None:
    systems, fixed, saturation = res["systems"], res["fixed"], res["saturation"]
    lookups = {
        "sqlite": "yes: Feast online (SQLite) in each request",
        "redis": "yes: Feast online (Redis) in each request",
        None: "no: 15 features in the body",
    }
    feast = {name: lookups[s["store"]] for name, s in systems.items()}
    print(f"\n## Serving: fraud-detector v{version}, one run, 2 cores shared with the load generator\n")
    print(
        "MLflow's rows exclude the Feast lookup (the request carries the 15 model inputs, looked up"
        " in-process for the same transaction); fraudflow's include it. 'other load' = CPU cores used"
        f" meanwhile by processes outside this benchmark (before measuring: {res['quiet']:.2f})."
    )
    print("\n### /score at fixed offered rates (hey, 8 workers, 8 distinct bodies, per-request latencies)\n")
    print(
        "| system | feature lookup | offered req/s | achieved req/s | p50 ms | p95 ms | p99 ms | max ms | failed"
        " | other load |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, _, _ in RUNS:
        for name, by_rate in fixed.items():
            r = by_rate[label]
            print(
                f"| {name} | {feast[name]} | {label} | {r['rps']:.0f} | {r['p50']:.2f} | "
                f"{r['p95']:.2f} | {r['p99']:.2f} | {r['max']:.1f} | {r['failed']} | {r['other']:.2f} |"
            )
    print(
        f"\n{args.rate_seconds} s per run, systems interleaved (order rotated per rate). Evenly spaced: 8 hey"
        " processes (-c 1, -q rate/8) started 1/rate apart. Bursts: 4 hey processes x -c 2 -q 25 started"
        " together; hey's workers then fire in step, 8 requests at once every 40 ms."
    )

    print(f"\n### Saturation (wrk -t2 -c16 --latency, {args.sat_seconds} s per round, {args.sat_rounds} rounds)\n")
    print(
        "| system | feature lookup | req/s (median) | req/s per round | p50 ms | p99 ms | max ms | server CPU ms/req"
        " | CPU split (processes) | other load |"
    )
    print("|---|---|---:|---|---:|---:|---:|---:|---|---:|")
    medians = {}
    for name, rounds in saturation.items():
        rps = [r["rps"] for r in rounds]
        medians[name] = float(np.median(rps))
        fails = sum(r["failed"] for r in rounds)
        print(
            f"| {name} | {feast[name]} | {medians[name]:.0f}"
            + (f" ({fails} failed)" if fails else "")
            + f" | {', '.join(f'{x:.0f}' for x in rps)} | {np.median([r['p50'] for r in rounds]):.2f}"
            f" | {np.median([r['p99'] for r in rounds]):.2f} | {max(r['max'] for r in rounds):.1f}"
            f" | {np.median([r['cpu_ms'] for r in rounds]):.2f} | {'; '.join(r['split'] for r in rounds)}"
            f" | {max(r['other'] for r in rounds):.2f} |"
        )
    print(
        "\nRounds interleaved (order rotated). Server CPU = user+system time of the server's process tree"
        " (circus arbiter + workers, or uvicorn; plus redis-server for the Redis online store) / requests;"
        " CPU split = share of each busy process per round."
    )

    inp = res["inprocess"]
    print(f"\n### In-process floor ({len(inp['predict'])} calls each, interleaved; other load {inp['other']:.2f})\n")
    print("| step | p50 ms | p99 ms | mean ms |\n|---|---:|---:|---:|")
    for label, key in (
        ("Scorer.predict, one row (XGBClassifier.predict_proba on a DataFrame)", "predict"),
        ("the model alone: Booster.inplace_predict on a float32 numpy row", "booster"),
        ("FeatureLookup.lookup, one transaction", "lookup"),
        ("FeatureLookup.lookup + Scorer.predict, one transaction", "both"),
        ("FeatureLookup.lookup, one transaction, Redis online store", "lookup_redis"),
    ):
        v = np.array(inp[key])
        if not len(v):
            continue
        print(f"| {label} | {pct(v, 50):.3f} | {pct(v, 99):.3f} | {v.mean():.3f} |")

    print(f"\n### /score_batch ({res['batch_system']}, one connection) vs in-process lookup + predict\n")
    print(
        "| batch size | requests | HTTP rows/s | in-process rows/s | HTTP / in-process | other load |\n"
        "|---:|---:|---:|---:|---:|---:|"
    )
    for size, b in res["batch"].items():
        print(
            f"| {size} | {b['requests']} | {b['http']:,.0f} | {b['local']:,.0f} | {b['http'] / b['local']:.0%}"
            f" | {b['other']:.2f} |"
        )
    print("\nEach batch is sent over HTTP, then looked up and predicted in-process, alternately.")

    redis_names = [n for n in systems if systems[n]["store"] == "redis"]
    for name in redis_names:
        report_redis(res, name, systems[name]["sqlite_twin"], args)

    ml = next(n for n in systems if systems[n]["kind"] == "mlflow")
    bentos = [n for n in systems if systems[n]["kind"] == "score"]
    print("\n### Targets\n")
    print("| target | system | result | verdict |\n|---|---|---|---|")
    for name in bentos:
        p99 = fixed[name]["200"]["p99"]
        achieved = fixed[name]["200"]["rps"]
        print(
            f"| p99 <= {TARGET_P99_MS:g} ms at 200 req/s (evenly spaced) incl. Feast | {name} | p99 {p99:.2f} ms "
            f"({achieved:.0f} req/s achieved) | {verdict(p99 <= TARGET_P99_MS and achieved >= 190)} |"
        )
    for name in bentos:
        ratio = medians[name] / medians[ml]
        print(
            f"| saturation >= {TARGET_SAT_RATIO:g}x MLflow's ({ml}) | {name} | {medians[name]:.0f} / "
            f"{medians[ml]:.0f} req/s = {ratio:.2f}x | {verdict(ratio >= TARGET_SAT_RATIO)} |"
        )
    for size, b in res["batch"].items():
        share = b["http"] / b["local"]
        print(
            f"| /score_batch >= {TARGET_BATCH_SHARE:.0%} of in-process rows/s, batch {size} | {res['batch_system']}"
            f" | {share:.0%} | {verdict(share >= TARGET_BATCH_SHARE)} |"
        )
    built = f"home built in {build_seconds:.0f} s ({BUILD})" if build_seconds else "home reused"
    procs = ", ".join(f"{n}: {s['processes']}" for n, s in systems.items())
    print(
        f"\n{built}; whole run {total:.0f} s. Processes per server tree: {procs}. The service's worker count"
        " comes from FRAUDFLOW_SERVING_WORKERS (default 1)."
    )


def report_redis(res: dict, redis_name: str, sqlite_name: str, args) -> None:
    """The Redis-backed service next to its SQLite twin (same worker count, same run)."""
    fixed, saturation, inp = res["fixed"], res["saturation"], res["inprocess"]
    print(f"\n### Feast online store: Redis vs SQLite ({sqlite_name}, same run, interleaved)\n")
    print("| measurement | SQLite | Redis | Redis - SQLite |\n|---|---:|---:|---:|")

    def row(label: str, a: float, b: float, fmt: str = ".2f") -> None:
        print(f"| {label} | {a:{fmt}} | {b:{fmt}} | {b - a:+{fmt}} |")

    for label, _, _ in RUNS:
        a, b = fixed[sqlite_name][label], fixed[redis_name][label]
        row(f"/score p50 ms at {label} req/s", a["p50"], b["p50"])
        row(f"/score p99 ms at {label} req/s", a["p99"], b["p99"])
        row(f"achieved req/s at {label} req/s", a["rps"], b["rps"], ".0f")
        row(f"failed requests at {label} req/s", a["failed"], b["failed"], "d")
    sat = {n: saturation[n] for n in (sqlite_name, redis_name)}
    row(
        "saturation req/s (median of rounds)",
        np.median([r["rps"] for r in sat[sqlite_name]]),
        np.median([r["rps"] for r in sat[redis_name]]),
        ".0f",
    )
    for key, label in (("p50", "saturation p50 ms"), ("p99", "saturation p99 ms")):
        row(label, np.median([r[key] for r in sat[sqlite_name]]), np.median([r[key] for r in sat[redis_name]]))
    row(
        "saturation failed requests",
        sum(r["failed"] for r in sat[sqlite_name]),
        sum(r["failed"] for r in sat[redis_name]),
        "d",
    )
    row(
        "server CPU ms/req (Redis: incl. redis-server)",
        np.median([r["cpu_ms"] for r in sat[sqlite_name]]),
        np.median([r["cpu_ms"] for r in sat[redis_name]]),
    )
    if len(inp["lookup_redis"]):
        for q in (50, 99):
            row(f"in-process FeatureLookup.lookup p{q} ms", pct(inp["lookup"], q), pct(inp["lookup_redis"], q), ".3f")
    print(
        "\nBoth services: same model version, same worker count, same request bodies; the Redis one runs on a"
        " copy of the home whose Feast registry was re-applied and materialized (initial run, same end) into"
        " Redis db 1 (redis-server on loopback, same 2 cores). Feature values and the first answer's"
        " probability were checked equal to SQLite's."
    )


if __name__ == "__main__":
    main()
