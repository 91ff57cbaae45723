"""Deployment state, sticky routing, stage checks and the prediction log (no server needed)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from fraudflow.deployment.checks import canary_check, population_stability_index, shadow_check
from fraudflow.serving.prediction_log import COLUMNS, PredictionLog, read_predictions
from fraudflow.serving.state import DeploymentState, read_state, routes_to_challenger, write_state


def test_state_revisions_and_history(settings):
    assert read_state(settings).mode == "champion" and read_state(settings).revision == 0
    first = write_state(settings, DeploymentState(champion="1"))
    second = write_state(settings, DeploymentState(champion="1", challenger="2", mode="shadow"))
    assert (first.revision, second.revision) == (1, 2)
    assert read_state(settings) == second
    history = (settings.serving_dir / "deployment_log.jsonl").read_text().splitlines()
    assert len(history) == 2


def test_canary_routing_is_sticky_and_near_the_share():
    customers = [str(i) for i in range(20_000)]
    routed = [routes_to_challenger(c, 0.2) for c in customers]
    assert 0.18 < np.mean(routed) < 0.22
    assert routed == [routes_to_challenger(c, 0.2) for c in customers]  # same customer, same side
    assert not any(routes_to_challenger(c, 0.0) for c in customers[:1000])


def test_psi():
    rng = np.random.default_rng(0)
    a = rng.beta(1, 20, 5000)
    assert population_stability_index(a, rng.beta(1, 20, 5000)) < 0.05
    assert population_stability_index(a, np.clip(a + 0.3, 0, 1)) > 1.0


def _frame(n, *, challenger_shift=0.0, challenger_ms=2.0, errors=0, served="champion"):
    rng = np.random.default_rng(1)
    champion = rng.beta(1, 30, n)
    challenger = np.clip(champion + challenger_shift, 0, 1)
    frame = pd.DataFrame(
        {
            "champion_score": champion,
            "challenger_score": challenger,
            "challenger_version": "2",
            "challenger_error": [None] * (n - errors) + ["RuntimeError: boom"] * errors,
            "challenger_latency_ms": challenger_ms,
            "latency_ms": challenger_ms,
            "is_fraud": champion >= 0.5,
            "challenger_is_fraud": challenger >= 0.5,
            "served_by": served,
            "score": challenger if served == "challenger" else champion,
        }
    )
    return frame


def test_shadow_check_passes_a_twin_and_names_what_breaks():
    assert shadow_check(_frame(400)).passed
    slow = shadow_check(_frame(400, challenger_ms=120))
    assert not slow.passed and "p99_latency_ms" in slow.reason
    shifted = shadow_check(_frame(400, challenger_shift=0.4))
    assert not shifted.passed and "score_psi" in shifted.reason and "decision_agreement" in shifted.reason
    broken = shadow_check(_frame(400, errors=40))
    assert not broken.passed and "error_rate" in broken.reason
    too_few = shadow_check(_frame(50))
    assert not too_few.passed and "requests" in too_few.reason


def test_canary_check_compares_answers_of_both_sides():
    frame = pd.concat([_frame(600, served="champion"), _frame(300, served="challenger")], ignore_index=True)
    assert canary_check(frame).passed
    slow = pd.concat([_frame(600), _frame(300, served="challenger", challenger_ms=200)], ignore_index=True)
    assert "p99_latency_ms" in canary_check(slow).reason


def test_prediction_log_flushes_everything_atomically(tmp_path):
    log = PredictionLog(tmp_path / "predictions", max_rows=3, flush_seconds=3600)
    now = dt.datetime(2026, 11, 22, 23, 59, 59, tzinfo=dt.UTC)
    for i in range(7):
        log.append(
            {
                "request_id": f"r{i}",
                "logged_at": now + dt.timedelta(seconds=i),
                "score": i / 10,
                "features": {"TX_AMOUNT": float(i)},
            }
        )
    assert len(read_predictions(tmp_path / "predictions")) == 6  # two full buffers flushed
    log.flush()  # shutdown: the rest
    frame = read_predictions(tmp_path / "predictions")
    assert sorted(frame["request_id"]) == [f"r{i}" for i in range(7)]
    assert list(frame.columns) == COLUMNS
    days = sorted(p.parent.name for p in (tmp_path / "predictions").glob("date=*/part-*.parquet"))
    assert days[0] == "date=2026-11-22" and days[-1] == "date=2026-11-23"  # partitioned by log date
    assert not list((tmp_path / "predictions").rglob(".*.tmp"))
    since = read_predictions(tmp_path / "predictions", since=now + dt.timedelta(seconds=5))
    assert sorted(since["request_id"]) == ["r5", "r6"]


@pytest.mark.parametrize("share", [0.05, 0.5])
def test_routing_share_parameter(share):
    assert abs(np.mean([routes_to_challenger(str(i), share) for i in range(10_000)]) - share) < 0.02
