"""Refit the gate-approved candidate on the freshest labelled days before it is registered.

The gate judges a candidate trained on the train window and tested on the newest labelled week
(the handbook protocol: train, label-delay gap, test). After a regime change that newest week
is exactly what the model must learn from, yet the judged model saw it only as test data: a
drift-fired retraining would ship a model that hardly knows the new regime. So the registered
version is the same family with the same parameters refit on the newest ``train_days`` of
labelled data, ending where the test window ends (the label-delay boundary of the protocol).
When the training window's negatives were sampled, the refit window's are, at the same rate.

The refit has no held-out week of its own. It keeps what the gate measured on the judged model:
the metrics, the calibration and the operating threshold (both fit on the judged model's
out-of-sample training scores), and the held-out test scores (the reference of the
rollout's "online as offline" check). Both runs are nested under the training run in MLflow,
the version is tagged with the run it refits and the window, and the model card says which
numbers belong to which model.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from pydantic import BaseModel

from fraudflow import tags
from fraudflow.features.compute import LABEL, MODEL_INPUTS
from fraudflow.lake import read_lake
from fraudflow.lineage import record_lineage
from fraudflow.settings import Settings
from fraudflow.tracking import configure_mlflow
from fraudflow.training.sampling import SAMPLE_WEIGHT, keep_mask, sample_weights
from fraudflow.training.train import CandidateRun
from fraudflow.training.training_set import TrainingSet, TrainingSetRejected

REFIT_FILE = "refit.parquet"  # beside train.parquet / test.parquet in the training-set snapshot


class Refit(BaseModel):
    """The registered model when it is a refit: what it was fit on, and what it refits."""

    of_run_id: str  # the judged candidate's run
    window_start: dt.date
    window_end: dt.date
    rows: int
    frauds: int
    run_id: str
    model_uri: str
    seconds: float


def refit_window(training_set: TrainingSet) -> tuple[dt.date, dt.date]:
    """As many days as the train window, ending on the last labelled (test) day."""
    window = training_set.window
    days = (window.train_end - window.train_start).days + 1
    return window.test_end - dt.timedelta(days=days - 1), window.test_end


def refit_candidate(
    settings: Settings, *, judged: CandidateRun, training_set: TrainingSet, run_id: str | None = None
) -> Refit:
    """Fit ``judged``'s family and parameters on the freshest window, as a nested MLflow run.

    Args:
        settings: The fraudflow home, lake, feature store and MLflow.
        judged: The candidate the gate let through.
        training_set: Its training set (windows, parent run, feature service).
        run_id: The Airflow run id, for lineage.

    Raises:
        TrainingSetRejected: the refit window holds no transaction or no fraud.
    """
    import mlflow

    from fraudflow.features.point_in_time import historical_features
    from fraudflow.models.candidates import CANDIDATES, Calibrated

    start, end = refit_window(training_set)
    rows = read_lake(settings, start=start, end=end)
    if rows.empty or not rows[LABEL].any():
        raise TrainingSetRejected(f"nothing to refit on between {start} and {end} (no transaction or no fraud)")
    sampling = training_set.sampling  # the judged model's rate: its calibration assumes that sample
    if sampling is not None:
        rows = rows[keep_mask(rows, sampling.rate)]
    frame = historical_features(settings, rows)
    frame[SAMPLE_WEIGHT] = sample_weights(frame, sampling)
    frame.to_parquet(Path(training_set.folder) / REFIT_FILE, index=False)  # the drift reference of this model
    spec = CANDIDATES[judged.candidate]
    started = time.perf_counter()
    configure_mlflow(settings)
    with mlflow.start_run(
        run_name=f"{judged.candidate} refit", nested=True, parent_run_id=training_set.parent_run_id
    ) as run:
        mlflow.set_tags(
            {tags.CANDIDATE: judged.candidate, tags.REFIT_OF: judged.run_id, tags.REFIT_WINDOW: f"{start}..{end}"}
        )
        mlflow.log_params({f"model.{k}": v for k, v in spec.validate_params(judged.params).model_dump().items()})
        mlflow.log_params({"refit_rows": len(frame), "refit_frauds": int(frame[LABEL].sum())})
        model = spec.fit(frame[MODEL_INPUTS], frame[LABEL].to_numpy(), judged.params)
        if judged.calibration is not None:  # same family and parameters: the judged model's calibration
            model = Calibrated(model, judged.calibration)
        info = spec.log_model(model, name="model", input_example=frame[MODEL_INPUTS].head(5))
    refit = Refit(
        of_run_id=judged.run_id,
        window_start=start,
        window_end=end,
        rows=len(frame),
        frauds=int(frame[LABEL].sum()),
        run_id=run.info.run_id,
        model_uri=info.model_uri,
        seconds=round(time.perf_counter() - started, 2),
    )
    record_lineage(
        settings,
        stage="refit_challenger",
        run_id=run_id,
        read={
            "judged_run": judged.run_id,
            "window": f"{start}..{end}",
            "feature_service": training_set.feature_service,
        },
        wrote={"mlflow_run": refit.run_id, "model_uri": refit.model_uri, "rows": refit.rows},
    )
    return refit
