"""The validation gate: Great Expectations checkpoints between landing and the lake.

Suites are version-controlled JSON in ``expectations/`` (GX's own suite format); each run
loads them into a file-backed GX context under the fraudflow home, runs a Checkpoint whose
actions build Data Docs there, and turns GX's result into a small typed verdict. Values that
change per run (the partition's date, bands around recent history) are GX suite parameters,
so the committed JSON stays the single definition of each rule.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pandas as pd
from pydantic import BaseModel

from fraudflow.ingestion.landing import StagedBatch, read_batch, safe_run_id
from fraudflow.ingestion.quarantine import quarantine_landing_file
from fraudflow.lake import recent_partitions
from fraudflow.settings import Settings, repo_root

log = logging.getLogger(__name__)

DATASOURCE = "fraudflow"
LANDING_CHECKPOINT = "landing_gate"
LANDING_SUITES = ("raw_transactions", "batch_statistics")
SAMPLE_ROWS = 5


class BatchRejected(ValueError):
    """A batch failed validation; the message names the file, each broken rule and the report."""


class SuiteDefinitionError(RuntimeError):
    """A committed suite does not load whole (GX would silently drop the broken expectation)."""


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


def _local_path(url: str) -> str:
    """GX returns percent-encoded file:// URLs; people and tests want the path."""
    return unquote(urlparse(url).path) if url.startswith("file://") else url


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _suite_path(name: str) -> Path:
    return repo_root() / "expectations" / f"{name}.json"


def load_suite(name: str, suites_dir: Path | None = None):
    """The committed suite ``expectations/<name>.json`` as a GX ExpectationSuite.

    Raises:
        SuiteDefinitionError: an expectation in the file is invalid (GX logs and drops those).
    """
    import great_expectations as gx

    data = json.loads((_suite_path(name) if suites_dir is None else suites_dir / f"{name}.json").read_text())
    suite = gx.ExpectationSuite(name=data["name"], expectations=data["expectations"], meta=data.get("meta"))
    if len(suite.expectations) != len(data["expectations"]):
        raise SuiteDefinitionError(
            f"suite {name}: {len(data['expectations']) - len(suite.expectations)} expectation(s) did not load"
        )
    return suite


@contextmanager
def _gx_lock(settings: Settings) -> Iterator[None]:
    """The file context rewrites its YAML/JSON stores; parallel tasks must take turns."""
    settings.gx_dir.mkdir(parents=True, exist_ok=True)
    with (settings.gx_dir / ".lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _context(settings: Settings):
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", project_root_dir=str(settings.root))  # -> <home>/gx
    bars = context.variables.progress_bars  # None, a ProgressBarsConfig, or (once saved) a dict
    enabled = bars is None or (bars.get("globally", True) if isinstance(bars, dict) else bars.globally)
    if enabled:  # GX draws tqdm bars into the task log for every metric batch
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        context.variables.save()
    from fraudflow.ingestion.data_docs import configure_data_docs_site

    configure_data_docs_site(context, settings.data_docs_index_results)
    return context


_PREPARED: dict[tuple, tuple[Any, Any]] = {}


def _prepared_checkpoint(settings: Settings, name: str, suites: list[str]) -> tuple[Any, Any]:
    """The GX context and checkpoint, built once per process and home (and again when a
    committed suite file changes): building them re-reads and rewrites the context's stores,
    ~1 s per run that the rows themselves do not need."""
    stamps = tuple((s, _suite_path(s).stat().st_mtime_ns) for s in suites)
    key = (str(settings.root), settings.data_docs_index_results, name, stamps)
    if key not in _PREPARED:
        context = _context(settings)
        _PREPARED[key] = (context, _checkpoint(context, name, suites))
    return _PREPARED[key]


def _checkpoint(context, name: str, suites: list[str]):
    """Create or refresh the named checkpoint: one validation definition per suite, one
    dataframe asset per checkpoint. Data Docs are built after the run, for all its results at
    once (:func:`run_checkpoint`): GX's ``UpdateDataDocsAction`` builds the site once per
    validation result, each time with a fresh Jinja environment that recompiles ~100
    templates, which was half of a day's gate time."""
    import great_expectations as gx

    source = context.data_sources.add_or_update_pandas(DATASOURCE)
    try:
        asset = source.get_asset(name)
    except LookupError:
        asset = source.add_dataframe_asset(name)
    try:
        batch = asset.get_batch_definition("whole_batch")
    except KeyError:
        batch = asset.add_batch_definition_whole_dataframe("whole_batch")
    definitions = []
    for suite_name in suites:
        suite = context.suites.add_or_update(load_suite(suite_name))
        definitions.append(
            context.validation_definitions.add_or_update(
                gx.ValidationDefinition(name=f"{name}.{suite_name}", data=batch, suite=suite)
            )
        )
    return context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=name,
            validation_definitions=definitions,
            actions=[],
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": SAMPLE_ROWS},
        )
    )


def run_checkpoint(
    settings: Settings,
    frame: pd.DataFrame,
    *,
    checkpoint: str,
    suites: list[str] | tuple[str, ...],
    parameters: dict[str, Any],
    run_name: str,
) -> ValidationResult:
    """Validate ``frame`` against ``suites`` in one GX Checkpoint run; build Data Docs."""
    from great_expectations.core.run_identifier import RunIdentifier

    from fraudflow.ingestion.data_docs import index_is_due

    started = time.perf_counter()
    with _gx_lock(settings):
        context, prepared = _prepared_checkpoint(settings, checkpoint, list(suites))
        result = prepared.run(
            batch_parameters={"dataframe": frame},
            expectation_parameters=parameters,
            run_id=RunIdentifier(run_name=run_name),
        )
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
            docs += [_local_path(s["site_url"]) for s in context.get_docs_sites_urls(resource_identifier=identifier)]
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


def refresh_data_docs_index(settings: Settings) -> list[str]:
    """Rebuild the Data Docs index now (``fraudflow data-docs``); returns the index URLs."""
    from fraudflow.ingestion.data_docs import index_marker

    with _gx_lock(settings):
        context = _context(settings)
        urls = context.build_data_docs()
        index_marker(settings).touch()
    return [_local_path(u) for u in urls.values()]


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


def validate_batch(settings: Settings, *, staged: StagedBatch, run_id: str | None) -> ValidationResult:
    """Run the landing checkpoint on a staged batch; quarantine it if any expectation fails.

    Raises:
        BatchRejected: the batch failed; it is already quarantined with ``reason.json``.
    """
    frame = read_batch(Path(staged.staged_file))
    parameters = landing_parameters(settings, staged.day)
    gx_params = {k: v for k, v in parameters.items() if k != "history"}
    run_name = f"{staged.day.isoformat()}__{safe_run_id(run_id)}"
    result = run_checkpoint(
        settings, frame, checkpoint=LANDING_CHECKPOINT, suites=LANDING_SUITES, parameters=gx_params, run_name=run_name
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
