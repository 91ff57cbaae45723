"""Transaction simulator after the Fraud Detection Handbook (Le Borgne et al.), vectorised.

Same generative design as the published reference (customer/terminal profiles, Poisson
daily counts, three fraud scenarios applied in order), but drawn with numpy arrays instead
of per-customer Python loops, so the published 183-day run takes seconds, not minutes.
Drift can be injected from a date on, for monitoring demos and tests.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from fraudflow.layout import partition_dir
from fraudflow.schema import RAW_COLUMNS

SECONDS_PER_DAY = 86_400


class DriftSpec(BaseModel):
    """Changes applied to every day on or after ``start`` (the rest of the history is untouched).

    ``amount_scale`` multiplies genuine amounts (before the fraud rules, so big spenders also
    trip scenario 1 more often); ``night_share`` is the share of transactions moved to 00:00-06:00;
    the compromised counts replace the daily 2 terminals / 3 customers of scenarios 2 and 3.
    """

    start: dt.date
    amount_scale: float = Field(1.0, gt=0)
    night_share: float = Field(0.0, ge=0, le=1)
    compromised_terminals_per_day: int | None = Field(None, ge=0)
    compromised_customers_per_day: int | None = Field(None, ge=0)


class SimulationConfig(BaseModel):
    start: dt.date = dt.date(2018, 4, 1)
    days: int = Field(183, ge=1)
    customers: int = Field(5_000, ge=1)
    terminals: int = Field(10_000, ge=1)
    radius: float = Field(5.0, gt=0)
    seed: int = 0
    drift: DriftSpec | None = None


def _customer_profiles(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    mean_amount = rng.uniform(5, 100, n)
    return {
        "x": rng.uniform(0, 100, n),
        "y": rng.uniform(0, 100, n),
        "mean_amount": mean_amount,
        "std_amount": mean_amount / 2,
        "mean_nb_tx_per_day": rng.uniform(0, 4, n),
    }


def _terminals_in_reach(
    cx: np.ndarray, cy: np.ndarray, tx: np.ndarray, ty: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """Each customer's usable terminals as CSR arrays (offsets, flat terminal indices)."""
    counts = np.zeros(len(cx), dtype=np.int64)
    chunks = []
    step = max(1, 2_000_000 // max(1, len(tx)))
    for lo in range(0, len(cx), step):
        d2 = (cx[lo : lo + step, None] - tx[None, :]) ** 2 + (cy[lo : lo + step, None] - ty[None, :]) ** 2
        rows, cols = np.nonzero(d2 < radius * radius)
        counts[lo : lo + step] = np.bincount(rows, minlength=min(step, len(cx) - lo))
        chunks.append(cols)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return offsets, np.concatenate(chunks) if chunks else np.empty(0, dtype=np.int64)


def simulate_transactions(config: SimulationConfig) -> pd.DataFrame:
    """Generate the whole history as one frame in the raw schema, sorted by time.

    Deterministic for a given config: the same seed always yields the same rows. The steps
    below share one generator and draw from it in a fixed order (profiles, terminals, daily
    counts, times, amounts, terminal picks, drift, fraud scenarios); reordering them changes
    every row.

    Args:
        config: Population sizes, the simulated period, the seed and optional drift.

    Returns:
        The transactions in ``RAW_COLUMNS`` order; ``attrs`` holds the compromise schedule
        (``compromised_terminals`` / ``compromised_customers``: (id, first day) pairs).
    """
    rng = np.random.default_rng(config.seed)
    cust = _customer_profiles(rng, config.customers)
    term_x, term_y = rng.uniform(0, 100, config.terminals), rng.uniform(0, 100, config.terminals)
    offsets, reach = _terminals_in_reach(cust["x"], cust["y"], term_x, term_y, config.radius)
    n_reach = np.diff(offsets)

    customer, day = _transaction_slots(rng, config, cust["mean_nb_tx_per_day"], n_reach)
    seconds, amount, pick = _times_amounts_and_picks(rng, cust, customer)
    drift_day = (config.drift.start - config.start).days if config.drift else config.days
    _apply_drift(rng, config.drift, day >= drift_day, seconds, amount)
    customer, terminal, day, time_seconds, amount = _in_time_order(
        customer, day, seconds, amount, pick, offsets, reach, n_reach
    )

    fraud = np.zeros(len(customer), dtype=np.int8)
    scenario = np.zeros(len(customer), dtype=np.int8)
    schedule = _apply_fraud_scenarios(rng, config, drift_day, customer, terminal, day, amount, fraud, scenario)
    frame = _raw_frame(config.start, customer, terminal, day, time_seconds, amount, fraud, scenario)
    frame.attrs.update(schedule)  # ground truth for tests: which terminals/cards, from which day
    return frame


def _transaction_slots(
    rng: np.random.Generator, config: SimulationConfig, mean_nb_tx_per_day: np.ndarray, n_reach: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One (customer, day) pair per transaction, from Poisson daily counts per customer.

    Customers with no terminal in reach never transact.
    """
    counts = rng.poisson(np.repeat(mean_nb_tx_per_day[:, None], config.days, axis=1))
    counts[n_reach == 0, :] = 0
    flat = counts.ravel()
    customer = np.repeat(np.repeat(np.arange(config.customers), config.days), flat)
    day = np.repeat(np.tile(np.arange(config.days), config.customers), flat)
    return customer, day


def _times_amounts_and_picks(
    rng: np.random.Generator, cust: dict[str, np.ndarray], customer: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per transaction: seconds into its day, a genuine amount, and a uniform terminal pick.

    Times are normal around noon (some fall outside the day and are dropped later); amounts
    are normal around the customer's mean, and a negative draw is redrawn uniformly in
    [0, 2 x mean).
    """
    seconds = rng.normal(43_200, 20_000, len(customer))
    mean, std = cust["mean_amount"][customer], cust["std_amount"][customer]
    amount = rng.normal(mean, std)
    negative = amount < 0
    amount[negative] = rng.uniform(0, 2 * mean[negative])
    pick = rng.random(len(customer))
    return seconds, amount, pick


def _apply_drift(
    rng: np.random.Generator, drift: DriftSpec | None, drifted: np.ndarray, seconds: np.ndarray, amount: np.ndarray
) -> None:
    """Scale the amounts and move a share of the times to the night on drifted days, in place.

    Draws nothing when there is no drift or no transaction falls on a drifted day.
    """
    if not drift or not drifted.any():
        return
    amount[drifted] *= drift.amount_scale
    to_night = drifted & (rng.random(len(drifted)) < drift.night_share)
    seconds[to_night] = rng.uniform(1, 6 * 3600, int(to_night.sum()))


def _in_time_order(
    customer: np.ndarray,
    day: np.ndarray,
    seconds: np.ndarray,
    amount: np.ndarray,
    pick: np.ndarray,
    offsets: np.ndarray,
    reach: np.ndarray,
    n_reach: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Drop out-of-day times, resolve each pick to a terminal in reach, and sort by time.

    Returns:
        ``(customer, terminal, day, time_seconds, amount)``, stably sorted by time, with
        amounts rounded to cents.
    """
    keep = (seconds > 0) & (seconds < SECONDS_PER_DAY)  # the reference drops out-of-day times
    customer, day, seconds, amount, pick = (a[keep] for a in (customer, day, seconds, amount, pick))
    terminal = reach[offsets[customer] + (pick * n_reach[customer]).astype(np.int64)]

    time_seconds = day * SECONDS_PER_DAY + seconds.astype(np.int64)
    order = np.argsort(time_seconds, kind="stable")
    return customer[order], terminal[order], day[order], time_seconds[order], np.round(amount[order], 2)


def _raw_frame(
    start: dt.date,
    customer: np.ndarray,
    terminal: np.ndarray,
    day: np.ndarray,
    time_seconds: np.ndarray,
    amount: np.ndarray,
    fraud: np.ndarray,
    scenario: np.ndarray,
) -> pd.DataFrame:
    """The arrays as a frame in the raw schema, numbered in time order from ``start``."""
    return pd.DataFrame(
        {
            "TRANSACTION_ID": np.arange(len(customer), dtype=np.int64),
            "TX_DATETIME": pd.Timestamp(start) + pd.to_timedelta(time_seconds, unit="s"),
            "CUSTOMER_ID": customer.astype(np.int64),
            "TERMINAL_ID": terminal.astype(np.int64),
            "TX_AMOUNT": amount,
            "TX_TIME_SECONDS": time_seconds,
            "TX_TIME_DAYS": day.astype(np.int64),
            "TX_FRAUD": fraud,
            "TX_FRAUD_SCENARIO": scenario,
        },
        columns=list(RAW_COLUMNS),
    )


def _apply_fraud_scenarios(
    rng: np.random.Generator,
    config: SimulationConfig,
    drift_day: int,
    customer: np.ndarray,
    terminal: np.ndarray,
    day: np.ndarray,
    amount: np.ndarray,
    fraud: np.ndarray,
    scenario: np.ndarray,
) -> dict[str, list[tuple[int, int]]]:
    """Scenarios 1, 2, 3 in the published order; later scenarios overwrite earlier labels.

    Returns the compromise schedule: (terminal, first day) and (customer, first day) pairs.
    """
    # 1. Any amount above 220.
    big = amount > 220
    fraud[big], scenario[big] = 1, 1

    drift = config.drift

    def n_terms(d: int) -> int:
        if drift and d >= drift_day and drift.compromised_terminals_per_day is not None:
            return drift.compromised_terminals_per_day
        return 2

    def n_custs(d: int) -> int:
        if drift and d >= drift_day and drift.compromised_customers_per_day is not None:
            return drift.compromised_customers_per_day
        return 3

    # 2. Compromised terminals: all their transactions in the next 28 days.
    compromised = np.zeros((config.terminals, config.days + 28), dtype=bool)
    schedule: dict[str, list[tuple[int, int]]] = {"compromised_terminals": [], "compromised_customers": []}
    for d in range(config.days):
        for t in rng.choice(config.terminals, size=min(n_terms(d), config.terminals), replace=False):
            compromised[t, d : d + 28] = True
            schedule["compromised_terminals"].append((int(t), d))
    hit = compromised[terminal, day]
    fraud[hit], scenario[hit] = 1, 2

    # 3. Compromised cards: a random third of their next 14 days' transactions, amount x5.
    by_customer = np.argsort(customer, kind="stable")
    bounds = np.searchsorted(customer[by_customer], np.arange(config.customers + 1))
    for d in range(config.days):
        for c in rng.choice(config.customers, size=min(n_custs(d), config.customers), replace=False):
            schedule["compromised_customers"].append((int(c), d))
            idx = by_customer[bounds[c] : bounds[c + 1]]
            idx = idx[(day[idx] >= d) & (day[idx] < d + 14)]
            chosen = rng.choice(idx, size=len(idx) // 3, replace=False) if len(idx) else idx
            amount[chosen] = np.round(amount[chosen] * 5, 2)
            fraud[chosen], scenario[chosen] = 1, 3
    return schedule


def write_landing_files(
    frame: pd.DataFrame,
    landing_dir: Path,
    *,
    fmt: str = "parquet",
    days: tuple[dt.date, dt.date] | None = None,
    on_day: Callable[[dt.date, Path], None] | None = None,
) -> list[Path]:
    """Write one file per day, ``date=YYYY-MM-DD/transactions.<fmt>``, as a source system would.

    Args:
        days: optional inclusive (first, last) range to write; other days are not written.
        on_day: progress callback, called after each file.
    """
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"format must be parquet or csv, not {fmt!r}")
    dates = frame["TX_DATETIME"].dt.date
    written = []
    for day, part in frame.groupby(dates, sort=True):
        if days and not (days[0] <= day <= days[1]):
            continue
        part = part.copy()
        part.attrs = {}  # the compromise schedule is the simulator's ground truth, not file content
        folder = partition_dir(landing_dir, day)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("transactions.*"):
            stale.unlink()
        path = folder / f"transactions.{fmt}"
        tmp = folder / f".{path.name}.tmp"
        if fmt == "parquet":
            part.to_parquet(tmp, index=False)
        else:
            part.to_csv(tmp, index=False)
        tmp.replace(path)
        written.append(path)
        if on_day:
            on_day(day, path)
    return written


def summarise(frame: pd.DataFrame) -> dict[str, float | int]:
    """The statistics the handbook publishes for its reference run."""
    scen = frame["TX_FRAUD_SCENARIO"].value_counts()
    return {
        "transactions": len(frame),
        "frauds": int(frame["TX_FRAUD"].sum()),
        "fraud_rate_pct": round(100 * frame["TX_FRAUD"].mean(), 3) if len(frame) else 0.0,
        "scenario_1": int(scen.get(1, 0)),
        "scenario_2": int(scen.get(2, 0)),
        "scenario_3": int(scen.get(3, 0)),
        "days": int(frame["TX_TIME_DAYS"].nunique()),
    }
