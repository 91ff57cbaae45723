"""Prequential folds (Fraud Detection Handbook, chapter 5): never the test window, always the
label delay; each guard seen to fail on a constructed leaking fold."""

from __future__ import annotations

import datetime as dt

import pytest

from fraudflow.training.prequential import LeakingFold, check_fold, parameter_grid, prequential_folds
from fraudflow.training.training_set import TrainingWindow, training_window

WINDOW = training_window(dt.date(2018, 8, 14))  # train 07-25..07-31, test 08-08..08-14


def test_folds_validate_before_the_test_window_and_across_the_label_delay():
    folds = prequential_folds(WINDOW, 3)
    assert [(f.test_start, f.test_end) for f in folds] == [
        (dt.date(2018, 7, 25), dt.date(2018, 7, 31)),  # fold 0 validates on the training week
        (dt.date(2018, 7, 18), dt.date(2018, 7, 24)),
        (dt.date(2018, 7, 11), dt.date(2018, 7, 17)),
    ]
    for fold in folds:
        assert fold.test_end < WINDOW.test_start
        assert (fold.test_start - fold.train_end).days == WINDOW.delay_days + 1  # the gap, as in the test split
        assert (fold.train_end - fold.train_start).days == 6
    assert folds[0].train_start == dt.date(2018, 7, 11)  # the handbook: training start - (delay + valid)


def test_a_fold_reading_the_test_window_is_refused():
    leaking = WINDOW.model_copy(update={"test_start": dt.date(2018, 8, 8), "test_end": dt.date(2018, 8, 9)})
    with pytest.raises(LeakingFold, match="reaches the test window"):
        check_fold(leaking, WINDOW)


def test_a_fold_validating_on_labels_younger_than_the_delay_is_refused():
    young = TrainingWindow(
        train_start=dt.date(2018, 7, 11),
        train_end=dt.date(2018, 7, 17),
        test_start=dt.date(2018, 7, 20),  # 3 days after training: its labels were not known yet
        test_end=dt.date(2018, 7, 26),
        delay_days=7,
    )
    with pytest.raises(LeakingFold, match="label delay"):
        check_fold(young, WINDOW)


def test_the_grid_starts_with_the_defaults_and_respects_the_budget():
    grid = parameter_grid("xgboost", 4)
    assert grid[0] == {} and len(grid) == 4
    assert len({tuple(sorted(p.items())) for p in grid}) == 4
    assert len(parameter_grid("mlp", 1)) == 1
