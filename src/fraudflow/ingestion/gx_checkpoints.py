"""The GX context and checkpoints fraudflow validates with, built once per process.

Suites are the committed ``expectations/<name>.json`` (GX's own format). They, their validation
definitions and the checkpoints live in memory; validation results and Data Docs are files under
``<home>/gx``. Parallel tasks share those files, so a run holds :func:`gx_lock`.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import unquote, urlparse

from fraudflow.settings import Settings, repo_root

DATASOURCE = "fraudflow"
SAMPLE_ROWS = 5  # failing rows and values kept per broken expectation
DETAILS_SUFFIX = "_details"  # the checkpoint that re-runs a failed batch with row-level results


def local_path(url: str) -> str:
    """GX returns percent-encoded file:// URLs; people and tests want the path."""
    return unquote(urlparse(url).path) if url.startswith("file://") else url


class SuiteDefinitionError(RuntimeError):
    """A committed suite does not load whole (GX would silently drop the broken expectation)."""


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
def gx_lock(settings: Settings) -> Iterator[None]:
    """Validation results and the Data Docs site are shared files; parallel tasks take turns."""
    settings.gx_dir.mkdir(parents=True, exist_ok=True)
    with (settings.gx_dir / ".lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _context(settings: Settings):
    """A GX context whose suites, validation definitions and checkpoints live in memory, built
    from the committed ``expectations/`` JSON once per process, and whose validation results and
    Data Docs are files under ``<home>/gx`` (where a file context keeps them).

    Why not a file context: ``Checkpoint.run`` checks that the checkpoint, its validation
    definitions and suites are "fresh" by reading each back from its store and comparing; on
    files that re-read JSON and re-substituted ``config_variables.yml`` ~60 times per run,
    ~0.1 s of a day's ~0.4 s gate. The repository is the definition of the rules anyway; the
    home's copies only had to be kept in step with it.
    """
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        FilesystemStoreBackendDefaults,
        ProgressBarsConfig,
    )

    from fraudflow.ingestion.data_docs import configure_data_docs_site

    stores = FilesystemStoreBackendDefaults(root_directory=str(settings.gx_dir))
    for name in (stores.expectations_store_name, stores.checkpoint_store_name, stores.validation_definition_store_name):
        stores.stores[name]["store_backend"] = {"class_name": "InMemoryStoreBackend"}
    config = DataContextConfig(
        store_backend_defaults=stores,
        progress_bars=ProgressBarsConfig(globally=False),  # GX draws tqdm bars into the task log otherwise
        analytics_enabled=False,
    )
    context = gx.get_context(mode="ephemeral", project_config=config)
    configure_data_docs_site(context, settings.data_docs_index_results)
    return context


class PreparedCheckpoints(NamedTuple):
    """One gate as two GX checkpoints over the same validation definitions: ``verdict``
    (``BASIC`` results: observed values and unexpected counts, no row indexes) judges every
    batch; ``details`` (``SUMMARY``: also the failing rows' indexes and value counts) re-runs
    only a batch that failed, for its quarantine report and Data Docs page. A passing day's
    ``SUMMARY`` extras are empty lists, so it skips computing them: ~23% of the gate."""

    context: Any
    verdict: Any
    details: Any


_PREPARED: dict[tuple, PreparedCheckpoints] = {}


def prepared_checkpoint(settings: Settings, name: str, suites: list[str]) -> PreparedCheckpoints:
    """The GX context and checkpoints, built once per process and home (and again when a
    committed suite file changes): building them costs ~1 s that the rows do not need."""
    stamps = tuple((s, _suite_path(s).stat().st_mtime_ns) for s in suites)
    key = (str(settings.root), settings.data_docs_index_results, name, stamps)
    if key not in _PREPARED:
        context = _context(settings)
        definitions = _validation_definitions(context, name, suites)
        sample = {"partial_unexpected_count": SAMPLE_ROWS}
        _PREPARED[key] = PreparedCheckpoints(
            context,
            _checkpoint(context, name, definitions, {"result_format": "BASIC", **sample}),
            _checkpoint(context, f"{name}{DETAILS_SUFFIX}", definitions, {"result_format": "SUMMARY", **sample}),
        )
    return _PREPARED[key]


def _validation_definitions(context, name: str, suites: list[str]) -> list[Any]:
    """One validation definition per suite over one dataframe asset per checkpoint."""
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
    return definitions


def _checkpoint(context, name: str, definitions: list[Any], result_format: dict[str, Any]):
    """Create or refresh the named checkpoint. It has no actions: Data Docs are built after the
    run, for all its results at once (:func:`run_checkpoint`): GX's ``UpdateDataDocsAction``
    builds the site once per validation result, each time with a fresh Jinja environment that
    recompiles ~100 templates, which was half of a day's gate time."""
    import great_expectations as gx

    return context.checkpoints.add_or_update(
        gx.Checkpoint(name=name, validation_definitions=definitions, actions=[], result_format=result_format)
    )


class DeferredDataDocs:
    """Validation results whose Data Docs pages are built later, several per build (a
    backfill's passing days). GX's section builder lists and date-parses every stored result on
    each build, so a build per day re-reads the whole history each day. GX also builds pages
    only for the newest ``validation_results_limit`` results (``FRAUDFLOW_DATA_DOCS_INDEX_RESULTS``),
    so the pending ones are built whenever they reach half of it, while they are still the
    newest. A failing day is never deferred: its quarantine report links its page."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._context: Any = None
        self._batch = max(1, settings.data_docs_index_results // 2)
        self.identifiers: list[Any] = []
        self._built: list[Any] = []  # the last page built, for an index-only build

    def add(self, context: Any, identifiers: list[Any]) -> None:
        """Called under :func:`gx_lock` (by ``run_checkpoint``)."""
        self._context = context
        self.identifiers += identifiers
        if len(self.identifiers) >= self._batch:
            self._context.build_data_docs(resource_identifiers=self.identifiers, build_index=False)
            self.identifiers, self._built = [], self.identifiers[-1:]

    def build(self) -> list[str]:
        """Build what is pending and the index; the index URLs (none if nothing was deferred)."""
        from fraudflow.ingestion.data_docs import index_marker

        if self._context is None:
            return []
        with gx_lock(self._settings):
            # GX builds every page for an empty list: with nothing pending, rebuild the last one.
            pages = self.identifiers or self._built
            urls = self._context.build_data_docs(resource_identifiers=pages, build_index=True)
            index_marker(self._settings).touch()
        self.identifiers = []
        return [local_path(u) for u in urls.values()]


def refresh_data_docs_index(settings: Settings) -> list[str]:
    """Rebuild the Data Docs index now (``fraudflow data-docs``); returns the index URLs."""
    from fraudflow.ingestion.data_docs import index_marker

    with gx_lock(settings):
        context = _context(settings)
        urls = context.build_data_docs()
        index_marker(settings).touch()
    return [local_path(u) for u in urls.values()]
