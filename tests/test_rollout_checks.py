"""Shadow and canary checks judged on the rows the real router writes.

Every frame here comes from ``RoutedScoring`` (the code inside the BentoML service) scoring
lake transactions with real registered models, in process, and from its prediction log: no
hand-built rows, so a check cannot pass on a row shape the router never writes.
"""

from __future__ import annotations

import datetime as dt

import pytest

from fraudflow import registry, tags
from fraudflow.deployment.checks import Thresholds, canary_check, shadow_check
from fraudflow.deployment.controller import replay_sample
from fraudflow.serving.prediction_log import read_predictions
from fraudflow.serving.routing import RoutedScoring
from fraudflow.serving.scoring import Transaction
from fraudflow.serving.state import DeploymentState, write_state
from tests.helpers import build_serving_home, register_champion

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """Registry: v1 XGBoost, v2 MLP (champion, trained on the same set), v3 = v1 with an
    operating threshold a hundredth of its own (it flags far more transactions: with calibrated
    probabilities a tenth of an F1 threshold still sits above most legitimate scores)."""
    from fraudflow.training.train import train_candidate
    from fraudflow.training.training_set import build_training_set

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FRAUDFLOW_HOME", str(tmp_path_factory.mktemp("checks") / "home"))
        from fraudflow.settings import get_settings

        settings = get_settings()
        frame = build_serving_home(settings, days=30, customers=600, terminals=1200)
        last_day = frame["TX_DATETIME"].max().date()
        training_set = build_training_set(settings, run_date=last_day, run_id="checks-test", reason="test")
        mlp = train_candidate(settings, candidate="mlp", training_set=training_set)
        register_champion(settings, mlp, "mlp")
        v1 = registry.get_version(settings, "1")
        loose = float(v1.tags[tags.THRESHOLD]) / 100
        registry.register_challenger(
            settings, model_uri=v1.source, run_id=v1.run_id, tags={**v1.tags, tags.THRESHOLD: f"{loose:.6f}"}
        )
        registry.drop_challenger(settings, "3")
        yield settings


def route(settings, state: DeploymentState, n: int = 400, before_close=None):
    """Score ``n`` lake transactions through the router in ``state``; its log rows.
    ``before_close(routing)`` sees the router after the last answer, before it is closed."""
    write_state(settings, state)
    since = dt.datetime.now(dt.UTC)
    routing = RoutedScoring(settings)
    routing.wait_until_loaded()
    try:
        for r in replay_sample(settings, n, seed=n).itertuples(index=False):
            tx = Transaction(
                transaction_id=int(r.TRANSACTION_ID),
                tx_datetime=r.TX_DATETIME,
                customer_id=str(r.CUSTOMER_ID),
                terminal_id=str(r.TERMINAL_ID),
                tx_amount=float(r.TX_AMOUNT),
            )
            routing.score([tx], "/score")
        if before_close is not None:
            before_close(routing)
    finally:
        routing.close()  # finishes shadow scoring and flushes the log
    return read_predictions(settings.predictions_dir, since=since)


def test_shadow_passes_an_xgboost_challenger_against_an_mlp_champion(home):
    rows = route(home, DeploymentState(champion="2", challenger="1", mode="shadow"))
    check = shadow_check(rows, Thresholds.from_settings(home))
    assert check.passed, check.reason
    assert 0 < check.reported["decision_agreement"] <= 1
    assert {"champion_vs_challenger_psi", "top_1pct_overlap"} <= set(check.reported)


def test_shadow_fails_a_challenger_whose_alert_volume_explodes(home):
    rows = route(home, DeploymentState(champion="2", challenger="3", mode="shadow"))
    check = shadow_check(rows, Thresholds.from_settings(home))
    assert not check.passed
    assert "alert_volume_ratio" in check.reason and check.checks["alert_volume_ratio"]["value"] > 1.5


def test_canary_counts_failures_the_champion_covered(home):
    """Half the challenger's calls raise; the champion answers those: they still count."""
    healthy = route(home, DeploymentState(champion="2", challenger="1", mode="canary", canary_share=0.5))
    assert canary_check(healthy, Thresholds.from_settings(home)).passed

    state = DeploymentState(champion="2", challenger="1", mode="canary", canary_share=0.5, challenger_fail_every=2)
    rows = route(home, state)
    covered = rows[rows["challenger_error"].notna()]
    assert len(covered) > 50 and set(covered["served_by"]) == {"champion"}  # what the router writes
    check = canary_check(rows, Thresholds.from_settings(home))
    assert not check.passed and "error_rate" in check.reason
    assert 0.3 < check.checks["error_rate"]["value"] < 0.7


def test_a_slow_shadow_challenger_is_dropped_not_queued_without_bound(home):
    """Shadow scoring waits in a bounded queue: with a challenger slower than the traffic the
    queue fills, later requests are logged without a shadow score (counted, none lost, none
    waiting for the challenger), and the shadow check fails the challenger on them."""
    bounded = home.model_copy(update={"shadow_queue_max": 3})
    state = DeploymentState(champion="2", challenger="1", mode="shadow", challenger_delay_ms=50)
    seen = {}
    rows = route(
        bounded,
        state,
        60,
        before_close=lambda r: seen.update(dropped=r.shadow_dropped, reported=r.health()["shadow_dropped"]),
    )
    assert seen["reported"] == seen["dropped"]
    assert len(rows) == 60  # every answer logged
    full = rows["challenger_error"] == "shadow queue full: challenger not scored"
    assert 0 < full.sum() == seen["dropped"] and rows.loc[full, "challenger_score"].isna().all()
    assert rows.loc[~full, "challenger_score"].notna().all()  # the queued ones were scored
    check = shadow_check(rows, Thresholds.from_settings(bounded))
    assert not check.passed and "error_rate" in check.reason
