"""fraudflow live on today's clock (``make up``): a simulated world whose last complete day is
yesterday, landed for the real scheduler to catch up, and a traffic feeder that plays the
days from now on to ``/score`` at their time of day and lands each day's file once it ends.

The world's dates are facts every process must share (``FRAUDFLOW_TIME_ORIGIN``,
``FRAUDFLOW_START_DATE``): :meth:`LiveWorld.env` holds them, ``fraudflow up`` exports them to
Airflow and the feeder, and ``<home>/run/world.json`` keeps them for ``fraudflow feed``.

With ``speedup`` > 1 the feeder's clock runs ahead of the wall clock: a simulated day's file
lands early, and the scheduler ingests it once the real day has ended (its data interval).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from pydantic import BaseModel, Field

from fraudflow.demo.simulate import SimulationConfig, simulate_transactions, write_landing_files
from fraudflow.settings import Settings


class LiveWorld(BaseModel):
    first: dt.date  # first simulated day (the time origin)
    days: int = Field(ge=21)  # complete days before today, landed at once
    ahead: int = Field(7, ge=1)  # days simulated past today for the feeder
    customers: int = 5000
    terminals: int = 10000
    seed: int = 0
    speedup: float = Field(60.0, gt=0)

    @classmethod
    def ending_yesterday(cls, days: int, **kwargs) -> LiveWorld:
        today = dt.datetime.now(dt.UTC).date()
        return cls(first=today - dt.timedelta(days=days), days=days, **kwargs)

    @property
    def yesterday(self) -> dt.date:
        return self.first + dt.timedelta(days=self.days - 1)

    def simulation(self) -> SimulationConfig:
        return SimulationConfig(
            start=self.first,
            days=self.days + 1 + self.ahead,
            customers=self.customers,
            terminals=self.terminals,
            seed=self.seed,
        )

    def env(self) -> dict[str, str]:
        """Settings every process of the live home needs (exported by ``fraudflow up``)."""
        return {
            "FRAUDFLOW_TIME_ORIGIN": self.first.isoformat(),
            "FRAUDFLOW_START_DATE": self.first.isoformat(),
            "FRAUDFLOW_INGEST_CATCHUP": "true",
            "FRAUDFLOW_LANDING_POKE_SECONDS": "30",
        }


def world_file(settings: Settings) -> Path:
    return settings.root / "run" / "world.json"


def feeder_file(settings: Settings) -> Path:
    return settings.root / "run" / "feeder.json"


def land_history(settings: Settings, world: LiveWorld, frame: pd.DataFrame, on_day=None) -> list[Path]:
    """Land every complete day before today, as the source systems would have."""
    return write_landing_files(frame, settings.landing_dir, days=(world.first, world.yesterday), on_day=on_day)


class FeederStatus(BaseModel):
    started_at: dt.datetime
    simulated_clock: dt.datetime
    speedup: float
    sent: int = 0
    answered: int = 0
    failed: int = 0  # the service answered with an error
    unserved: int = 0  # no service to answer yet (before the first model is deployed)
    landed: list[str] = []
    last_error: str | None = None


def feed(
    settings: Settings,
    world: LiveWorld,
    *,
    url: str,
    frame: pd.DataFrame | None = None,
    stop: Callable[[], bool] = lambda: False,
    status_every: float = 5.0,
) -> FeederStatus:
    """Play the world's transactions from now on to ``url``/score on a clock running
    ``world.speedup`` times faster than the wall clock, landing each simulated day's file as
    that day ends. Returns when the simulated days run out or ``stop()`` says so."""
    import httpx

    from fraudflow.deployment.controller import score_bodies

    frame = frame if frame is not None else simulate_transactions(world.simulation())
    wall0 = time.time()
    sim0 = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    upcoming = frame[frame["TX_DATETIME"] > sim0].sort_values("TX_DATETIME")
    times = upcoming["TX_DATETIME"].to_numpy()
    status = FeederStatus(started_at=dt.datetime.now(dt.UTC), simulated_clock=sim0, speedup=world.speedup)
    next_day = sim0.date()  # the first day whose file the feeder lands (earlier ones are landed)
    last_day = frame["TX_DATETIME"].max().date()
    cursor, reported = 0, 0.0
    with httpx.Client(timeout=10) as client:
        while not stop() and next_day <= last_day:
            now_sim = sim0 + dt.timedelta(seconds=(time.time() - wall0) * world.speedup)
            due = int(times.searchsorted(pd.Timestamp(now_sim).to_datetime64(), side="right"))
            for body in score_bodies(upcoming.iloc[cursor:due]):
                status.sent += 1
                try:
                    answer = client.post(f"{url}/score", json=body)
                    status.answered += answer.status_code == 200
                    if answer.status_code != 200:
                        status.failed += 1
                        status.last_error = f"{answer.status_code}: {answer.text[:200]}"
                except httpx.TransportError as exc:
                    status.unserved += 1
                    status.last_error = f"{type(exc).__name__}: {exc}"
            cursor = due
            while next_day <= last_day and now_sim >= dt.datetime.combine(next_day + dt.timedelta(days=1), dt.time()):
                write_landing_files(frame, settings.landing_dir, days=(next_day, next_day))
                status.landed.append(next_day.isoformat())
                next_day += dt.timedelta(days=1)
            status.simulated_clock = now_sim
            if time.time() - reported >= status_every:
                _write_status(settings, status)
                reported = time.time()
            time.sleep(0.2)
    _write_status(settings, status)
    return status


def _write_status(settings: Settings, status: FeederStatus) -> None:
    path = feeder_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(status.model_dump(mode="json"), indent=2))
    tmp.replace(path)
