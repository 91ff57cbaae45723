"""`make up`'s world and traffic feeder: dates relative to today, each simulated day landed once
it ends on the feeder's clock, every transaction from now on sent once."""

from __future__ import annotations

import datetime as dt

from fraudflow.demo.live import LiveWorld, feed, land_history
from fraudflow.demo.simulate import simulate_transactions
from fraudflow.layout import partition_dir


def test_world_ends_yesterday_and_its_dates_reach_every_process():
    world = LiveWorld.ending_yesterday(40)
    today = dt.datetime.now(dt.UTC).date()
    assert world.yesterday == today - dt.timedelta(days=1) and world.first == today - dt.timedelta(days=40)
    assert world.simulation().days == 40 + 1 + world.ahead
    assert world.env()["FRAUDFLOW_TIME_ORIGIN"] == world.first.isoformat() == world.env()["FRAUDFLOW_START_DATE"]


def test_feeder_lands_each_day_when_it_ends_and_sends_each_transaction_once(settings):
    world = LiveWorld.ending_yesterday(21, ahead=2, customers=60, terminals=120, seed=4, speedup=500_000.0)
    frame = simulate_transactions(world.simulation())
    landed = land_history(settings, world, frame)
    assert len(landed) == 21 and not partition_dir(settings.landing_dir, world.yesterday + dt.timedelta(1)).exists()

    started = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    # Nothing listens on this port: the service is not up yet, so every send is "unserved".
    status = feed(settings, world, url="http://127.0.0.1:9", frame=frame)
    today = started.date()
    assert status.landed == [(today + dt.timedelta(days=i)).isoformat() for i in range(3)]
    for day in status.landed:
        assert (partition_dir(settings.landing_dir, dt.date.fromisoformat(day)) / "transactions.parquet").is_file()
    upcoming = int((frame["TX_DATETIME"] > started).sum())
    assert 0 <= upcoming - status.sent <= 2  # only rows between the test's clock read and the feeder's
    assert status.unserved == status.sent and status.answered == 0
    assert status.simulated_clock >= dt.datetime.combine(today + dt.timedelta(days=3), dt.time())
