"""Train one candidate on a training set: a nested MLflow run with its calibrated model, metrics,
curves and test scores, so the gate can judge it without retraining. Calibration and the
operating threshold come from cross-fitted scores of the training window
(:mod:`fraudflow.training.validation_split`), never from the test week."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

from fraudflow import tags
from fraudflow.features.compute import LABEL, MODEL_INPUTS
from fraudflow.models.calibration import Calibration, brier_score, expected_calibration_error
from fraudflow.settings import Settings
from fraudflow.tracking import configure_mlflow
from fraudflow.training.metrics import Metrics, evaluate_scores, plot_curves
from fraudflow.training.prequential import Selection
from fraudflow.training.training_set import TrainingSet
from fraudflow.training.validation_split import ValidationFit, fit_on_validation


class CandidateRun(BaseModel):
    candidate: str
    run_id: str
    model_uri: str
    params: dict[str, Any]
    metrics: Metrics
    threshold: float  # best F1 of the calibrated validation scores
    scores_path: str
    seconds: float
    calibration: Calibration | None = None
    validation: ValidationFit | None = None
    test_brier: float | None = None  # of the served (calibrated) probabilities on the test window
    test_ece: float | None = None
    selection: Selection | None = None  # how ``params`` were chosen (prequential folds), if they were


def train_candidate(
    settings: Settings,
    *,
    candidate: str,
    training_set: TrainingSet,
    params: dict[str, Any] | None = None,
    shuffle_labels: bool = False,
    selection: Selection | None = None,
) -> CandidateRun:
    """Fit one candidate family, score the test window, log it all as a nested MLflow run.

    ``selection``, when the parameters came from prequential selection, travels with the run
    (into the gate's decision and the model card); ``params`` are then its ``best_params``."""
    import mlflow

    from fraudflow.models.candidates import CANDIDATES, Calibrated

    spec = CANDIDATES[candidate]
    params = params or {}
    train, test = pd.read_parquet(training_set.train_path), pd.read_parquet(training_set.test_path)
    y_train = train[LABEL].to_numpy()
    if shuffle_labels:  # a deliberately broken candidate, for gate drills
        y_train = np.random.default_rng(0).permutation(y_train)
    started = time.perf_counter()
    configure_mlflow(settings)
    with mlflow.start_run(run_name=candidate, nested=True, parent_run_id=training_set.parent_run_id) as run:
        mlflow.set_tags({tags.CANDIDATE: candidate, tags.FEATURE_SERVICE: training_set.feature_service})
        effective = spec.validate_params(params).model_dump()  # defaults included: what was really used
        mlflow.log_params({**{f"model.{k}": v for k, v in effective.items()}, "shuffle_labels": shuffle_labels})
        validation = fit_on_validation(spec, train.assign(**{LABEL: y_train}), params)
        model = spec.fit(train[MODEL_INPUTS], y_train, params)
        if validation.calibration is not None:
            model = Calibrated(model, validation.calibration)
        scores = spec.predict_proba(model, test[MODEL_INPUTS])
        metrics = evaluate_scores(test, scores)
        threshold = validation.threshold
        y_test = test[LABEL].to_numpy()
        test_brier, test_ece = brier_score(y_test, scores), expected_calibration_error(y_test, scores)
        reported = validation.model_dump(include={"brier_raw", "brier_calibrated", "ece_raw", "ece_calibrated"})
        calibration_metrics = {f"validation.{k}": v for k, v in reported.items() if v is not None}
        mlflow.log_metrics(
            {**metrics.model_dump(), "threshold": threshold, "test.brier": test_brier, "test.ece": test_ece}
            | calibration_metrics
            | ({"selection.mean_average_precision": selection.best.mean_average_precision} if selection else {})
        )
        mlflow.log_dict(validation.model_dump(mode="json"), "validation.json")
        roc, pr = plot_curves(test[LABEL].to_numpy(), scores, title=candidate)
        mlflow.log_figure(roc, "roc_curve.png")
        mlflow.log_figure(pr, "pr_curve.png")
        info = spec.log_model(model, name="model", input_example=train[MODEL_INPUTS].head(5))
    scores_path = Path(training_set.folder) / f"scores_{candidate}.parquet"
    pd.DataFrame({"TRANSACTION_ID": test["TRANSACTION_ID"], "score": scores}).to_parquet(scores_path, index=False)
    return CandidateRun(
        candidate=candidate,
        run_id=run.info.run_id,
        model_uri=info.model_uri,
        params=params,
        metrics=metrics,
        threshold=threshold,
        scores_path=str(scores_path),
        seconds=round(time.perf_counter() - started, 2),
        calibration=validation.calibration,
        validation=validation,
        test_brier=test_brier,
        test_ece=test_ece,
        selection=selection,
    )


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)
