"""Lineage of one prediction: request -> model version -> MLflow runs -> training windows ->
lake partitions -> the GX validations that admitted them -> the feature service."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fraudflow.prediction_log import read_predictions
from fraudflow.registry import MODEL_NAME
from fraudflow.settings import Settings


def explain_request(settings: Settings, request_id: str) -> dict[str, Any]:
    """Everything recorded about how ``request_id`` was answered.

    Raises:
        LookupError: the request is not in the prediction log (flushed requests only).
    """
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep --json output clean
    from mlflow import MlflowClient

    from fraudflow.tracking import configure_mlflow

    predictions = read_predictions(settings.predictions_dir)
    match = predictions[predictions["request_id"] == request_id]
    if match.empty:
        raise LookupError(f"request {request_id} is not in the prediction log ({settings.predictions_dir})")
    row = match.iloc[0]
    configure_mlflow(settings)
    client = MlflowClient(settings.mlflow_tracking_uri)
    version = client.get_model_version(MODEL_NAME, str(row["model_version"]))
    tags = dict(version.tags)
    parent_run = tags.get("fraudflow.training_parent_run")
    if not parent_run and version.run_id:  # versions registered outside train_model
        parent_run = client.get_run(version.run_id).data.tags.get("mlflow.parentRunId")
    lineage: dict[str, Any] = {}
    if parent_run:
        lineage = json.loads(Path(client.download_artifacts(parent_run, "lineage.json")).read_text())
    return {
        "request": {
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
        },
        "model": {
            "name": MODEL_NAME,
            "version": str(version.version),
            "family": tags.get("fraudflow.candidate"),
            "mlflow_run": version.run_id,
            "source": version.source,
            "gate": tags.get("fraudflow.gate"),
            "model_card": tags.get("fraudflow.model_card"),
        },
        "training": {
            "mlflow_parent_run": parent_run,
            "training_window": tags.get("fraudflow.training_window"),
            "test_window": tags.get("fraudflow.test_window"),
            "data_fingerprint": tags.get("fraudflow.data_fingerprint"),
            "training_set": tags.get("fraudflow.training_set"),
        },
        "data": {
            "lake_partitions": lineage.get("partitions", []),
            "gx_validation_ids": lineage.get("validation_ids", []),
        },
        "features": {"feature_service": lineage.get("feature_service", tags.get("fraudflow.feature_service"))},
    }
