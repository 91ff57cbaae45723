"""Training: a point-in-time training set from Feast, candidates in MLflow, a gate, a registry entry.

The protocol is the handbook's baseline, relative to the run's date: 7 training days, a
7-day label-delay gap, 7 test days ending on the run date; cards already known to be
compromised (frauds seen in training or in the gap before each test day) leave the test
set. Every candidate is a nested MLflow run under one parent run per DAG run; the parent
carries the lineage (lake partitions, their GX validations, the feature service).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from fraudflow.evaluation import Metrics, evaluate_scores, plot_curves
from fraudflow.feature_store import FEATURE_SERVICE, historical_features
from fraudflow.features import LABEL, MODEL_INPUTS
from fraudflow.ingest import read_lake, read_partition_manifest
from fraudflow.landing import safe_run_id
from fraudflow.lineage import record_lineage
from fraudflow.settings import Settings
from fraudflow.tracking import configure_mlflow, git_commit

CANDIDATE_NAMES = ("xgboost", "mlp")


class TrainingSetRejected(ValueError):
    """The training set failed its GX suite; nothing was trained."""


class TrainingWindow(BaseModel):
    train_start: dt.date
    train_end: dt.date
    test_start: dt.date
    test_end: dt.date
    delay_days: int


class TrainingSet(BaseModel):
    window: TrainingWindow
    folder: str
    train_rows: int
    train_frauds: int
    test_rows: int
    test_frauds: int
    removed_known_compromised: int
    partitions: list[str]
    validation_ids: list[str]
    feature_service: str = FEATURE_SERVICE
    features: list[str] = Field(default_factory=lambda: list(MODEL_INPUTS))
    fingerprint: str
    parent_run_id: str
    reason: str = "scheduled"
    trigger: dict[str, Any] = Field(default_factory=dict)  # monitor_drift's failed checks and report

    @property
    def train_path(self) -> Path:
        return Path(self.folder) / "train.parquet"

    @property
    def test_path(self) -> Path:
        return Path(self.folder) / "test.parquet"


class CandidateRun(BaseModel):
    candidate: str
    run_id: str
    model_uri: str
    params: dict[str, Any]
    metrics: Metrics
    threshold: float
    scores_path: str
    seconds: float


def training_window(
    run_date: dt.date, *, train_days: int = 7, delay_days: int = 7, test_days: int = 7
) -> TrainingWindow:
    """The handbook's baseline split, ending on ``run_date`` (2018-08-14 -> train 07-25..07-31)."""
    test_start = run_date - dt.timedelta(days=test_days - 1)
    train_end = test_start - dt.timedelta(days=delay_days + 1)
    return TrainingWindow(
        train_start=train_end - dt.timedelta(days=train_days - 1),
        train_end=train_end,
        test_start=test_start,
        test_end=run_date,
        delay_days=delay_days,
    )


def remove_known_compromised(test: pd.DataFrame, labelled: pd.DataFrame, window: TrainingWindow) -> pd.DataFrame:
    """Drop, per test day, cards with a known fraud: in the training window, or in the delay
    period up to the day before that test day (the handbook's ``get_train_test_set``)."""
    day = labelled["TX_DATETIME"].dt.date
    known = set(
        labelled.loc[(day >= window.train_start) & (day <= window.train_end) & (labelled[LABEL] == 1), "CUSTOMER_ID"]
    )
    kept = []
    test_days = test["TX_DATETIME"].dt.date
    for i in range((window.test_end - window.test_start).days + 1):
        newly_known_day = window.train_end + dt.timedelta(days=i)  # train_end, then the gap days
        known |= set(labelled.loc[(day == newly_known_day) & (labelled[LABEL] == 1), "CUSTOMER_ID"])
        today = test[test_days == window.test_start + dt.timedelta(days=i)]
        kept.append(today[~today["CUSTOMER_ID"].isin(known)])
    return pd.concat(kept, ignore_index=True) if kept else test.iloc[:0]


def _fingerprint(frame: pd.DataFrame) -> str:
    return hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()).hexdigest()


def build_training_set(
    settings: Settings,
    *,
    run_date: dt.date,
    run_id: str | None,
    reason: str = "scheduled",
    window: TrainingWindow | None = None,
    trigger: dict[str, Any] | None = None,
) -> TrainingSet:
    """Join the window's transactions with their point-in-time features from Feast, split them,
    write ``train.parquet`` / ``test.parquet``, and open the MLflow parent run with the lineage."""
    import mlflow

    window = window or training_window(run_date)
    labelled = read_lake(settings, start=window.train_start, end=window.test_end)
    if labelled.empty:
        raise TrainingSetRejected(f"no published transactions between {window.train_start} and {window.test_end}")
    day = labelled["TX_DATETIME"].dt.date
    in_train = (day >= window.train_start) & (day <= window.train_end)
    in_test = (day >= window.test_start) & (day <= window.test_end)
    test_tx = remove_known_compromised(labelled[in_test], labelled, window)
    joined = historical_features(settings, pd.concat([labelled[in_train], test_tx], ignore_index=True))
    joined_day = joined["event_timestamp"].dt.date
    train = joined[joined_day <= window.train_end].reset_index(drop=True)
    test = joined[joined_day >= window.test_start].reset_index(drop=True)

    folder = settings.root / "training" / safe_run_id(run_id)
    folder.mkdir(parents=True, exist_ok=True)
    train.to_parquet(folder / "train.parquet", index=False)
    test.to_parquet(folder / "test.parquet", index=False)

    days = [window.train_start + dt.timedelta(days=i) for i in range((window.test_end - window.train_start).days + 1)]
    manifests = [m for m in (read_partition_manifest(settings, d) for d in days) if m is not None]
    partitions = [m.partition_id for m in manifests]
    validation_ids = [m.validation_id for m in manifests if m.validation_id]

    configure_mlflow(settings)
    tags = {
        "fraudflow.airflow_run_id": run_id or "adhoc",
        "fraudflow.reason": reason[:4000],
        "fraudflow.feature_service": FEATURE_SERVICE,
        "mlflow.source.git.commit": git_commit(),
    }
    trigger = {k: v for k, v in (trigger or {}).items() if v}
    if trigger.get("failed_checks"):
        tags["fraudflow.failed_checks"] = "; ".join(trigger["failed_checks"])[:4000]
    if trigger.get("report_path"):
        tags["fraudflow.drift_report"] = str(trigger["report_path"])
    with mlflow.start_run(run_name=f"train_model {run_date}", tags=tags) as parent:
        mlflow.log_params({f"window.{k}": str(v) for k, v in window.model_dump().items()})
        mlflow.log_params({"train_rows": len(train), "test_rows": len(test), "features": ",".join(MODEL_INPUTS)})
        lineage = {"partitions": partitions, "validation_ids": validation_ids, "feature_service": FEATURE_SERVICE}
        mlflow.log_dict(lineage, "lineage.json")
    training_set = TrainingSet(
        window=window,
        folder=str(folder),
        train_rows=len(train),
        train_frauds=int(train[LABEL].sum()),
        test_rows=len(test),
        test_frauds=int(test[LABEL].sum()),
        removed_known_compromised=int(in_test.sum() - len(test_tx)),
        partitions=partitions,
        validation_ids=validation_ids,
        fingerprint=_fingerprint(pd.concat([train, test])[["TRANSACTION_ID", LABEL, *MODEL_INPUTS]]),
        parent_run_id=parent.info.run_id,
        reason=reason,
        trigger=trigger,
    )
    with mlflow.start_run(run_id=parent.info.run_id):
        mlflow.set_tag("fraudflow.data_fingerprint", training_set.fingerprint)
    record_lineage(
        settings,
        stage="build_training_set",
        run_id=run_id,
        read={"partitions": partitions, "validation_ids": validation_ids, "feature_service": FEATURE_SERVICE},
        wrote={
            "training_set": str(folder),
            "mlflow_parent_run": parent.info.run_id,
            "fingerprint": training_set.fingerprint,
        },
    )
    return training_set


def validate_training_set(settings: Settings, training_set: TrainingSet, *, run_id: str | None):
    """Run the ``training_set`` GX suite on train and test rows; raise if it fails."""
    from fraudflow.validation import run_checkpoint

    frame = pd.concat([pd.read_parquet(training_set.train_path), pd.read_parquet(training_set.test_path)])
    result = run_checkpoint(
        settings,
        frame,
        checkpoint="training_set_gate",
        suites=["training_set"],
        parameters={},
        run_name=safe_run_id(run_id),
    )
    if not result.success:
        summary = "; ".join(f.describe() for f in result.failures)
        raise TrainingSetRejected(f"training set {training_set.folder} failed validation: {summary}")
    return result


def best_threshold(y: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold with the best F1 on the test window (stored with the version)."""
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(y[order])
    precision = tp / np.arange(1, len(y) + 1)
    recall = tp / max(1, y.sum())
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0)
    return float(scores[order][int(np.argmax(f1))]) if len(y) else 0.5


def train_candidate(
    settings: Settings,
    *,
    candidate: str,
    training_set: TrainingSet,
    params: dict[str, Any] | None = None,
    shuffle_labels: bool = False,
) -> CandidateRun:
    """Fit one candidate family, score the test window, log it all as a nested MLflow run."""
    import mlflow

    from fraudflow.models.candidates import CANDIDATES

    spec = CANDIDATES[candidate]
    params = params or {}
    train, test = pd.read_parquet(training_set.train_path), pd.read_parquet(training_set.test_path)
    y_train = train[LABEL].to_numpy()
    if shuffle_labels:  # a deliberately broken candidate, for gate drills
        y_train = np.random.default_rng(0).permutation(y_train)
    started = time.perf_counter()
    configure_mlflow(settings)
    with mlflow.start_run(run_name=candidate, nested=True, parent_run_id=training_set.parent_run_id) as run:
        mlflow.set_tags({"fraudflow.candidate": candidate, "fraudflow.feature_service": training_set.feature_service})
        effective = spec.validate_params(params).model_dump()  # defaults included: what was really used
        mlflow.log_params({**{f"model.{k}": v for k, v in effective.items()}, "shuffle_labels": shuffle_labels})
        model = spec.fit(train[MODEL_INPUTS], y_train, params)
        scores = spec.predict_proba(model, test[MODEL_INPUTS])
        metrics = evaluate_scores(test, scores)
        threshold = best_threshold(test[LABEL].to_numpy(), scores)
        mlflow.log_metrics({**metrics.model_dump(), "threshold": threshold})
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
    )


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)
