"""GX Data Docs as fraudflow builds them: the site's configuration, when the index page is
rebuilt, and page views that compile their Jinja templates once per process.

GX builds a new ``SiteBuilder`` on every ``build_data_docs`` call, and each of its views a new
Jinja ``Environment``: every daily gate recompiled the same ~36 templates (0.45 s of a
0.73 s run at day 110). These views are GX's own, configured through the Data Docs site's
``view`` settings (:func:`configure_data_docs_site`), with a process-wide in-memory
bytecode cache: Jinja keys it by template name and source checksum, so an edited template
is recompiled and the pages are byte-for-byte what GX renders.
"""

from __future__ import annotations

import time
from pathlib import Path

from great_expectations.render.view import DefaultJinjaIndexPageView, DefaultJinjaPageView
from jinja2 import BytecodeCache
from jinja2.bccache import Bucket

from fraudflow.settings import Settings


class _ProcessBytecodeCache(BytecodeCache):
    def __init__(self) -> None:
        self._compiled: dict[str, bytes] = {}

    def load_bytecode(self, bucket: Bucket) -> None:
        code = self._compiled.get(bucket.key)
        if code is not None:
            bucket.bytecode_from_string(code)

    def dump_bytecode(self, bucket: Bucket) -> None:
        self._compiled[bucket.key] = bucket.bytecode_to_string()


_BYTECODE = _ProcessBytecodeCache()


class CompiledOncePageView(DefaultJinjaPageView):
    """GX's validation and suite page view, templates compiled once per process."""

    def __init__(self, custom_styles_directory=None, custom_views_directory=None) -> None:
        super().__init__(custom_styles_directory, custom_views_directory)
        self.env.bytecode_cache = _BYTECODE


class CompiledOnceIndexPageView(DefaultJinjaIndexPageView):
    """GX's index page view, templates compiled once per process."""

    def __init__(self, custom_styles_directory=None, custom_views_directory=None) -> None:
        super().__init__(custom_styles_directory, custom_views_directory)
        self.env.bytecode_cache = _BYTECODE


_VIEWS = "fraudflow.ingestion.data_docs"


def configure_data_docs_site(context, limit: int) -> None:
    """List only the newest ``limit`` validation results on the Data Docs index page, and
    render pages with views that compile GX's templates once per process.

    The index builder deserializes every result it lists: with the default (all), each
    checkpoint run re-read every stored validation, and a day took longer as history grew
    (1.3-1.8 s by day 90). Every result keeps its own page; the index links the newest.
    """
    page_view = {"module_name": _VIEWS, "class_name": "CompiledOncePageView"}
    for name, site in context.list_data_docs_sites().items():
        builder = dict(site.get("site_index_builder") or {"class_name": "DefaultSiteIndexBuilder"})
        builder |= {
            "validation_results_limit": limit,
            "view": {"module_name": _VIEWS, "class_name": "CompiledOnceIndexPageView"},
        }
        sections = dict(site.get("site_section_builders") or {})
        for section in ("validations", "expectations"):
            sections[section] = {**dict(sections.get(section) or {}), "view": page_view}
        wanted = {**site, "site_index_builder": builder, "site_section_builders": sections}
        if wanted != site:
            context.update_data_docs_site(name, wanted)


def index_marker(settings: Settings) -> Path:
    return settings.gx_dir / ".data-docs-index-built"


def index_is_due(settings: Settings, *, failed: bool) -> bool:
    """Whether this run also rebuilds the Data Docs index page (the run's own pages are
    always built). The index lists every stored result's key, ~0.6 s at day 110 and growing;
    a failed gate always rebuilds it (a person is about to look), a passing one when the last
    rebuild is older than ``data_docs_index_seconds``. Caller holds the GX lock."""
    marker = index_marker(settings)
    due = failed or not marker.exists() or time.time() - marker.stat().st_mtime >= settings.data_docs_index_seconds
    if due:
        marker.touch()
    return due
