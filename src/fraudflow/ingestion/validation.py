"""The validation gate: Great Expectations checkpoints between landing and the lake.

Suites are version-controlled JSON in ``expectations/`` (GX's own suite format); each process
loads them into a GX context whose validation results and Data Docs are files under the
fraudflow home, runs a Checkpoint per batch, builds its Data Docs pages, and turns GX's result
into a small typed verdict. Values that
change per run (the partition's date, bands around recent history) are GX suite parameters,
so the committed JSON stays the single definition of each rule.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel

from fraudflow.ingestion.gx_checkpoints import SAMPLE_ROWS, DeferredDataDocs, gx_lock, local_path, prepared_checkpoint
from fraudflow.ingestion.gx_configuration_cache import configurations_built_once
from fraudflow.ingestion.landing import StagedBatch, read_batch, safe_run_id
from fraudflow.ingestion.quarantine import quarantine_landing_file
from fraudflow.lake import recent_partitions
from fraudflow.settings import Settings

log = logging.getLogger(__name__)

LANDING_CHECKPOINT = "landing_gate"
LANDING_SUITES = ("landing_transactions",)


class BatchRejected(ValueError):
    """A batch failed validation; the message names the file, each broken rule and the report."""


class ExpectationFailure(BaseModel):
    suite: str
    expectation: str
    column: str | None = None
    kwargs: dict[str, Any] = {}
    observed_value: Any = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    sample_values: list[Any] = []
    sample_rows: list[dict[str, Any]] = []
    error: str | None = None
    notes: str | None = None

    def describe(self) -> str:
        where = f"({self.column})" if self.column else ""
        if self.error:
            return f"{self.expectation}{where}: error {self.error}"
        if self.unexpected_count is not None:
            return f"{self.expectation}{where}: {self.unexpected_count} unexpected, e.g. {self.sample_values[:3]}"
        return f"{self.expectation}{where}: observed {self.observed_value}"


class ValidationResult(BaseModel):
    validation_id: str
    success: bool
    checkpoint: str
    suites: list[str]
    evaluated: int
    failures: list[ExpectationFailure]
    data_docs: list[str]
    parameters: dict[str, Any]
    seconds: float


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def run_checkpoint(
    settings: Settings,
    frame: pd.DataFrame,
    *,
    checkpoint: str,
    suites: list[str] | tuple[str, ...],
    parameters: dict[str, Any],
    run_name: str,
    defer_docs: DeferredDataDocs | None = None,
) -> ValidationResult:
    """Validate ``frame`` against ``suites`` with the ``verdict`` checkpoint; if it fails, run
    the ``details`` one (same rules, same run id, the failing rows' indexes too), whose stored
    result replaces the verdict's, so a rejected batch has one result and one page. Then build
    its Data Docs pages (a passing run's go to ``defer_docs`` instead, when given, and
    ``data_docs`` is empty). See :class:`~fraudflow.ingestion.gx_checkpoints.PreparedCheckpoints`."""
    from great_expectations.core.run_identifier import RunIdentifier

    from fraudflow.ingestion.data_docs import index_is_due

    started = time.perf_counter()
    with gx_lock(settings):
        gate = prepared_checkpoint(settings, checkpoint, list(suites))
        context = gate.context
        run_id = RunIdentifier(run_name=run_name)
        with configurations_built_once(settings.gx_configuration_cache):
            result = gate.verdict.run(
                batch_parameters={"dataframe": frame}, expectation_parameters=parameters, run_id=run_id
            )
            if not result.success:  # the same rules and run id: its stored result replaces the verdict's
                result = gate.details.run(
                    batch_parameters={"dataframe": frame}, expectation_parameters=parameters, run_id=run_id
                )
        deferred = defer_docs is not None and result.success
        if deferred:
            defer_docs.add(context, list(result.run_results))
        else:
            context.build_data_docs(
                resource_identifiers=list(result.run_results),
                build_index=index_is_due(settings, failed=not result.success),
            )
        failures, docs, evaluated = [], [], 0
        for identifier, suite_result in result.run_results.items():
            suite_name = suite_result.suite_name
            for res in suite_result.results:
                evaluated += 1
                if not res.success:
                    failures.append(_failure(suite_name, res, frame))
            if not deferred:
                docs += [local_path(s["site_url"]) for s in context.get_docs_sites_urls(resource_identifier=identifier)]
    run_time = result.run_id.run_time.strftime("%Y%m%dT%H%M%S.%fZ")
    return ValidationResult(
        validation_id=f"gx:{checkpoint}/{run_name}/{run_time}",
        success=bool(result.success),
        checkpoint=checkpoint,
        suites=list(suites),
        evaluated=evaluated,
        failures=failures,
        data_docs=docs,
        parameters=_jsonable(parameters),
        seconds=round(time.perf_counter() - started, 3),
    )


def _failure(suite: str, res, frame: pd.DataFrame) -> ExpectationFailure:
    config = res.expectation_config
    details = res.result or {}
    rows: list[dict[str, Any]] = []
    index = details.get("partial_unexpected_index_list") or []
    if index and all(isinstance(i, int) and 0 <= i < len(frame) for i in index):
        rows = _jsonable(frame.iloc[index[:SAMPLE_ROWS]].to_dict(orient="records"))
    error = None
    info = res.exception_info or {}
    if info.get("raised_exception"):
        error = (info.get("exception_message") or "").splitlines()[0][:300]
    return ExpectationFailure(
        suite=suite,
        expectation=config.type,
        column=config.kwargs.get("column"),
        kwargs=_jsonable({k: v for k, v in config.kwargs.items() if k not in ("batch_id",)}),
        observed_value=_jsonable(details.get("observed_value")),
        unexpected_count=details.get("unexpected_count"),
        unexpected_percent=details.get("unexpected_percent"),
        sample_values=_jsonable(details.get("partial_unexpected_list") or [])[:SAMPLE_ROWS],
        sample_rows=rows,
        error=error,
        notes=(config.meta or {}).get("notes"),
    )


def landing_parameters(settings: Settings, day: dt.date) -> dict[str, Any]:
    """Suite parameters for one day: its time bounds, and bands around recent history.

    The bands come from the manifests of up to ``history_partitions`` published days before
    ``day``; with fewer than ``history_min_partitions`` the absolute bounds apply.
    """
    start = dt.datetime.combine(day, dt.time())
    day_index = (day - settings.time_origin).days
    params: dict[str, Any] = {
        "day_start": start.isoformat(),
        "day_end": (start + dt.timedelta(days=1) - dt.timedelta(microseconds=1)).isoformat(),
        "day_index": day_index,
        "day_seconds_min": day_index * 86_400,
        "day_seconds_max": day_index * 86_400 + 86_399,
        "amount_ceiling": settings.amount_ceiling,
    }
    history = recent_partitions(settings, day, settings.history_partitions)
    if len(history) >= settings.history_min_partitions:
        rows = sum(h.rows for h in history) / len(history)
        fraud = sum(h.fraud_rate for h in history) / len(history)
        amount = sum(h.amount_mean for h in history) / len(history)
        params |= {
            "rows_min": int(rows * settings.rows_band[0]),
            "rows_max": int(rows * settings.rows_band[1]) + 1,
            "fraud_rate_max": max(fraud * settings.fraud_rate_band, fraud + settings.fraud_rate_margin),
            "amount_mean_min": amount * settings.amount_mean_band[0],
            "amount_mean_max": amount * settings.amount_mean_band[1],
            "history": [h.partition_id for h in history],
        }
    else:
        params |= {
            "rows_min": settings.absolute_rows[0],
            "rows_max": settings.absolute_rows[1],
            "fraud_rate_max": settings.absolute_fraud_rate_max,
            "amount_mean_min": settings.absolute_amount_mean[0],
            "amount_mean_max": settings.absolute_amount_mean[1],
            "history": [],
        }
    return params


def validate_batch(
    settings: Settings, *, staged: StagedBatch, run_id: str | None, defer_docs: DeferredDataDocs | None = None
) -> ValidationResult:
    """Run the landing checkpoint on a staged batch; quarantine it if any expectation fails.
    ``defer_docs``: a passing batch's Data Docs pages are built later (see ``DeferredDataDocs``).

    Raises:
        BatchRejected: the batch failed; it is already quarantined with ``reason.json``.
    """
    frame = read_batch(Path(staged.staged_file))
    parameters = landing_parameters(settings, staged.day)
    gx_params = {k: v for k, v in parameters.items() if k != "history"}
    run_name = f"{staged.day.isoformat()}__{safe_run_id(run_id)}"
    result = run_checkpoint(
        settings,
        frame,
        checkpoint=LANDING_CHECKPOINT,
        suites=LANDING_SUITES,
        parameters=gx_params,
        run_name=run_name,
        defer_docs=defer_docs,
    )
    result.parameters = _jsonable(parameters)
    for url in result.data_docs:
        log.info("Data Docs for %s: %s", staged.day, url)
    if result.success:
        return result
    summary = "; ".join(f.describe() for f in result.failures)
    record = quarantine_landing_file(
        settings,
        staged=staged,
        stage="validation",
        summary=summary,
        failures=[f.model_dump(mode="json") for f in result.failures],
        data_docs=result.data_docs,
        validation_id=result.validation_id,
        run_id=run_id,
    )
    # Where the file went comes first: an alert's summary is cut at 2,000 characters.
    raise BatchRejected(
        f"{staged.source_file} rejected by {len(result.failures)} expectation(s), quarantined to "
        f"{record.folder} (reason.json): {summary}. Data Docs: {', '.join(result.data_docs) or 'n/a'}"
    )
