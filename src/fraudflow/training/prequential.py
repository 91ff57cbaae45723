"""Prequential model selection (Fraud Detection Handbook, chapter 5): each family's small
hyper-parameter search, judged on folds that end before the test window.

The validation folds have the test split's own shape (train days, label-delay gap, validation
days) and end where the *training* window ends: fold 0 validates on the training week itself,
trained on the week ``delay + validation`` days earlier; fold ``k`` moves that back ``k``
validation lengths. So selection never reads the test window, and every fold honours the label
delay (a card's frauds known in a fold's training week or its gap leave that fold's validation
days, as in the test split). Each trial (one parameter set over every fold) is a nested MLflow
run under the training parent run, with its fold scores; the winner's parameters and fold
scores go on the parent run and into the model card.
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

from fraudflow.features.compute import LABEL
from fraudflow.settings import Settings
from fraudflow.training.metrics import CARD, DAY
from fraudflow.training.training_set import TrainingSet, TrainingWindow, training_window

KEY = "TRANSACTION_ID"
FOLD_COLUMNS = [KEY, CARD, DAY, LABEL]  # what evaluate_scores needs of a validation row

# The searched values per family (the defaults are always one of the trials).
SEARCH_SPACE: dict[str, dict[str, list[Any]]] = {
    "xgboost": {"n_estimators": [150, 300, 600], "max_depth": [3, 4, 6], "learning_rate": [0.05, 0.1]},
    "mlp": {"hidden": [(64, 32), (128, 64)], "dropout": [0.0, 0.2], "epochs": [15, 30]},
}


class LeakingFold(ValueError):
    """A fold that would read the test window or labels younger than the delay."""


class Trial(BaseModel):
    params: dict[str, Any]
    fold_average_precision: list[float]
    mean_average_precision: float
    run_id: str


class Selection(BaseModel):
    candidate: str
    folds: list[TrainingWindow]
    trials: list[Trial]
    best_params: dict[str, Any]
    seconds: float
    fold_scores_path: str | None = None  # the winner's validation scores per fold (for the ensemble)

    @property
    def best(self) -> Trial:
        return max(self.trials, key=lambda t: t.mean_average_precision)


class EnsembleVerdict(BaseModel):
    """Whether the probability average of the families' selected models beat each of them on
    the same prequential folds (their mean fold AP), and so whether it is trained at all."""

    selection: Selection
    kept: bool
    reason: str


def prequential_folds(window: TrainingWindow, n_folds: int) -> list[TrainingWindow]:
    """The validation folds for ``window`` (the test split): same train / delay / validation
    lengths, fold 0 validating on the training week, each next one a validation length earlier."""
    valid_days = (window.test_end - window.test_start).days + 1
    train_days = (window.train_end - window.train_start).days + 1
    folds = [
        training_window(
            window.train_end - dt.timedelta(days=k * valid_days),
            train_days=train_days,
            delay_days=window.delay_days,
            test_days=valid_days,
        )
        for k in range(n_folds)
    ]
    for fold in folds:
        check_fold(fold, window)
    return folds


def check_fold(fold: TrainingWindow, window: TrainingWindow) -> None:
    """Refuse a fold that reads the test window, or validates on days whose labels the fold's
    training could not have had yet (validation must start more than ``delay`` days after the
    fold's training ends)."""
    if fold.test_end >= window.test_start or fold.train_end >= window.test_start:
        raise LeakingFold(f"fold {fold.train_start}..{fold.test_end} reaches the test window from {window.test_start}")
    if (fold.test_start - fold.train_end).days <= window.delay_days:
        raise LeakingFold(
            f"fold validates from {fold.test_start}, within the {window.delay_days}-day label delay of its "
            f"training end {fold.train_end}"
        )


def parameter_grid(candidate: str, budget: int) -> list[dict[str, Any]]:
    """At most ``budget`` parameter sets: the family's defaults first, then the grid in a fixed
    order spread over the space (every k-th combination), so a small budget still varies each
    parameter."""
    space = SEARCH_SPACE[candidate]
    combos = [dict(zip(space, values, strict=True)) for values in itertools.product(*space.values())]
    picked: list[dict[str, Any]] = [{}]
    step = max(1, len(combos) // max(1, budget - 1))
    for combo in combos[::step]:
        if len(picked) >= budget:
            break
        picked.append(combo)
    return picked


def _fold_frames(
    settings: Settings, folds: Iterable[TrainingWindow], cache: Path
) -> list[tuple[pd.DataFrame, pd.DataFrame, tuple[str, str]]]:
    """Each usable fold's train and validation rows (Feast point-in-time joins) and their files,
    kept under ``cache`` (the training set's folder) so the second family, and the trial
    workers, read what the first joined."""
    from fraudflow.training.training_set import TrainingSetRejected, _point_in_time_split

    frames = []
    for fold in folds:
        paths = [cache / f"fold_{fold.train_start}_{fold.test_end}_{part}.parquet" for part in ("train", "valid")]
        if all(p.exists() for p in paths):
            train, valid = (pd.read_parquet(p) for p in paths)
        else:
            try:
                train, valid, _, _ = _point_in_time_split(settings, fold)
            except TrainingSetRejected:
                continue  # before the lake's first day
            for frame, path in zip((train, valid), paths, strict=True):  # atomic: a parallel family may read
                partial = path.with_suffix(f".{uuid.uuid4().hex}.tmp")
                frame.to_parquet(partial, index=False)
                partial.replace(path)
        if train[LABEL].nunique() < 2 or valid[LABEL].sum() == 0:
            continue  # a fold without both classes judges nothing
        frames.append((train, valid, (str(paths[0]), str(paths[1]))))
    return frames


def select_parameters(
    settings: Settings, *, candidate: str, training_set: TrainingSet, n_folds: int, budget: int
) -> Selection:
    """Run the search for one family; every trial a nested MLflow run with its fold scores."""
    import mlflow

    from fraudflow.models.candidates import CANDIDATES
    from fraudflow.tracking import configure_mlflow
    from fraudflow.training.metrics import evaluate_scores
    from fraudflow.training.trials import run_trials

    spec = CANDIDATES[candidate]
    started = time.perf_counter()
    folds = prequential_folds(training_set.window, n_folds)
    frames = _fold_frames(settings, folds, Path(training_set.folder))
    if not frames:
        raise ValueError(f"no usable prequential fold before {training_set.window.train_start}: too little history")
    grid = parameter_grid(candidate, budget)
    fold_paths = [paths for _, _, paths in frames]
    predictions_per_trial = run_trials(candidate, grid, fold_paths, workers=settings.selection_workers)
    configure_mlflow(settings)
    trials, fold_scores = [], []
    for params, predictions in zip(grid, predictions_per_trial, strict=True):
        scores = []
        name = f"select {candidate} " + (", ".join(f"{k}={v}" for k, v in params.items()) or "defaults")
        with mlflow.start_run(run_name=name, nested=True, parent_run_id=training_set.parent_run_id) as run:
            effective = spec.validate_params(params).model_dump()
            mlflow.log_params({f"model.{k}": v for k, v in effective.items()} | {"selection.folds": len(frames)})
            for k, ((_, valid, _), predicted) in enumerate(zip(frames, predictions, strict=True)):
                metrics = evaluate_scores(valid, predicted)
                scores.append(float(metrics.average_precision))
                mlflow.log_metrics(
                    {
                        f"fold{k}.average_precision": metrics.average_precision,
                        f"fold{k}.card_precision_at_100": metrics.card_precision_at_100,
                    }
                )
            mean = float(np.mean(scores))
            mlflow.log_metric("mean_average_precision", mean)
        trials.append(
            Trial(params=params, fold_average_precision=scores, mean_average_precision=mean, run_id=run.info.run_id)
        )
        fold_scores.append(predictions)
    best = int(np.argmax([t.mean_average_precision for t in trials]))
    path = Path(training_set.folder) / f"selection_{candidate}_folds.parquet"
    winners = zip(frames, fold_scores[best], strict=True)
    pd.concat([valid[FOLD_COLUMNS].assign(fold=k, score=s) for k, ((_, valid, _), s) in enumerate(winners)]).to_parquet(
        path, index=False
    )
    selection = Selection(
        candidate=candidate,
        folds=folds[: len(frames)],
        trials=trials,
        best_params=trials[best].params,
        seconds=round(time.perf_counter() - started, 3),
        fold_scores_path=str(path),
    )
    _log_selection(training_set, selection)
    return selection


def _log_selection(training_set: TrainingSet, selection: Selection) -> None:
    import mlflow

    with mlflow.start_run(run_id=training_set.parent_run_id):
        mlflow.log_dict(selection.model_dump(mode="json"), f"selection/{selection.candidate}.json")
        mlflow.set_tag(f"fraudflow.selection.{selection.candidate}", str(selection.best_params or "defaults")[:4000])


def judge_ensemble(settings: Settings, *, training_set: TrainingSet, selections: list[Selection]) -> EnsembleVerdict:
    """Score the mean of the families' selected models on the folds their selection used (the
    winners' stored fold scores, so nothing is refit) and keep the ensemble only if its mean
    fold AP beats every family's. A nested MLflow run records the fold scores and the verdict.

    Raises:
        ValueError: fewer than two selections with fold scores, or they were judged on
            different folds.
    """
    import mlflow

    from fraudflow.tracking import configure_mlflow
    from fraudflow.training.metrics import evaluate_scores

    usable = [s for s in selections if s.fold_scores_path]
    if len(usable) < 2 or len({tuple(f.model_dump_json() for f in s.folds) for s in usable}) != 1:
        raise ValueError("an ensemble needs two or more families selected on the same prequential folds")
    started = time.perf_counter()
    frames = [pd.read_parquet(s.fold_scores_path) for s in usable]
    merged = frames[0].drop(columns="score")
    for s, frame in zip(usable, frames, strict=True):
        merged = merged.merge(frame[["fold", KEY, "score"]].rename(columns={"score": s.candidate}), on=["fold", KEY])
    merged["score"] = merged[[s.candidate for s in usable]].mean(axis=1)
    scores = [float(evaluate_scores(f, f["score"].to_numpy()).average_precision) for _, f in merged.groupby("fold")]
    mean = float(np.mean(scores))
    members = {s.candidate: s.best_params for s in usable}
    rival = max(usable, key=lambda s: s.best.mean_average_precision)
    rival_ap = rival.best.mean_average_precision
    kept = mean > rival_ap
    reason = f"mean fold AP {mean:.4f} {'>' if kept else '<='} {rival.candidate}'s {rival_ap:.4f}"
    configure_mlflow(settings)
    with mlflow.start_run(run_name="select ensemble", nested=True, parent_run_id=training_set.parent_run_id) as run:
        mlflow.log_params({f"members.{k}": v for k, v in members.items()} | {"selection.folds": len(scores)})
        fold_metrics = {f"fold{k}.average_precision": v for k, v in enumerate(scores)}
        mlflow.log_metrics(fold_metrics | {"mean_average_precision": mean})
        mlflow.set_tag("fraudflow.selection.verdict", ("kept: " if kept else "dropped: ") + reason)
    selection = Selection(
        candidate="ensemble",
        folds=usable[0].folds,
        trials=[
            Trial(
                params={"members": members},
                fold_average_precision=scores,
                mean_average_precision=mean,
                run_id=run.info.run_id,
            )
        ],
        best_params={"members": members},
        seconds=round(time.perf_counter() - started, 3),
    )
    _log_selection(training_set, selection)
    return EnsembleVerdict(selection=selection, kept=kept, reason=reason)
