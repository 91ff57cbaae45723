"""The serving benchmark's tables (Markdown, as the README quotes them)."""

from __future__ import annotations

import numpy as np
from _bench.output import print_table
from _bench.timing import pct

from _serving import BUILD, PACKAGES, RUNS, TARGET_BATCH_SHARE, TARGET_P99_MS, TARGET_SAT_RATIO

LOOKUPS = {
    "sqlite": "yes: Feast online (SQLite) in each request",
    "redis": "yes: Feast online (Redis) in each request",
    None: "no: 15 features in the body",
}

FIXED_COLUMNS = (
    "system",
    "feature lookup",
    "offered req/s",
    "achieved req/s",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "max ms",
    "failed",
    "other load",
)
SATURATION_COLUMNS = (
    "system",
    "feature lookup",
    "req/s (median)",
    "req/s per round",
    "p50 ms",
    "p99 ms",
    "max ms",
    "server CPU ms/req",
    "CPU split (processes)",
    "other load",
)


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def report(res: dict, version: str, build_seconds: float | None, total: float, args) -> None:
    systems = res["systems"]
    print(f"\n## Serving: fraud-detector v{version}, one run, 2 cores shared with the load generator\n")
    print(
        "MLflow's rows exclude the Feast lookup (the request carries the 15 model inputs, looked up"
        " in-process for the same transaction); fraudflow's include it. 'other load' = CPU cores used"
        f" meanwhile by processes outside this benchmark (before measuring: {res['quiet']:.2f})."
    )
    fixed_table(res, args)
    medians = saturation_table(res, args)
    inprocess_table(res["inprocess"])
    batch_table(res)
    for name in [n for n in systems if systems[n]["store"] == "redis"]:
        report_redis(res, name, systems[name]["sqlite_twin"])
    targets_table(res, medians)
    built = f"home built in {build_seconds:.0f} s ({BUILD})" if build_seconds else "home reused"
    procs = ", ".join(f"{n}: {s['processes']} ({s['rss_mb']:.0f} MB)" for n, s in systems.items())
    print(
        f"\n{built}; whole run {total:.0f} s. Processes per server tree (resident memory after warm-up): {procs}."
        " The service's worker count comes from FRAUDFLOW_SERVING_WORKERS (default 1)."
    )


def fixed_table(res: dict, args) -> None:
    feast = {name: LOOKUPS[s["store"]] for name, s in res["systems"].items()}
    rows = []
    for label, _, _ in RUNS:
        for name, by_rate in res["fixed"].items():
            r = by_rate[label]
            latencies = [f"{r[q]:.2f}" for q in ("p50", "p95", "p99")]
            cells = [f"{r['rps']:.0f}", *latencies, f"{r['max']:.1f}", r["failed"], f"{r['other']:.2f}"]
            rows.append((name, feast[name], label, *cells))
    print_table(
        "/score at fixed offered rates (hey, 8 workers, 8 distinct bodies, per-request latencies)",
        FIXED_COLUMNS,
        rows,
        align="llrrrrrrrr",
        packages=PACKAGES,
        note=f"{args.rate_seconds} s per run, systems interleaved (order rotated per rate). Evenly spaced: 8 hey"
        " processes (-c 1, -q rate/8) started 1/rate apart. Bursts: 4 hey processes x -c 2 -q 25 started"
        " together; hey's workers then fire in step, 8 requests at once every 40 ms.",
    )


def saturation_table(res: dict, args) -> dict[str, float]:
    """Prints the saturation table; returns each system's median req/s over the rounds."""
    medians, rows = {}, []
    for name, rounds in res["saturation"].items():
        rps = [r["rps"] for r in rounds]
        medians[name] = float(np.median(rps))
        fails = sum(r["failed"] for r in rounds)
        median = {key: f"{np.median([r[key] for r in rounds]):.2f}" for key in ("p50", "p99", "cpu_ms")}
        rows.append(
            (
                name,
                LOOKUPS[res["systems"][name]["store"]],
                f"{medians[name]:.0f}" + (f" ({fails} failed)" if fails else ""),
                ", ".join(f"{x:.0f}" for x in rps),
                median["p50"],
                median["p99"],
                f"{max(r['max'] for r in rounds):.1f}",
                median["cpu_ms"],
                "; ".join(r["split"] for r in rounds),
                f"{max(r['other'] for r in rounds):.2f}",
            )
        )
    print_table(
        f"Saturation (wrk -t2 -c16 --latency, {args.sat_seconds} s per round, {args.sat_rounds} rounds)",
        SATURATION_COLUMNS,
        rows,
        align="llrlrrrrlr",
        note="Rounds interleaved (order rotated). Server CPU = user+system time of the server's process tree"
        " (circus arbiter + workers, or uvicorn; plus redis-server for the Redis online store) / requests;"
        " CPU split = share of each busy process per round.",
    )
    return medians


def inprocess_table(inp: dict) -> None:
    rows = []
    for label, key in (
        ("Scorer.predict, one row (XGBClassifier.predict_proba on a DataFrame)", "predict"),
        ("the model alone: Booster.inplace_predict on a float32 numpy row", "booster"),
        ("FeatureLookup.lookup, one transaction", "lookup"),
        ("FeatureLookup.lookup + Scorer.predict, one transaction", "both"),
        ("FeatureLookup.lookup, one transaction, Redis online store", "lookup_redis"),
        ("the machine: a fixed pure-Python task, 50 evenly spaced calls/s (no fraudflow code)", "machine_50"),
        ("the machine: the same task, 200 evenly spaced calls/s", "machine_200"),
    ):
        v = np.array(inp[key])
        if len(v):
            rows.append((label, f"{pct(v, 50):.3f}", f"{pct(v, 99):.3f}", f"{v.mean():.3f}"))
    print_table(
        f"In-process floor ({len(inp['predict'])} calls each, interleaved; other load {inp['other']:.2f})",
        ("step", "p50 ms", "p99 ms", "mean ms"),
        rows,
    )


def batch_table(res: dict) -> None:
    rows = [
        (
            size,
            b["requests"],
            f"{b['http']:,.0f}",
            f"{b['local']:,.0f}",
            f"{b['http'] / b['local']:.0%}",
            f"{b['other']:.2f}",
        )
        for size, b in res["batch"].items()
    ]
    print_table(
        f"/score_batch ({res['batch_system']}, one connection) vs in-process lookup + predict",
        ("batch size", "requests", "HTTP rows/s", "in-process rows/s", "HTTP / in-process", "other load"),
        rows,
        align="rrrrrr",
        note="Each batch is sent over HTTP, then looked up and predicted in-process, alternately.",
    )


def targets_table(res: dict, medians: dict[str, float]) -> None:
    systems, fixed = res["systems"], res["fixed"]
    ml = next(n for n in systems if systems[n]["kind"] == "mlflow")
    bentos = [n for n in systems if systems[n]["kind"] == "score"]
    rows = []
    for name in bentos:
        p99, achieved = fixed[name]["200"]["p99"], fixed[name]["200"]["rps"]
        target = f"p99 <= {TARGET_P99_MS:g} ms at 200 req/s (evenly spaced) incl. Feast"
        result = f"p99 {p99:.2f} ms ({achieved:.0f} req/s achieved)"
        rows.append((target, name, result, verdict(p99 <= TARGET_P99_MS and achieved >= 190)))
    for name in bentos:
        ratio = medians[name] / medians[ml]
        result = f"{medians[name]:.0f} / {medians[ml]:.0f} req/s = {ratio:.2f}x"
        target = f"saturation >= {TARGET_SAT_RATIO:g}x MLflow's ({ml})"
        rows.append((target, name, result, verdict(ratio >= TARGET_SAT_RATIO)))
    for size, b in res["batch"].items():
        share = b["http"] / b["local"]
        target = f"/score_batch >= {TARGET_BATCH_SHARE:.0%} of in-process rows/s, batch {size}"
        rows.append((target, res["batch_system"], f"{share:.0%}", verdict(share >= TARGET_BATCH_SHARE)))
    print_table("Targets", ("target", "system", "result", "verdict"), rows, align="llll")


def report_redis(res: dict, redis_name: str, sqlite_name: str) -> None:
    """The Redis-backed service next to its SQLite twin (same worker count, same run)."""
    fixed, inp = res["fixed"], res["inprocess"]
    sat = {n: res["saturation"][n] for n in (sqlite_name, redis_name)}
    rows = []

    def row(label: str, a: float, b: float, fmt: str = ".2f") -> None:
        rows.append((label, f"{a:{fmt}}", f"{b:{fmt}}", f"{b - a:+{fmt}}"))

    def sat_row(label: str, key: str, fmt: str = ".2f", how=np.median) -> None:
        row(label, how([r[key] for r in sat[sqlite_name]]), how([r[key] for r in sat[redis_name]]), fmt)

    for label, _, _ in RUNS:
        a, b = fixed[sqlite_name][label], fixed[redis_name][label]
        row(f"/score p50 ms at {label} req/s", a["p50"], b["p50"])
        row(f"/score p99 ms at {label} req/s", a["p99"], b["p99"])
        row(f"achieved req/s at {label} req/s", a["rps"], b["rps"], ".0f")
        row(f"failed requests at {label} req/s", a["failed"], b["failed"], "d")
    sat_row("saturation req/s (median of rounds)", "rps", ".0f")
    sat_row("saturation p50 ms", "p50")
    sat_row("saturation p99 ms", "p99")
    sat_row("saturation failed requests", "failed", "d", how=sum)
    sat_row("server CPU ms/req (Redis: incl. redis-server)", "cpu_ms")
    if len(inp["lookup_redis"]):
        for q in (50, 99):
            row(f"in-process FeatureLookup.lookup p{q} ms", pct(inp["lookup"], q), pct(inp["lookup_redis"], q), ".3f")
    print_table(
        f"Feast online store: Redis vs SQLite ({sqlite_name}, same run, interleaved)",
        ("measurement", "SQLite", "Redis", "Redis - SQLite"),
        rows,
        note="Both services: same model version, same worker count, same request bodies; the Redis one runs on a"
        " copy of the home whose Feast registry was re-applied and materialized (initial run, same end) into"
        " Redis db 1 (redis-server on loopback, same 2 cores). Feature values and the first answer's"
        " probability were checked equal to SQLite's.",
    )
