"""A point-in-time training set from Feast, on the handbook's baseline protocol.

The protocol is relative to the run's date: 7 training days, a 7-day label-delay gap, 7 test
days ending on the run date; cards already known to be compromised (frauds seen in training or
in the gap before each test day) leave the test set. Every candidate is a nested MLflow run
under one parent run per DAG run; the parent carries the lineage (lake partitions, their GX
validations, the feature service).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, Field

from fraudflow import tags
from fraudflow.features.compute import LABEL, MODEL_INPUTS
from fraudflow.features.point_in_time import historical_features
from fraudflow.features.store import FEATURE_SERVICE
from fraudflow.ingestion.landing import safe_run_id
from fraudflow.lake import list_partitions, read_lake, read_partition_manifest
from fraudflow.lineage import record_lineage
from fraudflow.schema import LABEL_DELAY_DAYS
from fraudflow.settings import Settings
from fraudflow.tracking import configure_mlflow, git_commit
from fraudflow.training.sampling import (
    SAMPLE_WEIGHT,
    NegativeSampling,
    TrainingSetTooLarge,
    sample_negatives,
    sample_weights,
    sampling_rate,
)


class TrainingSetRejected(ValueError):
    """The training set cannot be used (no published transactions in the window, or it failed its
    GX suite); nothing was trained."""


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
    sampling: NegativeSampling | None = None  # the train window's negatives, when it was too large

    @property
    def train_path(self) -> Path:
        return Path(self.folder) / "train.parquet"

    @property
    def test_path(self) -> Path:
        return Path(self.folder) / "test.parquet"


def training_window(
    run_date: dt.date, *, train_days: int = 7, delay_days: int = LABEL_DELAY_DAYS, test_days: int = 7
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


def resolve_run_date(settings: Settings, *, requested: str | None, logical_date: dt.datetime | None) -> dt.date:
    """The run's last test day: ``requested`` (the ``run_date`` param), else the newest published
    lake day at or before the run's logical date. A run triggered without a logical date (the
    UI's Trigger button, ``fraudflow run``, an asset or API trigger in Airflow 3) takes the
    newest published day.

    Raises:
        TrainingSetRejected: no published day qualifies (nothing to train on yet).
    """
    if requested:
        return dt.date.fromisoformat(requested)
    upto = logical_date.date() if logical_date is not None else None
    days = [d for d in list_partitions(settings) if upto is None or d <= upto]
    if not days:
        bound = f" at or before {upto}" if upto else ""
        raise TrainingSetRejected(f"no published lake day{bound}: nothing to train on (run ingest_transactions first)")
    return days[-1]


def remove_known_compromised(test: pd.DataFrame, labelled: pd.DataFrame, window: TrainingWindow) -> pd.DataFrame:
    """Drop, per test day, the cards with a fraud already known on that day: in the training
    window, or in the gap up to ``delay_days + 1`` days before that test day, since labels arrive
    ``delay_days`` late (the handbook's ``get_train_test_set``)."""
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
    write ``train.parquet`` / ``test.parquet``, and open the MLflow parent run with the lineage.

    Args:
        settings: The fraudflow home, lake, feature store and MLflow server.
        run_date: The last test day; also names the parent run.
        run_id: The Airflow run id (None for an ad-hoc run); names the snapshot folder.
        reason: Why this training runs ("scheduled", or the drift that triggered it).
        window: The split to use; by default :func:`training_window` of ``run_date``.
        trigger: ``monitor_drift``'s ``failed_checks`` and ``report_path``; empty values are
            dropped.

    Returns:
        The snapshot's folder, sizes, lineage, fingerprint and parent run id.

    Raises:
        TrainingSetRejected: the lake holds no published transaction in the window, or its frauds
            alone exceed ``training_max_train_rows``.
    """
    window = window or training_window(run_date)
    train, test, removed, sampling = _point_in_time_split(settings, window)
    folder = _write_snapshot(settings, run_id, train, test)
    lineage = _lake_lineage(settings, window)
    trigger = {k: v for k, v in (trigger or {}).items() if v}
    run_tags = _parent_run_tags(run_id, reason, trigger)
    parent_run_id = _open_parent_run(
        settings, f"train_model {run_date}", run_tags, window, train, test, lineage, sampling
    )
    training_set = TrainingSet(
        window=window,
        folder=str(folder),
        train_rows=len(train),
        train_frauds=int(train[LABEL].sum()),
        test_rows=len(test),
        test_frauds=int(test[LABEL].sum()),
        removed_known_compromised=removed,
        partitions=lineage["partitions"],
        validation_ids=lineage["validation_ids"],
        fingerprint=_fingerprint(pd.concat([train, test])[["TRANSACTION_ID", LABEL, *MODEL_INPUTS]]),
        parent_run_id=parent_run_id,
        reason=reason,
        trigger=trigger,
        sampling=sampling,
    )
    _record_snapshot(settings, run_id, training_set, lineage)
    return training_set


def _point_in_time_split(
    settings: Settings, window: TrainingWindow
) -> tuple[pd.DataFrame, pd.DataFrame, int, NegativeSampling | None]:
    """Train and test rows with their point-in-time features, how many test transactions were
    dropped as known compromised, and how the train rows' negatives were sampled (if they were).

    Known-compromised cards leave the test transactions, and unsampled negatives the train
    transactions, before the Feast join, so only the rows that are kept are looked up. Train
    rows carry ``SAMPLE_WEIGHT``.

    Raises:
        TrainingSetRejected: the lake holds no published transaction in the window, or its frauds
            alone exceed ``training_max_train_rows``.
    """
    labelled = read_lake(settings, start=window.train_start, end=window.test_end)
    if labelled.empty:
        raise TrainingSetRejected(f"no published transactions between {window.train_start} and {window.test_end}")
    day = labelled["TX_DATETIME"].dt.date
    in_train = (day >= window.train_start) & (day <= window.train_end)
    in_test = (day >= window.test_start) & (day <= window.test_end)
    test_tx = remove_known_compromised(labelled[in_test], labelled, window)
    train_tx = labelled[in_train]
    try:
        rate = sampling_rate(train_tx[LABEL], settings.training_max_train_rows)
    except TrainingSetTooLarge as exc:  # a configuration to change, not a retry to wait for
        raise TrainingSetRejected(str(exc)) from exc
    train_tx, sampling = sample_negatives(train_tx, rate, max_train_rows=settings.training_max_train_rows)
    removed = int(in_test.sum() - len(test_tx))
    joined = historical_features(settings, pd.concat([train_tx, test_tx], ignore_index=True))
    del labelled, train_tx, test_tx  # the join's rows are all that is needed from here
    joined_day = joined["event_timestamp"].dt.date
    train = joined[joined_day <= window.train_end].reset_index(drop=True)
    train[SAMPLE_WEIGHT] = sample_weights(train, sampling)
    test = joined[joined_day >= window.test_start].reset_index(drop=True)
    return train, test, removed, sampling


def _write_snapshot(settings: Settings, run_id: str | None, train: pd.DataFrame, test: pd.DataFrame) -> Path:
    """Write ``train.parquet`` and ``test.parquet`` under ``training/<run id>``; the folder."""
    folder = settings.root / "training" / safe_run_id(run_id)
    folder.mkdir(parents=True, exist_ok=True)
    train.to_parquet(folder / "train.parquet", index=False)
    test.to_parquet(folder / "test.parquet", index=False)
    return folder


def _lake_lineage(settings: Settings, window: TrainingWindow) -> dict[str, Any]:
    """The lake partitions of every day from the first training day to the last test day (gap
    included), the GX validations that admitted them, and the feature service."""
    days = [window.train_start + dt.timedelta(days=i) for i in range((window.test_end - window.train_start).days + 1)]
    manifests = [m for m in (read_partition_manifest(settings, d) for d in days) if m is not None]
    return {
        "partitions": [m.partition_id for m in manifests],
        "validation_ids": [m.validation_id for m in manifests if m.validation_id],
        "feature_service": FEATURE_SERVICE,
    }


def _parent_run_tags(run_id: str | None, reason: str, trigger: dict[str, Any]) -> dict[str, str]:
    """Why and from what the parent run was started: the DAG run, the reason and, for a drift
    retraining, the checks that fired and the drift report."""
    run_tags = {
        tags.AIRFLOW_RUN_ID: run_id or "adhoc",
        tags.REASON: reason[:4000],
        tags.FEATURE_SERVICE: FEATURE_SERVICE,
        "mlflow.source.git.commit": git_commit(),
    }
    if trigger.get("failed_checks"):
        run_tags[tags.FAILED_CHECKS] = "; ".join(trigger["failed_checks"])[:4000]
    if trigger.get("report_path"):
        run_tags[tags.DRIFT_REPORT] = str(trigger["report_path"])
    return run_tags


def _open_parent_run(
    settings: Settings,
    run_name: str,
    run_tags: dict[str, str],
    window: TrainingWindow,
    train: pd.DataFrame,
    test: pd.DataFrame,
    lineage: dict[str, Any],
    sampling: NegativeSampling | None,
) -> str:
    """Start and end the MLflow parent run the candidates nest under, with the window, the
    sizes and ``lineage.json``; its run id."""
    import mlflow

    configure_mlflow(settings)
    with mlflow.start_run(run_name=run_name, tags=run_tags) as parent:
        mlflow.log_params({f"window.{k}": str(v) for k, v in window.model_dump().items()})
        mlflow.log_params({"train_rows": len(train), "test_rows": len(test), "features": ",".join(MODEL_INPUTS)})
        if sampling is not None:
            mlflow.log_params({f"sampling.{k}": v for k, v in sampling.model_dump().items()})
        mlflow.log_dict(lineage, "lineage.json")
    return parent.info.run_id


def _record_snapshot(
    settings: Settings, run_id: str | None, training_set: TrainingSet, lineage: dict[str, Any]
) -> None:
    """Tag the parent run with the data fingerprint (known only once the snapshot is built) and
    append the stage's lineage event."""
    import mlflow

    with mlflow.start_run(run_id=training_set.parent_run_id):
        mlflow.set_tag(tags.DATA_FINGERPRINT, training_set.fingerprint)
    record_lineage(
        settings,
        stage="build_training_set",
        run_id=run_id,
        read=lineage,
        wrote={
            "training_set": training_set.folder,
            "mlflow_parent_run": training_set.parent_run_id,
            "fingerprint": training_set.fingerprint,
            "sampling": training_set.sampling.model_dump() if training_set.sampling else None,
        },
    )


def validate_training_set(settings: Settings, training_set: TrainingSet, *, run_id: str | None):
    """Run the ``training_set`` GX suite on train and test rows; raise if it fails."""
    from fraudflow.ingestion.validation import run_checkpoint

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
