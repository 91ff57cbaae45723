"""The evaluation gate on seeded synthetic models of known quality (real computations)."""

from __future__ import annotations

import numpy as np
import pytest

from fraudflow.settings import Settings
from fraudflow.training.gate import GateConfig, GateVerdict, evaluate_gate
from tests.test_evaluation import noisy_scores, synthetic_frame


def default_config() -> GateConfig:
    """The gate as configured by default (the thresholds are settings), with 300 resamples
    instead of 1,000: these tests are about the rules, and 9 intervals per verdict add up."""
    return GateConfig.from_settings(Settings()).model_copy(update={"n_boot": 300})


@pytest.fixture(scope="module")
def frame():
    return synthetic_frame(n=40_000, seed=21)


@pytest.fixture(scope="module")
def y(frame):
    return frame["TX_FRAUD"].to_numpy()


def checks_by_name(verdict: GateVerdict):
    return {c.name: c for c in verdict.checks}


def test_good_model_passes_without_champion(frame, y):
    verdict = evaluate_gate(
        candidate="v1",
        frame=frame,
        challenger_scores=noisy_scores(y, 0.2, 1),
        champion_scores=None,
        config=default_config(),
    )
    assert verdict.passed, verdict.reason
    assert verdict.reason == "all checks passed"
    checks = checks_by_name(verdict)
    assert list(checks) == ["min_average_precision", "min_auc_roc", "ap_non_inferiority", "slices"]
    for name in ("ap_non_inferiority", "slices"):
        assert checks[name].passed and checks[name].skipped and checks[name].detail == "no champion"
    assert verdict.champion_metrics is None
    report = verdict.to_markdown()
    assert "PASSED" in report and "| ap_non_inferiority | skipped | no champion |" in report


def test_random_scores_fail_the_floors(frame, y):
    scores = np.random.default_rng(2).random(len(y))
    verdict = evaluate_gate(
        candidate="random", frame=frame, challenger_scores=scores, champion_scores=None, config=default_config()
    )
    assert not verdict.passed
    checks = checks_by_name(verdict)
    assert not checks["min_average_precision"].passed and not checks["min_auc_roc"].passed
    assert "min_average_precision" in verdict.reason and "min_auc_roc" in verdict.reason
    assert "**FAIL**" in verdict.to_markdown()


def test_clearly_worse_challenger_fails_non_inferiority_despite_passing_floors(frame, y):
    champion, challenger = noisy_scores(y, 0.2, 3), noisy_scores(y, 0.3, 4)
    verdict = evaluate_gate(
        candidate="worse", frame=frame, challenger_scores=challenger, champion_scores=champion, config=default_config()
    )
    checks = checks_by_name(verdict)
    assert checks["min_average_precision"].passed and checks["min_auc_roc"].passed
    assert not checks["ap_non_inferiority"].passed
    assert checks["ap_non_inferiority"].values["upper"] < -0.03
    assert "ap_non_inferiority" in verdict.reason and not verdict.passed
    assert "CI [" in checks["ap_non_inferiority"].detail


def test_equal_models_pass_champion_checks(frame, y):
    scores = noisy_scores(y, 0.2, 5)
    verdict = evaluate_gate(
        candidate="same", frame=frame, challenger_scores=scores, champion_scores=scores.copy(), config=default_config()
    )
    assert verdict.passed, verdict.reason
    checks = checks_by_name(verdict)
    assert checks["ap_non_inferiority"].values["lower"] == 0.0
    assert not checks["slices"].skipped and checks["slices"].values  # slices were compared
    assert verdict.champion_metrics == verdict.metrics


def _blind_to_scenario_3(champion_sd: float, challenger_sd: float, shares=(0.3, 0.695, 0.005), seed: int = 22):
    """A challenger whose scenario-3 frauds score like genuine transactions."""
    frame = synthetic_frame(n=40_000, scenario_shares=shares, seed=seed)
    y = frame["TX_FRAUD"].to_numpy()
    champion = noisy_scores(y, champion_sd, 6)
    challenger = champion.copy() if challenger_sd == champion_sd else noisy_scores(y, challenger_sd, 7)
    lost = frame["TX_FRAUD_SCENARIO"].to_numpy() == 3
    challenger[lost] -= 1.0
    return frame, challenger, champion, int(lost.sum())


def test_challenger_losing_a_judged_scenario_fails_slices_only():
    # Scenario 3 is ~0.5% of the frauds here (a handful of ~420), so losing it barely moves
    # pooled AP while its own AUC collapses; with the minimum support lowered to judge it, the
    # slice rule blocks the model.
    frame, challenger, champion, lost = _blind_to_scenario_3(0.2, 0.2)
    assert lost >= 3
    config = default_config().model_copy(update={"slice_min_frauds": 3})
    verdict = evaluate_gate(
        candidate="blind_to_s3", frame=frame, challenger_scores=challenger, champion_scores=champion, config=config
    )
    checks = checks_by_name(verdict)
    assert checks["min_average_precision"].passed and checks["min_auc_roc"].passed
    assert checks["ap_non_inferiority"].passed, checks["ap_non_inferiority"].detail
    assert not checks["slices"].passed
    assert "scenario_3" in checks["slices"].detail
    assert checks["slices"].values["scenario_3"]["delta"] < -0.05
    assert checks["slices"].values["scenario_3"]["lower"] < -config.slice_tolerance
    assert checks["slices"].values["scenario_2"]["delta"] == 0.0
    assert not verdict.passed and verdict.reason.startswith("failed slices")
    assert verdict.model_validate_json(verdict.model_dump_json()) == verdict  # JSON round trip for logging


def test_a_slice_with_few_frauds_does_not_block_a_model_better_overall():
    """The demo's case: better overall, worse on one slice of a few dozen frauds (reported)."""
    frame, challenger, champion, lost = _blind_to_scenario_3(0.35, 0.25)
    assert lost < default_config().slice_min_frauds
    verdict = evaluate_gate(
        candidate="better", frame=frame, challenger_scores=challenger, champion_scores=champion, config=default_config()
    )
    checks = checks_by_name(verdict)
    assert checks["ap_non_inferiority"].values["lower"] > 0  # clearly better overall
    small = checks["slices"].values["scenario_3"]
    assert small["delta"] < -0.05 and not small["judged"]
    assert checks["slices"].passed and "reported only" in checks["slices"].detail
    assert "scenario_3" in checks["slices"].detail
    assert verdict.passed, verdict.reason


def test_a_well_supported_slice_that_gets_worse_still_blocks():
    """Enough frauds in the lost scenario: it is judged and blocks, even at default support."""
    frame, challenger, champion, lost = _blind_to_scenario_3(0.35, 0.25, shares=(0.2, 0.4, 0.4), seed=5)
    assert lost >= default_config().slice_min_frauds
    verdict = evaluate_gate(
        candidate="blind", frame=frame, challenger_scores=challenger, champion_scores=champion, config=default_config()
    )
    slices = checks_by_name(verdict)["slices"]
    assert not slices.passed and slices.values["scenario_3"]["judged"] and "scenario_3" in slices.detail
