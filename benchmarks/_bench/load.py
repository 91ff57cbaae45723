"""Load generation on loopback: ``hey`` at fixed offered rates (per-request latencies) and
``wrk`` at saturation (a Lua script rotating request bodies). Both need the Debian packages
``hey`` and ``wrk``."""

from __future__ import annotations

import csv
import io
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from _bench.timing import pct

TOOLS = ("hey", "wrk")


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def _hey(url: str, body: Path, out: Path, *, workers: int, qps: float, seconds: int) -> subprocess.Popen:
    cmd = ["hey", "-z", f"{seconds}s", "-c", str(workers), "-q", f"{qps:g}", "-t", "10", "-o", "csv"]
    return subprocess.Popen(
        [*cmd, "-m", "POST", "-T", "application/json", "-D", str(body), url],
        stdout=out.open("wb"),
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _hey_summary(outs: list[Path], seconds: int) -> dict:
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


def hey_fixed_rate(url: str, body_files: list[Path], rate: float, seconds: int, *, burst: bool = False) -> dict:
    """``rate`` req/s offered by ``len(body_files)`` hey workers (``-q`` is per worker), one
    distinct body each; per-request latencies (ms) from ``-o csv``.

    hey starts a worker's ticker when the worker starts, so workers started together fire
    together: ``-c 8 -q 25`` offers 200 req/s as a burst of 8 every 40 ms. By default each
    worker is its own hey process (one distinct body each), started 1/rate apart: evenly spaced
    arrivals. ``burst=True`` keeps the bursts (half as many processes x 2 workers, started at once).
    """
    qps = rate / len(body_files)
    groups = [(f, 2) for f in body_files[: len(body_files) // 2]] if burst else [(f, 1) for f in body_files]
    procs, outs = [], []
    t0 = time.monotonic()
    try:
        for i, (body, workers) in enumerate(groups):
            if not burst:
                time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
            outs.append(body.with_suffix(f".{i}.csv"))
            procs.append(_hey(url, body, outs[-1], workers=workers, qps=qps, seconds=seconds))
        for p in procs:
            p.wait(timeout=seconds + 30)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
    return _hey_summary(outs, seconds)


WRK_LUA = """
local bodies = {%s}
local fresh_ids = %s
local i = 0
local threads = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
setup = function(thread)
  threads = threads + 1
  thread:set("base", 1000000000 + threads * 100000000)
end
request = function()
  i = i + 1
  local body = bodies[(i %% #bodies) + 1]
  if fresh_ids then
    body = (body:gsub('"transaction_id": %%d+', '"transaction_id": ' .. (base + i)))
  end
  return wrk.format(nil, nil, nil, body)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %%d %%d %%d %%d %%d %%.1f %%.1f %%.1f %%.1f %%.1f\\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max, latency.mean))
end
"""


def wrk_script(path: Path, bodies: list[str], *, fresh_ids: bool = False) -> Path:
    """A wrk Lua script POSTing ``bodies`` (JSON texts) in turn, printing a ``BENCH`` summary line.

    ``fresh_ids``: every request gets a transaction id of its own (per wrk thread: base + counter),
    so fraudflow's service does its whole per-transaction work, the card-history write included;
    a repeated id is a client retry, which it only reads.
    """
    path.write_text(WRK_LUA % (", ".join(f"[==[{b}]==]" for b in bodies), "true" if fresh_ids else "false"))
    return path


def wrk_saturation(url: str, script: Path, seconds: int, *, threads: int = 2, connections: int = 16) -> dict:
    """``wrk`` as fast as it goes for ``seconds``: req/s of successful requests, failures, latencies (ms)."""
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
