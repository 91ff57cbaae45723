"""The measurements, systems interleaved (the machine's speed drifts ~30% over a run): fixed
offered rates (hey), saturation (wrk), the in-process floor, /score_batch against in-process."""

from __future__ import annotations

import gc
import json
import time

import numpy as np
from _bench.load import hey_fixed_rate, wrk_saturation
from _bench.output import log
from _bench.processes import OtherLoad, cpu_split, tree_cpu

from _serving import RUNS, rotated
from _serving.systems import InProcess, Requests


def fixed_rates(systems: dict[str, dict], requests: Requests, seconds: int) -> dict[str, dict]:
    """Each RUNS rate on every system (order rotated per rate): name -> label -> hey summary."""
    names = list(systems)
    fixed = {name: {} for name in names}
    for k, (label, rate, burst) in enumerate(RUNS):
        for name in rotated(names, k):
            s = systems[name]
            other = OtherLoad().start()
            r = hey_fixed_rate(s["url"], requests.files[s["kind"]], rate, seconds, burst=burst)
            fixed[name][label] = {**r, "other": other.cores()}
            log(f"{label} req/s {name}: {r['rps']:.0f} achieved, p50 {r['p50']:.1f} p99 {r['p99']:.1f} ms")
    return fixed


def saturation(systems: dict[str, dict], requests: Requests, seconds: int, rounds: int) -> dict[str, list]:
    """``rounds`` wrk runs per system, interleaved, with the server's CPU seconds per request
    and its split across the server's processes: name -> [wrk summary per round]."""
    names = list(systems)
    out = {name: [] for name in names}
    for k in range(rounds):
        for name in rotated(names, k):
            s = systems[name]
            cpu0, other = tree_cpu(s["pid"], s["extra_pids"]), OtherLoad().start()
            r = wrk_saturation(s["url"], requests.lua[s["kind"]], seconds)
            r["other"] = other.cores()
            cpu, r["split"] = cpu_split(cpu0, tree_cpu(s["pid"], s["extra_pids"]))
            r["cpu_ms"] = cpu * 1000 / max(r["requests"], 1)
            out[name].append(r)
            log(f"saturation {name}: {r['rps']:.0f} req/s, p99 {r['p99']:.1f} ms, {r['cpu_ms']:.2f} CPU ms/req")
    return out


def in_process_floor(local: InProcess, transactions: list, calls: int) -> dict[str, list | float]:
    """Per call, interleaved (at most 30 s): ``Scorer.predict`` on one row, the bare XGBoost
    booster, ``lookup`` (SQLite, and Redis when there) and ``lookup + predict``; ms per call,
    the first 20 calls dropped."""
    gc.collect()
    gc.freeze()  # as the service does after start-up: this process's objects leave the GC
    other = OtherLoad().start()
    scorer, lookup, redis_lookup = local.scorer, local.lookup, local.redis_lookup
    one_row = lookup.lookup([transactions[0]])[0]
    # The model alone, without the sklearn wrapper and pandas: the XGBoost booster on a float32 row.
    booster = scorer._booster  # the XGBoost booster the service calls (None for the MLP)
    one_array = one_row.to_numpy(dtype=np.float32)
    ms = {key: [] for key in ("predict", "booster", "lookup", "both", "lookup_redis")}
    deadline = time.monotonic() + 30
    for i in range(calls):
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
            ms["booster"].append((time.perf_counter() - t4) * 1000)
        if redis_lookup is not None:
            t5 = time.perf_counter()
            redis_lookup.lookup([transactions[i % len(transactions)]])
            ms["lookup_redis"].append((time.perf_counter() - t5) * 1000)
        ms["predict"].append((t1 - t0) * 1000)
        ms["lookup"].append((t2 - t1) * 1000)
        ms["both"].append((t3 - t1) * 1000)
    result = {**{key: values[20:] for key, values in ms.items()}, "other": other.cores()}
    for rate in (50, 200):
        result[f"machine_{rate}"] = machine_tail(rate)
    log(f"in-process: {len(ms['predict'])} calls")
    return result


def _fixed_work() -> int:
    total = 0
    for i in range(20_000):  # ~1.2-1.7 ms of pure Python here: no I/O, no allocation to speak of
        total += i * i
    return total


def machine_tail(rate: float, calls: int = 1000) -> list[float]:
    """The machine's own latency tail: the same pure-Python task ``calls`` times, evenly spaced at
    ``rate``/s with the process idle in between (as a worker between requests); ms per call.
    Whatever p99/p50 this shows, no service on this machine can beat."""
    ms, start = [], time.perf_counter()
    for i in range(calls):
        while time.perf_counter() < start + i / rate:
            time.sleep(0.0002)
        t0 = time.perf_counter()
        _fixed_work()
        ms.append((time.perf_counter() - t0) * 1000)
    return ms


def batches(url: str, requests: Requests, local: InProcess) -> dict[int, dict]:
    """/score_batch at ``url`` (one connection) against in-process lookup + predict of the same
    rows, alternately: batches of 100 (10 distinct) and 1000 (1 or 2 distinct)."""
    import httpx

    groups_by_size = {100: [list(range(i, i + 100)) for i in range(0, 1000, 100)], 1000: [list(range(0, 1000))]}
    if len(requests.transactions) >= 2000:
        groups_by_size[1000].append(list(range(1000, 2000)))
    out = {}
    with httpx.Client(timeout=60, headers={"Content-Type": "application/json"}) as client:
        for size, groups in groups_by_size.items():
            out[size] = _batch_size(client, url, size, groups, requests, local)
            log(f"batch {size}: {out[size]['http']:,.0f} rows/s HTTP, {out[size]['local']:,.0f} rows/s in-process")
    return out


def _batch_size(client, url: str, size: int, groups: list[list[int]], requests: Requests, local: InProcess) -> dict:
    transactions = requests.transactions
    payloads = [json.dumps({"transactions": [requests.bodies[i] for i in g]}).encode() for g in groups]
    client.post(url, content=payloads[0]).raise_for_status()  # warm
    local.lookup.lookup([transactions[i] for i in groups[0]])
    http_s, local_s, rows, sent = 0.0, 0.0, 0, 0
    other = OtherLoad().start()
    deadline = time.monotonic() + 20
    for rep in range(max(20, 3 * len(groups)) if size == 100 else 8):
        if time.monotonic() > deadline:
            break
        g = groups[rep % len(groups)]
        t0 = time.perf_counter()
        answer = client.post(url, content=payloads[rep % len(groups)])
        t1 = time.perf_counter()
        answer.raise_for_status()
        assert len(answer.json()["results"]) == size
        t2 = time.perf_counter()
        x, _, _ = local.lookup.lookup([transactions[i] for i in g])
        local.scorer.predict(x)
        t3 = time.perf_counter()
        http_s += t1 - t0
        local_s += t3 - t2
        rows += size
        sent += 1
    return {"requests": sent, "http": rows / http_s, "local": rows / local_s, "other": other.cores()}
