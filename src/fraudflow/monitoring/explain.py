"""Lineage of one prediction: request -> model version -> MLflow runs -> training windows ->
lake partitions -> the GX validations that admitted them -> the feature service."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from fraudflow import tags
from fraudflow.registry import MODEL_NAME
from fraudflow.serving.prediction_log import read_predictions
from fraudflow.settings import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion


def explain_request(settings: Settings, request_id: str) -> dict[str, Any]:
    """Everything recorded about how ``request_id`` was answered.

    Args:
        settings: Where the prediction log and the MLflow tracking server are.
        request_id: The ``request_id`` of a /score answer.

    Returns:
        Sections ``request`` (the logged answer and its features), ``model`` (the registered
        version that served it), ``training`` (its training run, windows and data fingerprint),
        ``data`` (lake partitions and their GX validations) and ``features`` (the feature service).

    Raises:
        LookupError: the request is not in the prediction log (flushed requests only).
    """
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep --json output clean
    from mlflow import MlflowClient

    from fraudflow.tracking import configure_mlflow

    row = _logged_request(settings, request_id)
    configure_mlflow(settings)
    client = MlflowClient(settings.mlflow_tracking_uri)
    version = client.get_model_version(MODEL_NAME, str(row["model_version"]))
    version_tags = dict(version.tags)
    parent_run = _training_parent_run(client, version, version_tags)
    lineage = _parent_lineage(client, parent_run)
    return {
        "request": _request_section(request_id, row),
        "model": _model_section(version, version_tags),
        "training": _training_section(parent_run, version_tags),
        "data": {
            "lake_partitions": lineage.get("partitions", []),
            "gx_validation_ids": lineage.get("validation_ids", []),
        },
        "features": {"feature_service": lineage.get("feature_service", version_tags.get(tags.FEATURE_SERVICE))},
    }


def _logged_request(settings: Settings, request_id: str) -> pd.Series:
    """The first prediction-log row of ``request_id``; LookupError if it is not (yet) flushed."""
    predictions = read_predictions(settings.predictions_dir)
    match = predictions[predictions["request_id"] == request_id]
    if match.empty:
        raise LookupError(f"request {request_id} is not in the prediction log ({settings.predictions_dir})")
    return match.iloc[0]


def _training_parent_run(client: MlflowClient, version: ModelVersion, version_tags: dict[str, str]) -> str | None:
    """The MLflow parent run that trained ``version``: its tag, else its run's parent (for
    versions registered outside train_model), else None."""
    parent_run = version_tags.get(tags.TRAINING_PARENT_RUN)
    if not parent_run and version.run_id:
        parent_run = client.get_run(version.run_id).data.tags.get("mlflow.parentRunId")
    return parent_run


def _parent_lineage(client: MlflowClient, parent_run: str | None) -> dict[str, Any]:
    """The ``lineage.json`` the training parent run logged (partitions, validations, feature
    service); empty without a parent run."""
    if not parent_run:
        return {}
    return json.loads(Path(client.download_artifacts(parent_run, "lineage.json")).read_text())


def _request_section(request_id: str, row: pd.Series) -> dict[str, Any]:
    """The logged answer: what was scored, the score, who served it, and the model inputs."""
    return {
        "request_id": request_id,
        "logged_at": str(row["logged_at"]),
        "transaction_id": row["transaction_id"],
        "customer_id": row["customer_id"],
        "terminal_id": row["terminal_id"],
        "tx_amount": float(row["tx_amount"]),
        "score": float(row["score"]),
        "served_by": row["served_by"],
        "degraded": bool(row["degraded"]),
        "features": json.loads(row["features"]) if isinstance(row["features"], str) else None,
    }


def _model_section(version: ModelVersion, version_tags: dict[str, str]) -> dict[str, Any]:
    """The registered version that answered: family, source run, gate verdict and model card."""
    return {
        "name": MODEL_NAME,
        "version": str(version.version),
        "family": version_tags.get(tags.CANDIDATE),
        "mlflow_run": version.run_id,
        "source": version.source,
        "gate": version_tags.get(tags.GATE),
        "model_card": version_tags.get(tags.MODEL_CARD),
    }


def _training_section(parent_run: str | None, version_tags: dict[str, str]) -> dict[str, Any]:
    """How the version was trained: the parent run, the windows and the training data."""
    return {
        "mlflow_parent_run": parent_run,
        "training_window": version_tags.get(tags.TRAINING_WINDOW),
        "test_window": version_tags.get(tags.TEST_WINDOW),
        "data_fingerprint": version_tags.get(tags.DATA_FINGERPRINT),
        "training_set": version_tags.get(tags.TRAINING_SET),
    }
