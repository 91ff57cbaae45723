"""Calibrated probabilities and the operating threshold come from validation days inside the
training window (fraudflow.training.validation_split), never from the test week.

Real producer throughout: a small published world, the real training set, ``train_candidate``
(nested MLflow runs), the logged model loaded back as the service loads it.
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from fraudflow.features.compute import LABEL, MODEL_INPUTS
from fraudflow.models.calibration import brier_score
from fraudflow.models.candidates import CANDIDATES, Calibrated, load_candidate_model, raw_model
from tests.helpers import build_serving_home

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from fraudflow.training.training_set import build_training_set

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FRAUDFLOW_HOME", str(tmp_path_factory.mktemp("calibration") / "home"))
        from fraudflow.settings import get_settings

        settings = get_settings()
        frame = build_serving_home(settings, days=30, customers=600, terminals=1200)
        last_day = frame["TX_DATETIME"].max().date()
        training_set = build_training_set(settings, run_date=last_day, run_id="calibration-test", reason="test")
        yield settings, training_set


def _train(settings, training_set, params=None):
    from fraudflow.training.train import train_candidate

    return train_candidate(settings, candidate="xgboost", training_set=training_set, params=params or {})


def test_calibration_improves_brier_on_validation_and_keeps_the_ranking(world):
    """A model weighted 20:1 towards fraud (the handbook's imbalance remedy) over-states every
    probability; calibrated on the validation days its Brier score falls there and on the test
    window, where it was not fit, while AUC and AP are exactly the raw model's."""
    settings, training_set = world
    run = _train(settings, training_set, {"scale_pos_weight": 20.0})
    fit = run.validation
    assert run.calibration is not None and fit.brier_calibrated < fit.brier_raw and fit.ece_calibrated < fit.ece_raw

    spec, model = load_candidate_model(run.model_uri)  # as the service and the gate load it
    assert isinstance(model, Calibrated) and model.calibration == run.calibration
    test = pd.read_parquet(training_set.test_path)
    y = test[LABEL].to_numpy()
    served = spec.predict_proba(model, test[MODEL_INPUTS])
    raw = spec.predict_proba(raw_model(model), test[MODEL_INPUTS])
    assert brier_score(y, served) < brier_score(y, raw)
    assert roc_auc_score(y, served) == roc_auc_score(y, raw)
    assert average_precision_score(y, served) == pytest.approx(average_precision_score(y, raw), abs=1e-12)
    assert run.test_brier == pytest.approx(brier_score(y, served))


def test_threshold_and_calibration_never_read_the_test_week(world, tmp_path):
    """The same training set with every test label flipped gives the same calibration and the
    same threshold; flipping the training window's labels changes them (the case is seen to fail)."""
    from fraudflow.training.training_set import TrainingSet

    settings, training_set = world
    run = _train(settings, training_set)

    def copy_with(flip_test: bool, flip_validation: bool) -> TrainingSet:
        folder = tmp_path / f"set-{flip_test}-{flip_validation}"
        shutil.copytree(training_set.folder, folder)
        changed = training_set.model_copy(update={"folder": str(folder)})
        if flip_test:
            test = pd.read_parquet(changed.test_path)
            test.assign(**{LABEL: 1 - test[LABEL]}).to_parquet(changed.test_path, index=False)
        if flip_validation:
            train = pd.read_parquet(changed.train_path)
            held = train["TX_TIME_DAYS"].isin(run.validation.validation_days)
            train.loc[held, LABEL] = 1 - train.loc[held, LABEL]
            train.to_parquet(changed.train_path, index=False)
        return changed

    blind = _train(settings, copy_with(flip_test=True, flip_validation=False))
    assert (blind.threshold, blind.calibration) == (run.threshold, run.calibration)
    assert blind.metrics.average_precision != run.metrics.average_precision  # the test labels did change
    seeing = _train(settings, copy_with(flip_test=False, flip_validation=True))
    assert (seeing.threshold, seeing.calibration) != (run.threshold, run.calibration)


def test_the_threshold_is_the_best_f1_of_the_calibrated_out_of_sample_scores(world):
    """Recomputed by hand: each third of the training window scored by a model fit on the other
    two, calibrated, best F1."""
    from fraudflow.training.validation_split import best_threshold

    settings, training_set = world
    run = _train(settings, training_set)
    train = pd.read_parquet(training_set.train_path)
    spec, y = CANDIDATES["xgboost"], train[LABEL].to_numpy()
    days = sorted(train["TX_TIME_DAYS"].unique())
    assert run.validation.validation_days == [int(d) for d in days]
    out_of_sample = np.full(len(train), np.nan)
    for block in np.array_split(np.array(days), 3):
        held = train["TX_TIME_DAYS"].isin(block).to_numpy()
        model = spec.fit(train.loc[~held, MODEL_INPUTS], y[~held], {})
        out_of_sample[held] = spec.predict_proba(model, train.loc[held, MODEL_INPUTS])
    assert run.threshold == pytest.approx(best_threshold(y, run.calibration.apply(out_of_sample)))
    assert 0 < run.threshold < 1 and np.isfinite(run.test_ece)


def test_sampled_negatives_are_weighted_back_to_the_real_base_rate(world, tmp_path):
    """A training window over FRAUDFLOW_TRAINING_MAX_TRAIN_ROWS keeps every fraud and a hashed
    fifth of the rest (build_training_set, the real producer); the same test week, whole. The
    model's ranking on it is the unsampled model's within sampling noise, and its calibrated
    probabilities keep the real base rate because the calibration weighs each sampled negative
    by 1 / rate. The failing case: the same sample with its weights dropped over-states them."""
    from fraudflow.training.sampling import SAMPLE_WEIGHT
    from fraudflow.training.training_set import TrainingSetRejected, build_training_set

    settings, full = world
    bound = full.train_rows // 5
    sampled = build_training_set(
        settings.model_copy(update={"training_max_train_rows": bound}),
        run_date=full.window.test_end,
        run_id="calibration-sampled",
        reason="test",
    )
    record = sampled.sampling
    assert record is not None and 0.1 < record.rate < 0.25 and record.max_train_rows == bound
    assert (record.positives, record.negatives) == (full.train_frauds, full.train_rows - full.train_frauds)
    assert abs(sampled.train_rows - bound) < 5 * np.sqrt(bound)  # a hash, so near the bound, not on it
    assert (
        sampled.train_frauds == full.train_frauds
        and sampled.removed_known_compromised == full.removed_known_compromised
    )

    train, every = pd.read_parquet(sampled.train_path), pd.read_parquet(full.train_path)
    pd.testing.assert_frame_equal(pd.read_parquet(sampled.test_path), pd.read_parquet(full.test_path))
    weights = train.groupby(LABEL)[SAMPLE_WEIGHT].unique()
    assert list(weights[1]) == [1.0] and list(weights[0]) == [pytest.approx(1 / record.rate)]
    assert train[SAMPLE_WEIGHT].sum() == pytest.approx(full.train_rows, rel=0.05)
    # Sampling picks rows, it does not change their point-in-time features.
    same = every.set_index("TRANSACTION_ID").loc[train["TRANSACTION_ID"]].reset_index()
    pd.testing.assert_frame_equal(train.drop(columns=SAMPLE_WEIGHT), same[train.columns.drop(SAMPLE_WEIGHT)])
    # The same window samples the same rows on a rerun.
    again = build_training_set(
        settings.model_copy(update={"training_max_train_rows": bound}),
        run_date=full.window.test_end,
        run_id="calibration-sampled-again",
        reason="test",
    )
    assert pd.read_parquet(again.train_path)["TRANSACTION_ID"].tolist() == train["TRANSACTION_ID"].tolist()
    # A bound under the window's frauds cannot be met by sampling negatives: refused, naming it.
    with pytest.raises(TrainingSetRejected, match="FRAUDFLOW_TRAINING_MAX_TRAIN_ROWS"):
        build_training_set(
            settings.model_copy(update={"training_max_train_rows": full.train_frauds // 2}),
            run_date=full.window.test_end,
            run_id="calibration-refused",
            reason="test",
        )

    unsampled, weighted = _train(settings, full), _train(settings, sampled)
    assert weighted.metrics.average_precision == pytest.approx(unsampled.metrics.average_precision, abs=0.05)
    assert weighted.metrics.auc_roc == pytest.approx(unsampled.metrics.auc_roc, abs=0.03)
    test_rate = pd.read_parquet(full.test_path)[LABEL].mean()

    def mean_probability(run) -> float:
        return float(pd.read_parquet(run.scores_path)["score"].mean())

    assert mean_probability(weighted) == pytest.approx(mean_probability(unsampled), rel=0.3)
    assert abs(mean_probability(weighted) - test_rate) < abs(mean_probability(unsampled) - test_rate) + 0.01

    folder = tmp_path / "unweighted"
    shutil.copytree(sampled.folder, folder)
    unweighted_set = sampled.model_copy(update={"folder": str(folder)})
    pd.read_parquet(unweighted_set.train_path).drop(columns=SAMPLE_WEIGHT).to_parquet(
        unweighted_set.train_path, index=False
    )
    unweighted = _train(settings, unweighted_set)
    assert unweighted.metrics.average_precision == pytest.approx(weighted.metrics.average_precision)
    assert mean_probability(unweighted) > 2 * mean_probability(weighted)

    def flagged(run) -> float:
        return float((pd.read_parquet(run.scores_path)["score"] >= run.threshold).mean())

    # The operating threshold: the unsampled model's alert volume, and about twice it unweighted.
    assert flagged(weighted) == pytest.approx(flagged(unsampled), rel=0.3)
    assert flagged(unweighted) > 1.5 * flagged(weighted)
