"""The validation gate between landing and the lake.

Placeholder for the foundation issue: it checks the raw schema only. The data-validation
issue replaces the check with a Great Expectations checkpoint behind the same signature.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from pydantic import BaseModel

from fraudflow.ingest import StagedBatch, read_batch
from fraudflow.schema import SchemaError, normalise_transactions
from fraudflow.settings import Settings


class BatchRejected(ValueError):
    """A batch failed validation; the message names the file and each broken rule."""


class ValidationResult(BaseModel):
    validation_id: str
    success: bool
    suite: str
    failures: list[str]


def validate_batch(settings: Settings, *, staged: StagedBatch, run_id: str | None) -> ValidationResult:
    """Check the staged batch against the raw schema.

    Raises:
        BatchRejected: the batch does not fit the schema.
    """
    try:
        normalise_transactions(read_batch(Path(staged.staged_file)))
    except SchemaError as exc:
        raise BatchRejected(f"{staged.source_file} rejected: {exc}") from exc
    return ValidationResult(
        validation_id=f"schema-{uuid.uuid4().hex[:12]}", success=True, suite="raw_schema", failures=[]
    )
