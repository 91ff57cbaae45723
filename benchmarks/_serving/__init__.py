"""The serving benchmark's steps (``benchmarks/serving.py`` runs them): ``systems`` (requests,
servers, warm-up), ``measure`` (fixed rates, saturation, in-process floor, batches), ``report``
(the tables). Shared constants here."""

# (label, offered req/s, bursts): evenly spaced arrivals, plus 200 req/s as hey -c 8 -q 25 sends it
RUNS = (("50", 50, False), ("100", 100, False), ("200", 200, False), ("200 in bursts of 8", 200, True))
HEY_WORKERS = 8  # hey workers per fixed-rate run; 8 distinct request bodies
BUILD = {"days": 40, "customers": 2000, "terminals": 4000, "seed": 11}
TARGET_P99_MS, TARGET_SAT_RATIO, TARGET_BATCH_SHARE = 12.0, 3.0, 0.5  # issue 13's targets
PACKAGES = ("bentoml", "mlflow", "feast", "xgboost-cpu")  # versions on the conditions line


def rotated(names: list[str], k: int) -> list[str]:
    """``names`` starting at the ``k``-th (mod len): systems interleaved, order rotated per run."""
    return names[k % len(names) :] + names[: k % len(names)]
